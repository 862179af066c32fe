"""Compile a config's sharded train step for a TPU slice, on a machine without TPUs.

    python -m bert_jax.perf.aot --config=configs/pretrain.py:model=base --topology=v5p-8 \\
        [--config.key=value ...]

Ahead-of-time compilation (`jax.experimental.topologies.get_topology_desc`,
with libtpu from `pip install "jax[tpu]==<jax version>"`, part of the `dev`
extra) builds the real step (`train.jit_train_step`: the trainer's model,
loss, optimizer, logical-axis shardings over the config's mesh) for the
slice's chips and reports, per chip:

* memory: arguments (parameters, optimizer state, the batch), outputs,
  temporaries, and the total against the chip's HBM;
* FLOPs: the compiler's count (counted before optimisation and wrong with
  remat under scan, jax#18672; REFERENCES.md) next to the analytical count
  of `bert_jax.flops` (the trainer's perf/mfu formula, full rows);
* the compiler's time estimate for the step (`optimal_seconds`, a
  roofline-style lower bound where libtpu reports one), and the MFU it
  implies: analytical FLOPs / (estimate x the chip's bf16 peak).

Progress goes to stderr (the slice, then the time to lower and to compile:
a large model takes minutes). An unknown slice or a config the slice's mesh
cannot shard is one line, `bert_jax.perf.aot: error: ...`, exit status 1.
It exits 1 with a message when the step does not fit: the total above the
chip's HBM, or the compiler's resource-exhausted error. The last stdout line
is one JSON object (`fits`, `memory_total_bytes`, `hbm_bytes`,
`predicted_mfu`, ...). Slice names are the ones TPU users write (v4-8,
v5e-16, v5p-8, v6e-8, ...): `SLICES`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import NamedTuple

from absl import app, flags
from ml_collections import config_flags

from bert_jax import cli
from bert_jax.data import bad_input
from bert_jax.perf import records


class Slice(NamedTuple):
    topology: str  # libtpu's topology string
    hbm_gib: float  # HBM per chip
    chips_per_host: tuple[int, int, int] = (2, 2, 1)  # a TPU VM's chips (one for 1-chip slices)


def _slices() -> dict[str, Slice]:
    """User-facing slice name -> topology. v4 and v5p names count TensorCores (two per
    chip, megacore); v5e and v6e names count chips (one core each). HBM per chip:
    v4 32 GiB, v5p 95 GiB, v5e 16 GiB, v6e 32 GiB (Cloud TPU documentation)."""
    out = {}
    cube = ("2x2x1", "2x2x2", "2x2x4", "2x4x4", "4x4x4", "4x4x8", "4x8x8", "8x8x8")
    for gen, prefix, hbm in (("v4", "v4", 32), ("v5p", "v5", 95)):
        for shape in cube:
            chips = _chips(shape)
            out[f"{gen}-{2 * chips}"] = Slice(f"{prefix}:{shape}", hbm)
    square = ("1x1", "2x2", "2x4", "4x4", "4x8", "8x8", "8x16", "16x16")
    for gen, hbm in (("v5e", 16), ("v6e", 32)):
        for shape in square:
            host = (1, 1, 1) if shape == "1x1" else (2, 2, 1)
            out[f"{gen}-{_chips(shape)}"] = Slice(f"{gen}:{shape}", hbm, host)
    return out


def _chips(shape: str) -> int:
    n = 1
    for d in shape.split("x"):
        n *= int(d)
    return n


SLICES = _slices()

FLAGS = flags.FLAGS
PROG = "bert_jax.perf.aot"


def _define_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
    flags.DEFINE_string("topology", None, f"A TPU slice: {', '.join(SLICES)}.")
    flags.DEFINE_string("record", "", "Append the report to this JSON-lines file.")
    flags.DEFINE_string("label", "", "What this run measures (for --record).")
    flags.mark_flags_as_required(["config", "topology"])


def _offline_libtpu(slice_name: str) -> None:
    """libtpu looks for a TPU VM's metadata when it starts; here there is none.

    Without TPU_ACCELERATOR_TYPE libtpu warns that it "could not determine TPU
    accelerator type" (it is not on a TPU VM, which is the point here); the
    target slice's type, as gcloud names it (v5e is v5litepod), is what it
    would read there, and the compiled step is the same with or without it.
    """
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_WORKER_ID", "0")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", slice_name.replace("v5e-", "v5litepod-"))


def _progress(message: str) -> None:
    """A progress line on stderr (stdout holds the report, its last line the JSON)."""
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _is_out_of_memory(error: Exception) -> bool:
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "Ran out of memory" in text or "exceeds" in text


def compile_for_slice(config, slice_name: str) -> dict:
    """Compile `config`'s train step for a TPU slice; the report as a dict.

    Raises:
      ValueError: an unknown slice name (the message lists the known ones) or
        a config the mesh cannot shard (`config_checks.check_fits`).
    """
    if slice_name not in SLICES:
        raise ValueError(f"unknown TPU slice {slice_name!r}; known: {', '.join(SLICES)}")
    spec = SLICES[slice_name]
    _progress(
        f"compiling the train step for {slice_name} ({_chips(spec.topology.split(':')[1])} "
        f"chips, topology {spec.topology}) with libtpu on this machine: no TPU is used"
    )
    started = time.perf_counter()
    _offline_libtpu(slice_name)
    import jax
    from jax.experimental import topologies

    from bert_jax import config_checks, flops, optim, sharding, tasks, train
    from bert_jax.tasks import model_setup

    devices = topologies.get_topology_desc(
        topology_name=spec.topology, platform="tpu", chips_per_host_bounds=spec.chips_per_host
    ).devices
    config_checks.check(config)
    task = tasks.get(config)
    # attention_impl "" (auto) resolved as the trainer would on the slice, not on this host.
    model = task.model()
    model = model.clone(config=model_setup.with_attention_impl(model.config, config, "tpu"))
    mesh = sharding.make_mesh(config.mesh_shape, config.dcn_mesh_shape, devices)
    config_checks.check_fits(config, mesh, model.config)
    tx, schedule = optim.make_optimizer(config.optimizer, config.num_train_steps or 1000)
    batch_sh = sharding.batch_sharding(mesh)
    dummy_batch = task.dummy_batch()
    abstract_batch = {
        k: jax.ShapeDtypeStruct((config.train_batch_size, *v.shape[1:]), v.dtype, sharding=batch_sh)
        for k, v in dummy_batch.items()
    }
    # Concrete values first: under the slice's mesh an eager op would run on its
    # devices, which exist only as a description here. A task's frozen model (a
    # distillation teacher) is read from its checkpoint, for its shapes.
    dummy, rng = task.model_inputs(dummy_batch), train.seed_key(config)
    frozen = task.frozen()
    with sharding.activate(mesh):
        abstract, state_sh = train.plan_state(model, tx, dummy, mesh, rng, frozen)
        step = train.jit_train_step(
            model, task, tx, schedule, config.optimizer.grad_accum_steps, state_sh, batch_sh
        )
        lowered = step.lower(abstract, abstract_batch)
    _progress(
        f"lowered in {time.perf_counter() - started:.1f} s; compiling for TPU "
        "(minutes for a large model)"
    )
    hbm = int(spec.hbm_gib * 2**30)
    counts = flops.token_counts(task.model_inputs(_full_batch(dummy_batch, config)))
    analytical = flops.train_flops(model.config, jax.device_get(counts)) / len(devices)
    report = {
        "config": " ".join(a for a in sys.argv[1:] if a.startswith("--config")),
        "slice": slice_name,
        "topology": spec.topology,
        "chips": len(devices),
        "device": devices[0].device_kind,
        "mesh": dict(zip(mesh.axis_names, (int(n) for n in mesh.devices.shape), strict=True)),
        "model": _shape(model),
        # A distillation teacher (its forward pass is not in the analytical FLOPs).
        "frozen_model": _shape(frozen.module) if frozen else None,
        "scan_layers": model.config.scan_layers,
        "remat_policy": model.config.remat_policy,
        "batch": config.train_batch_size,
        "seq": config.max_seq_length,
        "hbm_bytes": hbm,
        "analytical_flops_per_chip": analytical,
    }
    started = time.perf_counter()
    try:
        compiled = lowered.compile()
    except Exception as e:  # jax raises XlaRuntimeError (and others) for a compile OOM
        if not _is_out_of_memory(e):
            raise
        _progress(f"the compiler ran out of memory after {time.perf_counter() - started:.1f} s")
        return report | {"fits": False, "why": str(e).splitlines()[0][:400]}
    _progress(f"compiled in {time.perf_counter() - started:.1f} s")
    # Pallas kernels (attention_impl="splash") compile to Mosaic custom calls.
    kernels = compiled.as_text().count('custom_call_target="tpu_custom_call"')
    mem = compiled.memory_analysis()
    total = (
        mem.argument_size_in_bytes
        + mem.output_size_in_bytes
        - mem.alias_size_in_bytes
        + mem.temp_size_in_bytes
    )
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else (cost or {})
    estimate = cost.get("optimal_seconds")
    if model.config.scan_layers:
        # XLA's cost analysis counts a while loop's body once (jax#18672): with
        # scanned layers neither its FLOPs nor its time estimate are the step's.
        estimate = None
    elif estimate is not None and estimate <= 0:
        estimate = None  # libtpu gives negative times for RngBitGenerator (rng_impl rbg)
    peak = flops.peak_flops_per_device(devices[0])
    report |= {
        "fits": total <= hbm,
        "attention_impl": model.config.attention_impl or "default",
        "pallas_kernels": kernels,
        "memory_argument_bytes": int(mem.argument_size_in_bytes),
        "memory_output_bytes": int(mem.output_size_in_bytes),
        "memory_alias_bytes": int(mem.alias_size_in_bytes),
        "memory_temp_bytes": int(mem.temp_size_in_bytes),
        "memory_total_bytes": int(total),
        "compiled_flops_per_chip": float(cost["flops"]) if "flops" in cost else None,
        "estimated_step_s": float(estimate) if estimate else None,
        "peak_flops": peak,
        "predicted_mfu": analytical / float(estimate) / peak if estimate and peak else None,
    }
    if not report["fits"]:
        report["why"] = f"needs {total / 2**30:.1f} GiB of the chip's {spec.hbm_gib:g} GiB HBM"
    return report


def _shape(model) -> dict:
    return {k: getattr(model.config, k) for k in ("num_layers", "hidden_size", "dtype")}


def _full_batch(dummy_batch, config):
    """Full rows of the global batch's shapes, for the analytical FLOPs (every token real)."""
    import numpy as np

    return {
        k: np.ones((config.train_batch_size, *v.shape[1:]), v.dtype) for k, v in dummy_batch.items()
    }


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # An unknown slice, a config the mesh cannot shard: one line, exit status 1.
    with bad_input.command_errors(PROG):
        r = compile_for_slice(FLAGS.config, FLAGS.topology)
    print(
        f"{r['slice']} ({r['topology']}, {r['chips']} x {r['device']}), mesh {r['mesh']}: "
        f"batch {r['batch']} x {r['seq']}, {r['model']}, scan {r['scan_layers']}, "
        f"remat {r['remat_policy']}"
    )
    if r["frozen_model"]:
        print(f"  frozen model (teacher), in the step beside the trained one: {r['frozen_model']}")
    if r.get("pallas_kernels"):
        print(f"  Pallas (Mosaic) kernels in the compiled step: {r['pallas_kernels']}")
    if "memory_total_bytes" in r:
        print(
            f"  memory per chip: arguments {_gib(r['memory_argument_bytes'])}, outputs "
            f"{_gib(r['memory_output_bytes'])} (aliased {_gib(r['memory_alias_bytes'])}), "
            f"temporaries {_gib(r['memory_temp_bytes'])}; total {_gib(r['memory_total_bytes'])} "
            f"of {_gib(r['hbm_bytes'])} HBM"
        )
        compiled = r["compiled_flops_per_chip"]
        print(
            f"  FLOPs per chip: analytical {r['analytical_flops_per_chip'] / 1e12:.3f} T, "
            f"compiler {compiled / 1e12 if compiled else float('nan'):.3f} T"
        )
        if r["scan_layers"]:
            print(
                "  no time estimate: the compiler counts a scanned layer once "
                "(compile with --config.model.scan_layers=False for it)"
            )
        elif not r["estimated_step_s"]:
            print("  no time estimate: the compiler reports none usable for this step")
        else:
            print(
                f"  compiler's step estimate {r['estimated_step_s'] * 1e3:.1f} ms -> predicted "
                f"MFU {r['predicted_mfu']:.1%} of {r['peak_flops'] / 1e12:.0f} TFLOP/s"
            )
    print(f"  {'fits' if r['fits'] else 'DOES NOT FIT: ' + r['why']}")
    r["label"], r["command"] = FLAGS.label, "python -m bert_jax.perf.aot " + " ".join(sys.argv[1:])
    if FLAGS.record:
        records.append(FLAGS.record, r)
    print(json.dumps(r))
    if not r["fits"]:
        sys.exit(1)


if __name__ == "__main__":
    _define_flags()
    cli.quiet_logging()  # libraries' INFO lines only at --verbosity=1
    app.run(main, flags_parser=cli.flags_parser(PROG))
