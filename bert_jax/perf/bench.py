"""Time a bert_jax step, optionally side by side with HF transformers in PyTorch.

    python -m bert_jax.perf.bench --model=small --batch=32 --seq=128 --dtype=float32 \\
        [--mode=train|infer] [--task=pretraining|classification] [--compare=hf-torch] \\
        [--set=model.attention_dropout=0.0 ...] [--record=docs/results/cpu.jsonl --label=...]

What is timed. Train mode: the trainer's own step (`train.jit_train_step`:
forward, loss, gradients, clipping, AdamW, the state donated), compiled once,
then `--steps` steps per round with `block_until_ready`; infer mode: the
model's forward pass, jitted, deterministic. With `--compare=hf-torch` the
same architecture, batch and optimizer in HF transformers (PyTorch, eager;
`bert_jax.perf.bench_hf`) runs in alternating rounds, in a process of its own
(`bench_hf.Worker`: started fresh, with glibc's default malloc), each on all
the cores the process may use (restrict both with `taskset`). Step times
are medians over every timed step.

Reported: step time, sequences/s, real tokens/s, compile seconds, peak
memory (the device's allocator peak where it has one, else the compiled
step's arguments + outputs + temporaries), and MFU = model FLOPs / (step
time x peak FLOP/s). Model FLOPs: `bert_jax.flops` (the one formula, also
behind the trainer's perf/mfu), on real tokens; inference counts 1/3 of a
training step. Peak: the chip's bf16 peak from `flops.PEAK_TFLOPS`, or on a
CPU this machine's measured matrix-multiply rate in the benchmark's dtype.

The last stdout line is one JSON object (`step_time_s`, `tokens_per_s`,
`mfu`, `compile_s`, `peak_memory_bytes`; with --compare `hf_step_time_s` and
`ratio` = HF time / bert_jax time). `--record` appends it, with the command,
machine and versions, to a JSON-lines file that `experiments/performance_doc.py`
turns into docs/performance.md.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from bert_jax import configs, cpu_env, flops, optim, sharding, tasks, train
from bert_jax.configs import overrides as config_overrides
from bert_jax.data import pack_examples
from bert_jax.perf import bench_inputs, records
from bert_jax.perf import profile as bench_profile

FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_string("model", "small", "A size of bert_jax.models.bert.SIZES.")
    flags.DEFINE_integer("batch", 32, "Sequences per step.")
    flags.DEFINE_integer("seq", 128, "Sequence length (classification: the cap).")
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
    flags.DEFINE_enum("mode", "train", ["train", "infer"], "Training step or forward pass.")
    flags.DEFINE_enum("task", "pretraining", ["pretraining", "classification"], "Head and loss.")
    flags.DEFINE_integer("predictions", 20, "Masked positions per sequence (pretraining).")
    flags.DEFINE_enum("compare", "", ["", "hf-torch"], "Also time HF transformers (PyTorch).")
    flags.DEFINE_enum(
        "hf_malloc",
        "default",
        ["default", "bert_jax"],
        "HF's process: glibc's default malloc (as HF users run it), or the tunables "
        "bert_jax's process starts with (bert_jax.cpu_env): each at its fastest.",
    )
    flags.DEFINE_integer("steps", 10, "Timed steps per round and framework.")
    flags.DEFINE_integer("rounds", 3, "Alternating rounds (bert_jax, then HF).")
    flags.DEFINE_integer("warmup", 2, "Untimed steps before the first round.")
    flags.DEFINE_string(
        "records",
        "",
        "Pretraining: take the batch from these TFRecords (packed or not), or from an "
        ".npz file written by --save_batch.",
    )
    flags.DEFINE_string("text_file", "", "Classification: sentences (default: embedded corpus).")
    flags.DEFINE_string("vocab_file", "", "Classification: vocab.txt for text_file.")
    flags.DEFINE_multi_string("set", [], "Config overrides, key=value (e.g. model.scan_layers=1).")
    flags.DEFINE_multi_string(
        "variant",
        [],
        "Also time name:key=value;key=value (overrides on top of --set), in alternating "
        "rounds with the base config in the same process: before/after comparisons. "
        "xla.NAME=value sets an XLA compiler option for that variant's compile "
        "(e.g. xla.xla_cpu_use_onednn=false).",
    )
    flags.DEFINE_string("record", "", "Append the result to this JSON-lines file.")
    flags.DEFINE_string(
        "save_batch",
        "",
        "Write the batch this command would time to this .npz file and exit (for "
        "--records=FILE.npz on a machine without TensorFlow or the data).",
    )
    flags.DEFINE_string("label", "", "What this run measures (for --record).")
    flags.DEFINE_string(
        "name",
        "base",
        "This run's variant name under --label. A change that cannot alternate in one "
        "process (an environment variable read at start, such as "
        "BERT_JAX_MALLOC_HUGEPAGES=0) is two runs: the before one as base, the after "
        "one under a name.",
    )
    flags.DEFINE_bool(
        "profile",
        False,
        "CPU: also trace a few steps and report where the time goes "
        "(matmul, dropout RNG, layout copies, other; bert_jax.perf.profile).",
    )


# ----------------------------------------------------------------------------
# Config, batch and the timed functions.
# ----------------------------------------------------------------------------


def _compiler_options(assignments) -> tuple[list[str], dict]:
    """Split `xla.NAME=value` items off: (config assignments, XLA compiler options)."""
    rest, options = [], {}
    for item in assignments:
        key, _, text = item.partition("=")
        if not key.startswith("xla."):
            rest.append(item)
            continue
        literal = {"true": True, "false": False}.get(text.lower(), text)
        options[key.removeprefix("xla.")] = literal
    return rest, options


def _override(config, assignments: list[str], where: str = "--set"):
    """`config` with `key=value` items applied as `--config.key=value` would be."""
    bad = [item for item in assignments if "=" not in item]
    if bad:
        raise app.UsageError(f"{where}: {bad[0]!r} is not key=value")
    pairs = dict(item.split("=", 1) for item in assignments)
    try:
        return config_overrides.apply(config, pairs, where)
    except ValueError as e:
        raise app.UsageError(str(e)) from e


def build_config(task: str, model: str, batch: int, seq: int, dtype: str, predictions: int):
    name = "pretrain.py" if task == "pretraining" else "glue.py"
    arg = f"model={model}" if task == "pretraining" else f"task=sst2,model={model}"
    c = configs.load(f"{configs.repository_config(name)}:{arg}")
    c.max_seq_length, c.train_batch_size, c.eval_batch_size = seq, batch, batch
    c.model.dtype = dtype
    if task == "pretraining":
        c.max_predictions_per_seq = predictions
    c.num_train_steps = 1_000_000
    c.optimizer.warmup_steps, c.optimizer.warmup_proportion = 10, 0.0
    return c


def measured_matmul_flops(dtype: str, n: int = 2048, repeats: int = 10, trials: int = 3) -> float:
    """This machine's matrix-multiply FLOP/s on one device: the CPU peak MFU is taken
    against. The best of `trials` medians, since a shared machine only ever slows it."""
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    best = 0.0
    for _ in range(trials):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            f(a, a).block_until_ready()
            times.append(time.perf_counter() - t)
        best = max(best, 2 * n**3 / statistics.median(times))
    return best


def _peak_memory(compiled) -> int:
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)


def jax_step(config, mode: str, local_batch, compiler_options: dict | None = None):
    """(run one step -> seconds, compile seconds, peak memory bytes, token counts, rows,
    model config, the compiled step)."""
    if config.data.get("pack_examples"):  # classification: the same examples, packed
        # into rows of max_seq_length, as the trainer packs them.
        n, width = local_batch["input_ids"].shape
        pad = ((0, 0), (0, config.max_seq_length - width))
        full = {k: np.pad(v, pad) if v.ndim == 2 else v for k, v in local_batch.items()}
        local_batch = pack_examples.pack_batch(
            full | {"valid": np.ones(n, np.int32)},
            config.data.pack_examples,
            config.data.pack_row_multiple,
            config.data.length_bucket,
        )
    task = tasks.get(config)
    model = task.model()
    mesh = sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    tx, schedule = optim.make_optimizer(config.optimizer, config.num_train_steps)
    batch_sh = sharding.batch_sharding(mesh)
    with sharding.activate(mesh):
        rng = train.seed_key(config)
        dummy = task.model_inputs(task.dummy_batch())
        _, state_sh = train.plan_state(model, tx, dummy, mesh, rng)
        state = train.create_state(model, tx, dummy, state_sh, rng)
        batch = train.global_batch(local_batch, batch_sh)
        t = time.perf_counter()
        if mode == "train":
            fn = train.jit_train_step(
                model, task, tx, schedule, config.optimizer.grad_accum_steps, state_sh, batch_sh
            )
        else:
            fn = jax.jit(
                lambda p, b: model.apply({"params": p}, **task.model_inputs(b), deterministic=True)
            )
        args = (state, batch) if mode == "train" else (state.params, batch)
        compiled = fn.lower(*args).compile(compiler_options or None)
        compile_s = time.perf_counter() - t
    counts = jax.device_get(flops.token_counts(task.model_inputs(local_batch)))
    box = {"state": state}

    def step() -> float:
        t = time.perf_counter()
        if mode == "train":
            box["state"], out = compiled(box["state"], batch)
        else:
            out = compiled(box["state"].params, batch)
        jax.block_until_ready(out)
        return time.perf_counter() - t

    rows = int(local_batch["input_ids"].shape[0])
    return step, compile_s, _peak_memory(compiled), counts, rows, model.config, compiled


def _timed(step, n: int) -> list[float]:
    return [step() for _ in range(n)]


# ----------------------------------------------------------------------------
# Main.
# ----------------------------------------------------------------------------


def _inputs(config, f):
    """The host batch for the flags' task, and the model vocabulary it needs."""
    if f.task == "pretraining" and f.records:
        k = config.data.examples_per_row
        batch = bench_inputs.records_batch(
            f.records, f.batch, f.seq, config.max_predictions_per_seq, k
        )
        return batch, config.model.vocab_size or 30522
    if f.task == "pretraining":
        vocab = config.model.vocab_size or 30522
        return bench_inputs.pretraining_batch(f.batch, f.seq, f.predictions, vocab), vocab
    text, vocab_file = f.text_file, f.vocab_file
    if not text:
        text, vocab_file = bench_inputs.default_text("~/.cache/bert_jax")
    config.data.vocab_file = vocab_file
    bucket = config.data.length_bucket
    return bench_inputs.classification_batch(text, vocab_file, f.batch, f.seq, bucket)


