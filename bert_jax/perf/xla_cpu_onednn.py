"""XLA:CPU's matrix multiplies in oneDNN, set before a CLI process starts its backend.

By default (jax 0.10) XLA:CPU hands each dot to YNNPACK as a `__ynn_fusion`,
except dots whose operands it lays out transposed, such as the weight
gradients (dW = x^T dy), which run as plain dot thunks after a transpose.
With `--xla_cpu_use_onednn=true
--xla_cpu_experimental_onednn_fusion_type=individual_dot` XLA's library
rewriter puts every dot, the weight gradients included, alone into a oneDNN
matmul (`__onednn_fusion`). On the first 2-core AMD EPYC machine the small
pretraining step (32 x 128, fp32) took 2.62 s instead of 2.85 s in
alternating rounds in one process (docs/performance.md, `opt/cpu-onednn`);
on an AMD EPYC family 26 (Zen 5), 1.19 s instead of 1.27 s (not recorded),
with the same loss and gradients to fp32 rounding (tests/test_xla_cpu_onednn.py).
The fusion type `dot` (dots with elementwise neighbours fused in) was as fast
on the BERT step but crashed the process (SIGILL after oneDNN's "partition
compile failed") on a two-layer tanh network's gradient, so it is not used.

XLA reads XLA_FLAGS when its first backend starts, so `apply()` appends the
flags to the environment before that. It does nothing on machines other than
x86-64 (XLA's oneDNN path is built for them), when XLA_FLAGS already names
either flag (the user's value is kept), when BERT_JAX_XLA_CPU_ONEDNN=0, or
when JAX_COMPILATION_CACHE_DIR is set: XLA:CPU cannot serialise a program
with oneDNN fusions ("ToProto is not implemented for thunk kind:
onednn-fusion"), so JAX's persistent cache would warn and store nothing, and
a process that asked for the cache keeps it (the test suite does).
The flags only concern the CPU backend: on TPU or GPU they change nothing.
A compile can also override them (`compile(compiler_options=...)`: the
benchmark's `xla.` variants use COMPILER_OPTIONS and XLA_DEFAULT).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, MutableMapping

FLAGS = (
    "--xla_cpu_use_onednn=true",
    "--xla_cpu_experimental_onednn_fusion_type=individual_dot",
)
# The same settings as per-compile options, and XLA's own defaults for them.
COMPILER_OPTIONS = {
    "xla_cpu_use_onednn": True,
    "xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
}
XLA_DEFAULT = {"xla_cpu_use_onednn": False, "xla_cpu_experimental_onednn_fusion_type": ""}
OPT_OUT = "BERT_JAX_XLA_CPU_ONEDNN"  # "0": XLA's default dot libraries
_X86 = ("x86_64", "amd64")


def _names(flags: tuple[str, ...]) -> list[str]:
    return [f.split("=")[0] for f in flags]


def wanted(environ: Mapping[str, str], machine: str | None = None) -> bool:
    """Whether a process with `environ` on `machine` should get the flags."""
    if environ.get(OPT_OUT, "1") == "0":
        return False
    xla_flags = environ.get("XLA_FLAGS", "")
    if any(name in xla_flags for name in _names(FLAGS)):
        return False  # the user chose; keep it
    if environ.get("JAX_COMPILATION_CACHE_DIR"):
        return False  # oneDNN programs cannot be cached; the cache was asked for
    return (machine or platform.machine()).lower() in _X86


def with_flags(xla_flags: str) -> str:
    return " ".join([xla_flags.strip(), *FLAGS]).strip()


def enabled(environ: Mapping[str, str]) -> bool:
    """Whether XLA_FLAGS routes this process's CPU dots to oneDNN (as `apply` sets them)."""
    return all(f in environ.get("XLA_FLAGS", "").split() for f in FLAGS)


def apply(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Append the flags to XLA_FLAGS when wanted; True when they are set now.

    Call before anything starts a JAX backend (XLA reads XLA_FLAGS once).
    """
    import jax._src.xla_bridge as xb  # no public "backends started?" query

    if wanted(environ):
        if xb.backends_are_initialized():
            raise RuntimeError(
                "bert_jax.perf.xla_cpu_onednn.apply() runs before JAX starts a backend; "
                "one is already running, so XLA_FLAGS would be ignored"
            )
        environ["XLA_FLAGS"] = with_flags(environ.get("XLA_FLAGS", ""))
    return enabled(environ)
