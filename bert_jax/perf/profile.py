"""Where a CPU step's time goes: `python -m bert_jax.perf.bench ... --profile`.

The step runs a few more times under `jax.profiler` with XLA:CPU's per-kernel
trace events on (`--xla_cpu_enable_xprof_traceme`, set by the benchmark
before the backend starts). Every kernel event is named after its HLO
instruction; the compiled module says what each one computes, and the time
is summed into four kinds:

* matmul: the instruction is a dot, or a fusion whose body holds one
  (XLA:CPU hands dots to YNNPACK/XNNPACK as `ynn_fusion`/`xnn_fusion`);
* dropout RNG: its op_name comes from the masks' random bits (`jax.random`'s
  threefry, uniform and Bernoulli draw behind flax's `nn.Dropout`);
* layout copies: copy and transpose kernels (XLA's layout assignment adds
  them around dots, e.g. activations transposed for a weight gradient; XLA
  may fuse an elementwise op into one, such as dropout's scaling);
* other: the rest (bias, GELU, softmax, LayerNorm, the loss, AdamW).

Kernels can overlap (XLA:CPU runs independent thunks at once), so the kinds
may add up to more than the step's wall time; shares are of their sum.
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import tempfile
from pathlib import Path

import jax

TRACE_FLAG = "--xla_cpu_enable_xprof_traceme=true"
KINDS = ("matmul", "dropout RNG", "layout copies", "other")
# Trace events that are not kernels: the executor, thread pools, Python frames,
# and control flow (a while loop's kernels have events of their own).
_NOT_KERNELS = (
    "ThunkExecutor", "$", "SlinkyThreadPool", "PjitFunction", "CommonPjRt", "ParseArguments",
    "end:", "while", "conditional", "call",
)  # fmt: skip
_RNG_OPS = ("_bernoulli", "_uniform", "random_bits", "threefry")


def _instructions(hlo_text: str) -> dict[str, tuple[str, str]]:
    """instruction name -> (the line defining it, the body of the computation it calls)."""
    bodies: dict[str, str] = {}
    for m in re.finditer(r"^(?:ENTRY )?%?([\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo_text, re.M | re.S):
        bodies[m.group(1)] = m.group(2)
    out = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = ", line)
        if m:
            called = re.search(r"calls=%?([\w.\-]+)", line)
            out[m.group(1)] = (line, bodies.get(called.group(1), "") if called else "")
    return out


def kind_of(name: str, instructions: dict[str, tuple[str, str]]) -> str:
    line, body = instructions.get(name, ("", ""))
    op_name = re.search(r'op_name="([^"]*)"', line)
    op_name = op_name.group(1) if op_name else ""
    # A YNNPACK fusion can also be a plain reduction: only a body with a dot counts.
    if name.startswith("dot") or re.search(r"\bdot\(", line + body):
        return "matmul"
    if any(r in op_name for r in _RNG_OPS):
        return "dropout RNG"
    if name.startswith(("copy", "transpose")):
        return "layout copies"
    return "other"


def profile(step, hlo_text: str, steps: int = 2, top: int = 8) -> dict:
    """Run `step` `steps` times under the profiler; ms per step by kind and the top kernels."""
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d, create_perfetto_trace=True)
        wall = sum(step() for _ in range(steps))
        jax.profiler.stop_trace()
        (trace,) = Path(d).rglob("*.trace.json.gz")
        events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
    per_kernel: collections.Counter = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith(_NOT_KERNELS):
            per_kernel[e["name"]] += e["dur"] / 1e3 / steps  # us -> ms per step
    if not per_kernel:
        raise RuntimeError(
            "the trace holds no kernel events: --profile needs XLA:CPU with "
            f"{TRACE_FLAG} in XLA_FLAGS before jax starts"
        )
    instructions = _instructions(hlo_text)
    by_kind = dict.fromkeys(KINDS, 0.0)
    for name, ms in per_kernel.items():
        by_kind[kind_of(name, instructions)] += ms
    total = sum(by_kind.values())
    kernels = []
    for name, ms in per_kernel.most_common(top):
        line = instructions.get(name, ("", ""))[0]
        op = re.search(r'op_name="([^"]*)"', line)
        kernels.append(
            {
                "kernel": name,
                "kind": kind_of(name, instructions),
                "ms": ms,
                "op_name": op.group(1) if op else "",
            }
        )
    return {
        "profiled_step_s": wall / steps,
        "kernel_ms": total,
        "ms_by_kind": by_kind,
        "share_by_kind": {k: v / total for k, v in by_kind.items()},
        "top_kernels": kernels,
    }
