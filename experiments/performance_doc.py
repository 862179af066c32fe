"""Write docs/performance.md from the measurement records; no number is typed by hand.

    python experiments/performance_doc.py [--results=docs/results] [--out=docs/performance.md]

Records are JSON lines appended by `python -m bert_jax.perf.bench --record=...` and
`python -m bert_jax.perf.aot --record=...` (experiments/performance_runs.sh and
experiments/bench_gpu.sh hold the commands). Every number in the document is printed
with the command that measured it and the machine it ran on. The document leads with
accelerators (TPU ahead-of-time estimates, GPU runs), then the CPU; CPU numbers come
from the latest CPU machine's records only (a record names its machine). Label
conventions (`--label`):

* `compare/...`: a side-by-side run with `--compare=hf-torch`;
* `opt/<name>`: a setting measured before (the base run) and after (a variant);
* `profile/...`: a run with `--profile` (kernel time by kind);
* `packing/...`: the step on real records, unpacked and packed;
* AOT records: one per compiled config and slice; GPU records: `gpu/...`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bert_jax import cpu_env  # noqa: E402
from bert_jax.perf import records  # noqa: E402

# Test data paths in recorded commands, as a user of a fresh checkout writes them.
SHARED_DATA = ("../shared/data", "$BERT_JAX_SHARED_DATA")
# The CPU settings measured with and without (`opt/<name>`), and what each is now.
CPU_SETTINGS = {
    "malloc-hugepages": "glibc malloc on transparent huge pages (opt-out "
    "`BERT_JAX_MALLOC_HUGEPAGES=0`), without reused buffers",
    "malloc-reuse": "reused step buffers: one arena, no mappings, no trimming (opt-out "
    "`BERT_JAX_MALLOC_REUSE=0`)",
    "malloc-reuse-classification": "reused step buffers, MiniLM-sized classification",
}


def command(r: dict) -> str:
    """The record's command, with the test-data folder written as the tests find it."""
    return r["command"].replace(*SHARED_DATA).strip()


def cpu_name(r: dict) -> str:
    """The CPU a record was measured on, with its family and model where recorded."""
    m = r.get("machine", {})
    if "cpu_family" not in m:
        return f"{m.get('cpu', '?')} (family not recorded)"
    return f"{m['cpu']} (family {m['cpu_family']}, model {m.get('cpu_model', '?')})"


def machine(r: dict) -> str:
    """The CPU and the cores a run used, as one short phrase."""
    cores = r.get("cores") or r.get("machine", {}).get("host_cores")
    return f"{cpu_name(r)}, {cores} cores" if cores else cpu_name(r)


def latest_machine(rows: list[dict]) -> list[dict]:
    """The records of the CPU the last record was measured on (older machines' go)."""
    if not rows:
        return []
    latest = cpu_name(rows[-1])
    return [r for r in rows if cpu_name(r) == latest]


def _key(r: dict, key: tuple) -> tuple:
    return tuple(k(r) if callable(k) else str(r.get(k)) for k in key)


def _rows(path: Path, *key) -> list[dict]:
    """The file's records, the latest of each `key` (re-runs supersede), in first order.
    A key is a field name or a function of the record."""
    rows = records.read(str(path)) if path.exists() else []
    latest: dict = {}
    for r in rows:
        latest[_key(r, key)] = r
    order = list(dict.fromkeys(_key(r, key) for r in rows))
    return [latest[k] for k in order]


def _ms(s: float) -> str:
    return f"{s * 1e3:,.1f}"


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def _shape(r: dict) -> str:
    return f"{r['batch']} x {r['seq']}"


def _model(r: dict) -> str:
    extra = [o for o in r.get("overrides", []) if o.startswith("model.")]
    return r["model"] + (f" ({', '.join(o[6:] for o in extra)})" if extra else "")


def _commands(rows: list[dict], name=lambda r: r["label"]) -> list[str]:
    """One line per distinct command: the rows it measured, then the command."""
    by_command: dict[str, list[str]] = {}
    for r in rows:
        by_command.setdefault(command(r), []).append(name(r))
    out = ["Commands:", ""]
    for c, names in by_command.items():
        out.append(f"- {', '.join(dict.fromkeys(names))}: `{c}`")
    return out


def _tunables(r: dict, field: str = "glibc_tunables") -> set[str]:
    return set(filter(None, r.get(field, "").split(":")))