def _config_and_batch(f):
    """The flags' config (with --set) and the host batch it is timed on."""
    config = build_config(f.task, f.model, f.batch, f.seq, f.dtype, f.predictions)
    config = _override(config, f.set)
    local, vocab = _inputs(config, f)
    config.model.vocab_size = vocab
    return config, local


def _variants(assignments: list[str], first: str = "base") -> list[tuple[str, list[str]]]:
    """`--variant=name:key=value;key=value` -> [(name, ["key=value", ...])], `first` first."""
    out = [(first, [])]
    for v in assignments:
        name, _, rest = v.partition(":")
        out.append((name, [a for a in rest.split(";") if a]))
    return out


def run(argv_command: str) -> list[dict]:
    """One result per variant ("base" first); HF, when compared, runs once per round."""
    f = FLAGS
    config, local = _config_and_batch(f)
    device = jax.devices()[0]
    if f.profile and device.platform != "cpu":
        raise app.UsageError(f"--profile reads XLA:CPU's kernel events; this is {device.platform}")
    peak, peak_source = flops.peak_flops_per_device(device), "table"
    if peak is None:  # Measured before anything else runs (no thread pools spinning).
        peak, peak_source = measured_matmul_flops(f.dtype), "measured matmul"
    runs = []
    for name, assignments in _variants(f.variant, f.name):
        config_assignments, options = _compiler_options(assignments)
        c = _override(config, config_assignments, f"--variant {name}")  # a copy
        runs.append((name, assignments, *jax_step(c, f.mode, local, options)))
    hf_step = None
    if f.compare:
        from bert_jax.perf import bench_hf

        threads = len(os.sched_getaffinity(0))
        model_config = runs[0][-2]
        hf_step = bench_hf.Worker(
            f.task,
            f.mode,
            model_config,
            config.optimizer,
            local,
            f.dtype,
            threads,
            malloc=f.hf_malloc,
        )
    steps = [r[2] for r in runs] + ([hf_step] if hf_step else [])
    for _ in range(f.warmup):
        for step in steps:
            step()
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(f.rounds):  # Alternating: a slower minute slows every variant alike.
        for i, step in enumerate(steps):
            times[i] += _timed(step, f.steps)
    results = []
    for (
        name,
        assignments,
        step,
        compile_s,
        memory,
        counts,
        rows,
        model_config,
        compiled,
    ), t in zip(runs, times, strict=False):
        step_s = statistics.median(t)
        work = flops.train_flops(model_config, counts) / (3 if f.mode == "infer" else 1)
        result = {
            "label": f.label + ("" if name == "base" else f"/{name}"),
            "variant": name,
            "model": f.model,
            "task": f.task,
            "mode": f.mode,
            "batch": f.batch,
            "seq": int(local["input_ids"].shape[-1]),
            "rows": rows,
            "dtype": f.dtype,
            "predictions": f.predictions if f.task == "pretraining" else 0,
            "overrides": list(f.set) + assignments,
            "step_time_s": step_s,
            "sequences_per_s": f.batch / step_s,
            "tokens_per_s": float(counts["tokens"]) / step_s,
            "real_tokens_per_step": float(counts["tokens"]),
            "model_flops_per_step": work,
            "achieved_flops": work / step_s,
            "peak_flops": peak,
            "peak_source": peak_source,
            "mfu": work / step_s / peak,
            "compile_s": compile_s,
            "peak_memory_bytes": memory,
            "device": device.device_kind,
            "cores": len(os.sched_getaffinity(0)),
            "jax": jax.__version__,
            "python": platform.python_version(),
            "command": argv_command,
            # Read once at start; bert_jax.cpu_env sets it (CPU step time).
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
            # Where this run's CPU dots ran (bert_jax.cpu_env; an xla. variant
            # overrides it for its own compile).
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
        }
        if f.profile:
            result["profile"] = bench_profile.profile(step, compiled.as_text())
        if hf_step:
            result["hf_step_time_s"] = statistics.median(times[-1])
            result["ratio"] = result["hf_step_time_s"] / step_s
            info = dict(hf_step.info)
            # HF ran in its own process (bench_hf.Worker), with this malloc.
            result["hf_glibc_tunables"] = info.pop("glibc_tunables")
            result |= info
        results.append(result)
    if hf_step:
        hf_step.close()
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    command = "python -m bert_jax.perf.bench " + " ".join(sys.argv[1:])
    for opt_out in cpu_env.OPT_OUTS:
        if os.environ.get(opt_out) == "0":
            command = f"{opt_out}=0 {command}"
    if FLAGS.save_batch:
        _, local = _config_and_batch(FLAGS)
        bench_inputs.save_batch(FLAGS.save_batch, local)
        rows, width = local["input_ids"].shape
        print(f"wrote {FLAGS.save_batch}: {rows} rows of {width}")
        return
    if FLAGS.profile:
        # Read when the backend starts, which is after this (nothing ran yet).
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " " + bench_profile.TRACE_FLAG
        ).strip()
    results = run(command)
    r = results[0]
    print(
        f"{r['model']} {r['task']} {r['mode']} batch {r['batch']} x {r['seq']} {r['dtype']} "
        f"on {r['device']} ({r['cores']} cores)"
    )
    for r in results:
        print(
            f"  bert_jax {r['variant']}: {r['step_time_s'] * 1e3:.1f} ms/step, "
            f"{r['sequences_per_s']:.1f} seq/s, {r['tokens_per_s']:.0f} tokens/s, MFU "
            f"{r['mfu']:.1%} of {r['peak_flops'] / 1e9:.0f} GFLOP/s ({r['peak_source']}), "
            f"compile {r['compile_s']:.1f} s, memory {r['peak_memory_bytes'] / 2**20:.0f} MiB"
        )
    if "ratio" in r:
        print(
            f"  HF transformers (PyTorch {r['torch']}): {r['hf_step_time_s'] * 1e3:.1f} ms/step; "
            f"bert_jax is {results[0]['ratio']:.2f}x as fast"
        )
    for r in results:
        if "profile" in r:
            p = r["profile"]
            kinds = ", ".join(
                f"{k} {p['ms_by_kind'][k]:.0f} ms ({p['share_by_kind'][k]:.0%})"
                for k in bench_profile.KINDS
            )
            print(f"  where {r['variant']}'s time goes (kernel ms per step): {kinds}")
    if FLAGS.record:
        for r in results:
            records.append(FLAGS.record, r)
    out = dict(results[0])
    if len(results) > 1:
        out["variants"] = results[1:]
    print(json.dumps(out))


if __name__ == "__main__":
    cpu_env.apply()  # as `python -m bert_jax.main` runs: timed as users train
    from bert_jax import cli

    _define_flags()
    cli.quiet_logging()  # libraries' INFO lines only at --verbosity=1
    app.run(main)