def _malloc(r: dict, field: str = "glibc_tunables") -> str:
    """glibc's malloc as the process started (records before the field: default)."""
    present = _tunables(r, field)
    names = cpu_env.MALLOC_NAMES.items()
    return ", ".join(n for t, n in names if present.issuperset(t)) or "default"


def _hf_malloc(r: dict) -> str:
    """HF's malloc where it ran in a process of its own (bench_hf.Worker)."""
    if "hf_glibc_tunables" not in r:
        return ""  # the same process, so the same malloc
    return f"; HF {_malloc(r, 'hf_glibc_tunables')} (own process)"


def _dots(r: dict) -> str:
    """Where XLA:CPU ran the dots (records before the field: XLA's default)."""
    flags = r.get("xla_flags", "").split()
    return "oneDNN" if all(f in flags for f in cpu_env.ONEDNN_FLAGS) else "XLA default"


def _former_paths(r: dict) -> bool:
    """Measured with the model's former CPU-only code paths (16-bit dropout masks)."""
    return r.get("dropout_mask_bits") == 16


def _layout(r: dict) -> str:
    """How bert_jax laid out the batch HF got padded: as HF, or packed (rows)."""
    packed = [o for o in r.get("overrides", []) if o.startswith("data.pack_examples=")]
    if not packed:
        return "as HF"
    return f"packed, {r['rows']} rows (K={packed[-1].split('=')[1]})"


# ---------------------------------------------------------------------------- goals


def targets_section(
    compare: list[dict], aot: list[dict], alone: list[dict] = (), gpu: list[dict] = ()
) -> list[str]:
    """The project's goals against the records (the measured value, or "not
    measured"): accelerators first, then the CPU, on the latest CPU machine only."""
    compare = latest_machine(compare)
    alone = [r for r in alone if r["variant"] == "base"]
    if compare:
        alone = [r for r in alone if cpu_name(r) == cpu_name(compare[-1])]
    out = ["| goal | at least | measured | met |", "|---|---|---|---|"]
    out += _target_rows(_accelerator_targets(aot, gpu))
    return out + _target_rows(_cpu_targets(compare + alone))


def _target_rows(rows) -> list[str]:
    out = []
    for name, goal, (value, text) in rows:
        goal_text = f"{goal:.0%}" if goal < 1 else f"{goal}x"
        met = "-" if value is None else ("yes" if value >= goal else "no")
        out.append(f"| {name} | {goal_text} | {text} | {met} |")
    return out


# Side-by-side runs of a label with another malloc: glibc's default for both, and HF
# with bert_jax's tunables (`--hf_malloc=bert_jax`; reused buffers speed HF's too).
MALLOC_RUNS = ("-default-malloc", "-hf-bert-jax-malloc")


def _malloc_runs(label: str) -> list[str]:
    """`label` and its runs' labels with another malloc (a variant's /name stays last)."""
    kind, run, *variant = label.split("/")
    return ["/".join([kind, run + suffix, *variant]) for suffix in ("", *MALLOC_RUNS)]


def _cpu_targets(compare: list[dict]) -> list[tuple]:
    by_label = {r["label"]: r for r in compare}

    def ratio(label):
        # Each framework at its fastest malloc: the runs where one of them had the
        # other malloc (MALLOC_RUNS), where there are any, count too.
        runs = [by_label[k] for k in _malloc_runs(label) if k in by_label]
        if not runs:
            return (None, "not measured")
        hf = min(r["hf_step_time_s"] for r in runs)
        ours = min(r["step_time_s"] for r in runs)
        note = " (each at its fastest malloc)" if len(runs) > 1 else ""
        return (hf / ours, f"{hf / ours:.2f}x{note}")

    def mfu(label):
        # The side-by-side run's MFU and, where there is one, the profile run's
        # (bert_jax alone). Met only if both are.
        r = by_label.get(label)
        if not r:
            return (None, "not measured")
        alone = by_label.get("profile/small-pretraining-train")
        if not alone:
            return (r["mfu"], f"{r['mfu']:.1%}")
        text = f"{r['mfu']:.1%} side by side; {alone['mfu']:.1%} alone (profile run)"
        return (min(r["mfu"], alone["mfu"]), text)

    return [
        (
            "CPU pretraining step vs HF (small, 32 x 128, fp32)",
            2.5,
            ratio("compare/small-pretraining-train"),
        ),
        (
            "CPU pretraining step, share of the measured matmul rate",
            0.70,
            mfu("compare/small-pretraining-train"),
        ),
        (
            "CPU fine-tuning step vs HF (MiniLM-sized, SST-2 lengths; same padded batch)",
            1.5,
            ratio("compare/minilm-classification-train"),
        ),
        (
            "CPU fine-tuning step vs HF (the same examples packed, data.pack_examples=16)",
            1.5,
            ratio("compare/minilm-classification-train/packed"),
        ),
        ("CPU inference vs HF (small pretraining)", 1.5, ratio("compare/small-pretraining-infer")),
        (
            "CPU inference vs HF (MiniLM-sized classification; same padded batch)",
            1.5,
            ratio("compare/minilm-classification-infer"),
        ),
        (
            "CPU inference vs HF (MiniLM-sized classification, packed)",
            1.5,
            ratio("compare/minilm-classification-infer/packed"),
        ),
    ]


# The GPU goals are for one H100; an H200 has the same bf16 peak (989 TFLOP/s,
# bert_jax/flops.py), so its MFU counts too, named with its device.
H100_CLASS = ("h100", "h200")


def _gpu_mfu(gpu: list[dict], model: str, seq: int) -> tuple:
    """The best bf16 MFU of `model` at `seq` on an H100-class GPU, any variant."""
    rows = [
        r
        for r in gpu
        if r["model"] == model
        and r["seq"] == seq
        and r["dtype"] == "bfloat16"
        and any(k in r["device"].lower() for k in H100_CLASS)
    ]
    best = max(rows, key=lambda r: r["mfu"], default=None)
    if best is None:
        return (None, "not measured yet (no GPU lent)")
    return (best["mfu"], f"{best['mfu']:.1%} ({best['device']}, {best['label']})")


def _accelerator_targets(aot: list[dict], gpu: list[dict] = ()) -> list[tuple]:
    base_v5p = [
        r
        for r in aot
        if r["slice"].startswith("v5p")
        and r["model"]["num_layers"] == 12
        and r["seq"] == 128
        and r["batch"] == 256  # BERT-base at the paper's phase-1 shapes, 256 x 128
        and r.get("predicted_mfu")
    ]
    best = max(base_v5p, key=lambda r: r["predicted_mfu"], default=None)
    tpu = (
        (best["predicted_mfu"], f"{best['predicted_mfu']:.1%} ({best['label']}, {best['slice']})")
        if best
        else (None, "not measured")
    )
    return [
        ("TPU v5p predicted MFU, base seq 128, batch 256 (AOT)", 0.45, tpu),
        ("H100 MFU, large seq 512 bf16", 0.45, _gpu_mfu(gpu, "large", 512)),
        ("H100 MFU, base seq 128 bf16", 0.40, _gpu_mfu(gpu, "base", 128)),
    ]


# ------------------------------------------------------------------- accelerators


def aot_section(rows: list[dict]) -> list[str]:
    out = [
        "| run | slice | model (layers/hidden, dtype) | batch x seq | attention | scan | remat | "
        "fits | memory GiB / HBM | compiler / analytical FLOPs | estimate ms | predicted MFU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r["model"]
        mem = (
            f"{_gib(r['memory_total_bytes'])} / {_gib(r['hbm_bytes'])}"
            if "memory_total_bytes" in r
            else f"- / {_gib(r['hbm_bytes'])}"
        )
        ratio = (
            f"{r['compiled_flops_per_chip'] / r['analytical_flops_per_chip']:.2f}"
            if r.get("compiled_flops_per_chip")
            else "-"
        )
        est = _ms(r["estimated_step_s"]) if r.get("estimated_step_s") else "-"
        if not r.get("estimated_step_s") and r.get("scan_layers"):
            est = "- (scan)"
        mfu = f"{r['predicted_mfu']:.1%}" if r.get("predicted_mfu") else "-"
        out.append(
            f"| {r['label']} | {r['slice']} ({r['device']}) | "
            f"{m['num_layers']}/{m['hidden_size']}, {m['dtype']} | "
            f"{r['batch']} x {r['seq']} | {r.get('attention_impl', 'default')} | "
            f"{r['scan_layers']} | {r['remat_policy']} | "
            f"{'yes' if r['fits'] else 'no'} | {mem} | {ratio} | {est} | {mfu} |"
        )
    hosts = ", ".join(dict.fromkeys(cpu_name(r) for r in rows))
    return [
        *out,
        "",
        f"Compiled with libtpu on a CPU host ({hosts}); no TPU ran these steps.",
        "",
        *_commands(rows, lambda r: f"{r['label']} ({r['slice']})"),
    ]


def throughput_section(rows: list[dict]) -> list[str]:
    out = [
        "| device | run | model | batch x seq | dtype | variant | ms/step | real tokens/s | MFU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        run = r["label"].removesuffix(f"/{r['variant']}")
        out.append(
            f"| {r['device']} | {run} | {_model(r)} | {_shape(r)} | {r['dtype']} | "
            f"{r['variant']} | {_ms(r['step_time_s'])} | {r['tokens_per_s']:,.0f} | "
            f"{r['mfu']:.1%} |"
        )
    return out + ["", *_commands(rows)]


# ---------------------------------------------------------------------------- CPU


def machine_section(rows: list[dict]) -> list[str]:
    """One row per CPU, core count and jax version, with the torch and transformers
    the side-by-side runs used (runs without HF record none)."""
    seen: dict[tuple, list] = {}
    for r in rows:
        versions = seen.setdefault((cpu_name(r), r.get("cores"), r.get("jax")), [None, None])
        versions[0] = versions[0] or r.get("torch")
        versions[1] = versions[1] or r.get("transformers")
    out = ["| CPU | cores used | jax | torch | transformers |", "|---|---|---|---|---|"]
    out += [
        f"| {c} | {n} | {j} | {t or '-'} | {tr or '-'} |" for (c, n, j), (t, tr) in seen.items()
    ]
    return out


def _settings(r: dict) -> str:
    text = f"{_malloc(r)}{_hf_malloc(r)}; {_dots(r)} dots"
    return text + (" †" if _former_paths(r) else "")


def compare_section(rows: list[dict]) -> list[str]:
    out = [
        "| model | task | mode | batch x seq | dtype | settings | bert_jax batch | "
        "bert_jax ms/step | HF ms/step | bert_jax / HF speed | real tokens/s | "
        "MFU (of measured matmul) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {_model(r)} | {r['task']} | {r['mode']} | {_shape(r)} | {r['dtype']} | "
            f"{_settings(r)} | {_layout(r)} | "
            f"{_ms(r['step_time_s'])} | {_ms(r['hf_step_time_s'])} | {r['ratio']:.2f}x | "
            f"{r['tokens_per_s']:,.0f} | {r['mfu']:.1%} of {r['peak_flops'] / 1e9:.0f} GFLOP/s |"
        )
    return out + ["", *_commands(rows)]


# Changes to the model measured before and after (`opt/<name>`: the base run at the
# commit before the change, the named run after; experiments/performance_runs.sh).
MODEL_CHANGES = {
    "one-bert": "one model on every platform: the CPU-only paths of the model (dense "
    "layers on rows, 16-bit dropout masks, vocabulary-major MLM logits) removed, flax's "
    "nn.Dropout everywhere",
}


def model_changes_section(rows: list[dict]) -> list[str]:
    """Each model change: bert_jax's step before and after, HF side by side in both."""
    out = []
    for name, what in MODEL_CHANGES.items():
        group = [r for r in rows if r["label"].split("/")[1] == name]
        base = next((r for r in group if r["variant"] == "base"), None)
        if base is None:
            continue
        out += [
            f"**{name}**: {what}. {_model(base)}, {base['task']} {base['mode']}, "
            f"{_shape(base)}, {base['dtype']}:",
            "",
            "| run | bert_jax ms/step | vs before | HF ms/step | bert_jax / HF | MFU |",
            "|---|---|---|---|---|---|",
        ]
        for r in group:
            change = r["step_time_s"] / base["step_time_s"] - 1
            hf = r.get("hf_step_time_s")
            ratio = f"{hf / r['step_time_s']:.2f}x" if hf else "-"
            out.append(
                f"| {'before' if r is base else 'after'} | {_ms(r['step_time_s'])} | "
                f"{'' if r is base else f'{change:+.1%}'} | {_ms(hf) if hf else '-'} | "
                f"{ratio} | {r['mfu']:.1%} |"
            )
        out += ["", *_commands(group, lambda r: "before" if r["variant"] == "base" else "after")]
        out.append("")
    return out


def settings_section(rows: list[dict]) -> list[str]:
    """The CPU process settings, each measured without (before) and with (after)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        name = r["label"].split("/")[1]
        if name in CPU_SETTINGS:
            groups.setdefault(name, []).append(r)
    out = []
    for name, group in groups.items():
        base = next(r for r in group if r["variant"] == "base")
        out += [
            f"**{name}**: {CPU_SETTINGS[name]}. {_model(base)}, {base['task']} "
            f"{base['mode']}, {_shape(base)}, {base['dtype']}:",
            "",
            "| run | malloc as started | ms/step | vs without | MFU | memory MiB |",
            "|---|---|---|---|---|---|",
        ]
        for r in group:
            change = r["step_time_s"] / base["step_time_s"] - 1
            out.append(
                f"| {'without' if r is base else r['variant']} | {_malloc(r)} | "
                f"{_ms(r['step_time_s'])} | {'' if r is base else f'{change:+.1%}'} | "
                f"{r['mfu']:.1%} | {_mib(r['peak_memory_bytes'])} |"
            )
        out += ["", *_commands(group, lambda r: r["variant"]), ""]
    return out


def profile_section(rows: list[dict]) -> list[str]:
    kinds = ("matmul", "dropout RNG", "layout copies", "other")
    out = [
        "| run | variant | ms/step | " + " | ".join(f"{k} ms (share)" for k in kinds)
        + " | model FLOPs / matmul time |",
        "|---|---|---|" + "---|" * len(kinds) + "---|",
    ]  # fmt: skip
    for r in rows:
        p = r["profile"]
        cells = [f"{p['ms_by_kind'][k]:,.0f} ({p['share_by_kind'][k]:.0%})" for k in kinds]
        # The formula's FLOPs are matmul FLOPs (the rest is O(s d) per layer).
        inside = r["model_flops_per_step"] / (p["ms_by_kind"]["matmul"] / 1e3)
        out.append(
            f"| {_model(r)}, {r['task']} {r['mode']}, {_shape(r)}{' †' * _former_paths(r)} | "
            f"{r['variant']} | {_ms(r['step_time_s'])} | {' | '.join(cells)} | "
            f"{inside / 1e9:,.0f} GFLOP/s ({inside / r['peak_flops']:.0%} of the measured "
            "matmul rate) |"
        )
    first = rows[0]
    p = first["profile"]
    matmul_ms, step_ms = p["ms_by_kind"]["matmul"], first["step_time_s"] * 1e3
    if matmul_ms < step_ms:
        alone = first["model_flops_per_step"] / (matmul_ms / 1e3) / first["peak_flops"]
        reading = (
            f"In the first run the matmul kernels alone take {matmul_ms:,.0f} ms a step: "
            f"even if every other kernel cost nothing, its MFU would be {alone:.0%}."
        )
    else:
        reading = (
            f"In the first run the matmul kernels' times add up to {matmul_ms:,.0f} ms, "
            f"more than the {step_ms:,.0f} ms step: XLA:CPU runs independent matmuls at "
            "once, so their times overlap and the last column understates their rate."
        )
    out += [
        "",
        "The last column counts real tokens' FLOPs only, so padding computed by the "
        f"matmuls shows as a lower rate. {reading}",
        "",
        f"The largest kernels of that run ({_model(first)}, {first['task']}, {first['variant']}):",
        "",
        "| kernel | kind | ms/step | what (HLO op_name) |",
        "|---|---|---|---|",
    ]
    for k in p["top_kernels"]:
        out.append(f"| {k['kernel']} | {k['kind']} | {k['ms']:,.1f} | `{k['op_name'][:110]}` |")
    return out + ["", *_commands(rows)]


def packing_section(rows: list[dict]) -> list[str]:
    out = [
        "| corpus | length | examples per row | examples | rows | real tokens / row "
        "tokens, unpacked | packed |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['corpus']} | {r['seq']} | {r['examples_per_row']} | {r['examples']:,} | "
            f"{r['rows']:,} | {r['efficiency_before']:.1%} | {r['efficiency_after']:.1%} |"
        )
    return out + (["", *_commands(rows, lambda r: f"{r['corpus']} at {r['seq']}")] if rows else [])


def packed_step_section(rows: list[dict]) -> list[str]:
    """The same model and step on real records, unpacked and packed: what a step buys."""
    out = [
        "| records | batch x seq | ms/step | real tokens/step | real tokens/s | MFU |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['label'].split('/')[1]} | {_shape(r)} | {_ms(r['step_time_s'])} | "
            f"{r['real_tokens_per_step']:,.0f} | {r['tokens_per_s']:,.0f} | {r['mfu']:.1%} |"
        )
    return out + ["", *_commands(rows)]


def trainer_section(rows: list[dict]) -> list[str]:
    out = [
        "| model | checkpoints | trainer steps/s | the step alone, steps/s | loop overhead |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        alone = 1 / r["step_alone_s"]
        out.append(
            f"| {r['model']} | {r['label']} | {r['steps_per_second']:.3f} | {alone:.3f} | "
            f"{alone / r['steps_per_second'] - 1:+.1%} |"
        )
    return out + ["", *_commands(rows)]


# --------------------------------------------------------------------------- main


def render(results: Path) -> tuple[list[str], dict]:
    """The document's lines from the records under `results`, and row counts."""
    cpu_all = _rows(results / "cpu.jsonl", "label", cpu_name)
    cpu = latest_machine(cpu_all)
    aot = _rows(results / "aot.jsonl", "label", "slice")
    gpu = _rows(results / "gpu.jsonl", "label")
    packing = _rows(results / "packing.jsonl", "corpus", "seq", "examples_per_row")
    trainer = _rows(results / "trainer.jsonl", "label", "model")
    compare = [r for r in cpu if r["label"].startswith("compare/")]
    opt = [r for r in cpu if r["label"].startswith("opt/")]
    packed_steps = [r for r in cpu if r["label"].startswith("packing/")]
    profiled = [r for r in cpu if r["label"].startswith("profile/")]
    cpu_machine = machine(cpu[-1]) if cpu else "no CPU records"
    if cpu:
        trainer = [r for r in trainer if cpu_name(r) == cpu_name(cpu[-1])]
    lines = [
        "# Performance",
        "",
        "Generated by `python experiments/performance_doc.py` from the records in "
        "`docs/results/*.jsonl` (written by `python -m bert_jax.perf.bench --record` and "
        "`python -m bert_jax.perf.aot --record`; `bash experiments/performance_runs.sh` "
        "reruns the CPU and TPU ones, `bash experiments/bench_gpu.sh` the GPU ones). Every "
        "number below names its command and machine. Commands write the test-data folder "
        "as `$BERT_JAX_SHARED_DATA` (the shared data folder beside the checkout).",
        "",
        "Model FLOPs follow one formula (`bert_jax/flops.py`, also the trainer's "
        "`perf/mfu`): 3 x forward, forward = layers x (2 s (4 d^2 + 2 d f) + 4 s^2 d) + "
        "p (2 d^2 + 2 d V) for the p MLM predictions, on real tokens. MFU on accelerators "
        "is taken against the chip's bf16 peak (TPU v4 275, v5e 197, v5p 459, v6e 918, "
        "H100/H200 989, A100 312 TFLOP/s); on a CPU against the machine's measured "
        "matrix-multiply rate in the same dtype.",
        "",
        "## Goals and where they stand",
        "",
        f"Accelerators first; the CPU rows are from {cpu_machine}.",
        "",
        *targets_section(compare, aot, profiled, gpu),
        "",
        "## TPU: ahead-of-time compile for slices",
        "",
        "`python -m bert_jax.perf.aot` compiles the trainer's sharded step with libtpu on a "
        "CPU machine. Memory is per chip; the estimate is the compiler's "
        "(`optimal_seconds`), and the predicted MFU is analytical FLOPs / (estimate x bf16 "
        "peak). With scanned layers the compiler counts the layer once, so no estimate is "
        "given. Each row compiled the config its command names, with the dtype and "
        "attention shown; the pretraining configs now default to bf16 compute and "
        "`attention_impl` auto (splash on TPU where it applies), so to repeat a float32 "
        "or default-attention row, set `--config.model.dtype` and "
        "`--config.model.attention_impl` explicitly.",
        "",
        *aot_section(aot),
        "",
        "## GPU",
        "",
    ]
    if gpu:
        lines += throughput_section(gpu)
    else:
        lines += [
            "Not measured yet: no GPU has been available to this project. "
            "`bash experiments/bench_gpu.sh` is prepared for one H100/H200-class GPU (under "
            "8 minutes, mostly compiles): BERT-base at 256 x 128 and BERT-large at 32 x 512 "
            "in bf16 with fp32 master weights, on full rows (with attention dropout, "
            "without it, and with cuDNN attention), then on real Wikipedia lengths unpacked "
            "and packed. `bash experiments/bench_gpu.sh prepare` writes the real-length "
            "batches as .npz files beforehand, so the GPU machine needs no TensorFlow and "
            "no data. Its records go to `docs/results/gpu.jsonl`, and this section and the "
            "goals table read them.",
        ]
    lines += [
        "",
        f"## CPU: {cpu_machine}",
        "",
        "The CPU numbers come from this machine's records only. Settings: `bert_jax/"
        "cpu_env.py` applies glibc malloc tunables (reused step buffers, or huge pages "
        "where buffers are not reused) and XLA:CPU's oneDNN dots when the JAX backend is "
        "the CPU; each has an opt-out, listed in `bert_jax/cpu_env.py`. Rows marked † were "
        "measured with the model's former CPU-only code paths (16-bit dropout masks, "
        "rows-dense layers, vocabulary-major MLM logits); the model now runs the same "
        "code on every platform (flax `nn.Dropout`), and these rows will be replaced "
        "when the runs are repeated.",
        "",
        *machine_section(cpu),
        "",
        "### bert_jax and HF transformers (PyTorch), side by side",
        "",
        "Same architecture, batch, masked positions, optimizer (AdamW, clipping) and "
        "threads; alternating rounds in one run, HF in a process of its own "
        "(`bert_jax.perf.bench_hf.Worker`, glibc's default malloc as HF users run it; "
        "labels ending `-hf-bert-jax-malloc` give it bert_jax's tunables, and the goals "
        "take each framework at its fastest); medians of every timed step. HF gets the "
        "batch padded to its longest row (rounded up to 32); bert_jax runs that batch as "
        "is, and for classification also the same 32 examples packed into rows of 128 "
        "(`data.pack_examples=16`: the same examples and loss, each attending only to "
        "itself). HF has no packed equivalent for this head.",
        "",
        *compare_section(compare),
        "",
        "### CPU process settings, without and with",
        "",
        "glibc reads malloc tunables when a process starts, so without and with are two "
        "runs, back to back.",
        "",
        *settings_section(opt),
        "### Model changes, before and after",
        "",
        "The run before a change is measured on the code before it, in a worktree "
        "(`experiments/performance_runs.sh`); HF's step is timed beside each.",
        "",
        *(model_changes_section(opt) or ["None measured on this machine."]),
        "### Where a CPU step's time goes",
        "",
        "`python -m bert_jax.perf.bench --profile` traces a few steps with XLA:CPU's "
        "per-kernel events and sums each kernel's time by what its HLO computes "
        "(`bert_jax/perf/profile.py`): matmuls, dropout's random bits, layout copies and "
        "transposes, and everything else. Kernels can overlap, so the kinds can add up "
        "to more than the step.",
        "",
        *(profile_section(profiled) if profiled else ["Not profiled on this machine yet."]),
        "",
        "## Sequence packing",
        "",
        "`python -m bert_jax.data.pretraining.pack_records` puts up to K examples in a row "
        "(each attending only to itself); the share of a row's tokens that are real, "
        "before and after, on real text with the original recipe (dupe factor 1). These "
        "are properties of the data, not of a machine:",
        "",
        *packing_section(packing),
        "",
    ]
    if packed_steps:
        lines += [
            "The training step on the first rows of those Wikipedia records at length 512, "
            f"unpacked and packed (small model, fp32, {cpu_machine}):",
            "",
            *packed_step_section(packed_steps),
            "",
        ]
    lines += ["## The training loop and asynchronous checkpoints", ""]
    if trainer:
        lines += [
            "`train.run` on the embedded corpus's records against the step alone on one "
            f"batch ({cpu_machine}):",
            "",
            *trainer_section(trainer),
        ]
    else:
        lines += [
            "Not measured on this machine yet: `python experiments/trainer_overhead.py` "
            "times `train.run` (input pipeline, dispatch, asynchronous checkpoints) against "
            "the step alone and records to `docs/results/trainer.jsonl`.",
        ]
    counts = {"compare": len(compare), "settings": len(opt), "aot": len(aot), "gpu": len(gpu)}
    return lines, counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="docs/results")
    p.add_argument("--out", default="docs/performance.md")
    a = p.parse_args()
    lines, counts = render(Path(a.results))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    Path(a.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {a.out}: " + ", ".join(f"{n} {k}" for k, n in counts.items()) + " rows")


if __name__ == "__main__":
    main()
