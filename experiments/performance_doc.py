"""Write docs/performance.md from the measurement records; no number is typed by hand.

    python experiments/performance_doc.py [--results=docs/results] [--out=docs/performance.md]

Records are JSON lines appended by `python -m bert_jax.perf.bench --record=...` and
`python -m bert_jax.perf.aot --record=...` (experiments/performance_runs.sh holds
the commands behind the current docs). Each row of the document carries the
command that measured it. Label conventions (`--label`):

* `compare/...`: a side-by-side run with `--compare=hf-torch`;
* `opt/<name>`: an optimisation, measured with `--variant`s in alternating
  rounds; the base run is "before", each variant an "after";
* `profile/...`: a run with `--profile` (kernel time by kind);
* AOT records: one per compiled config and slice.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bert_jax.perf import glibc_malloc, records, xla_cpu_onednn  # noqa: E402


def cpu_name(r: dict) -> str:
    """The CPU a record was measured on, with its family and model where recorded."""
    m = r.get("machine", {})
    if "cpu_family" not in m:
        return f"{m.get('cpu', '?')} (family not recorded)"
    return f"{m['cpu']} (family {m['cpu_family']}, model {m.get('cpu_model', '?')})"


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


def machine_section(rows: list[dict]) -> list[str]:
    seen = collections.OrderedDict()
    for r in rows:
        key = (cpu_name(r), r.get("cores"), r.get("jax"), r.get("torch"), r.get("transformers"))
        seen[key] = None
    out = ["| CPU | cores used | jax | torch | transformers |", "|---|---|---|---|---|"]
    out += [f"| {c} | {n} | {j} | {t or '-'} | {tr or '-'} |" for c, n, j, t, tr in seen]
    return out


def _layout(r: dict) -> str:
    """How bert_jax laid out the batch HF got padded: as HF, or packed (rows)."""
    packed = [o for o in r.get("overrides", []) if o.startswith("data.pack_examples=")]
    if not packed:
        return "as HF"
    return f"packed, {r['rows']} rows (K={packed[-1].split('=')[1]})"


def _malloc(r: dict) -> str:
    """glibc's malloc as the process started (records before the field: default)."""
    tunables = {"GLIBC_TUNABLES": r.get("glibc_tunables", "")}
    return ", ".join(glibc_malloc.enabled(tunables)) or "default"


def _hf_malloc(r: dict) -> str:
    """HF's malloc where it ran in a process of its own (bench_hf.Worker)."""
    if "hf_glibc_tunables" not in r:
        return ""  # the same process, so the same malloc
    return f"; HF {_malloc({'glibc_tunables': r['hf_glibc_tunables']})} (own process)"


def _dots(r: dict) -> str:
    """Where XLA:CPU ran the dots (records before the field: XLA's default)."""
    flags = {"XLA_FLAGS": r.get("xla_flags", "")}
    return "oneDNN" if xla_cpu_onednn.enabled(flags) else "XLA default"


def _masks(r: dict) -> str:
    """bert_jax's dropout masks (records before the field: flax's nn.Dropout)."""
    if r["mode"] == "infer":
        return "- (no dropout)"
    return "16-bit" if r.get("dropout_mask_bits", 32) == 16 else "flax"


def compare_section(rows: list[dict]) -> list[str]:
    out = [
        "| CPU | model | task | mode | batch x seq | dtype | malloc | CPU dots | dropout masks | "
        "bert_jax batch | bert_jax ms/step | HF ms/step | bert_jax / HF speed | real tokens/s | "
        "MFU (of measured matmul) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {cpu_name(r)} | {_model(r)} | {r['task']} | {r['mode']} | {_shape(r)} | "
            f"{r['dtype']} | "
            f"{_malloc(r)}{_hf_malloc(r)} | {_dots(r)} | {_masks(r)} | "
            f"{_layout(r)} | "
            f"{_ms(r['step_time_s'])} | {_ms(r['hf_step_time_s'])} | {r['ratio']:.2f}x | "
            f"{r['tokens_per_s']:,.0f} | {r['mfu']:.1%} of {r['peak_flops'] / 1e9:.0f} GFLOP/s |"
        )
    return out


# Optimisations that are changes to the code, not to the config: before and after
# are two runs (experiments/performance_runs.sh, `at_commit`), at these commits.
CODE_CHANGES = {
    "dense-rows": (
        "before at commit 00d0ddc, after at 078b1ba (models/bert.py `_RowsDense`; XLA:CPU "
        "only since, the same code there)"
    ),
    "dropout-mask-once": (
        "before at commit 1b0a5ee, after at 9ba6919 (models/dropout.py `keep_mask`: the "
        "masks' bytes behind a conditional, so the backward pass reads them)"
    ),
    "dropout-mask-once-classification": (
        "before at commit 1b0a5ee, after at 9ba6919 (as dropout-mask-once)"
    ),
    "mlm-vocab-major": (
        "before at commit 078b1ba, after at eadaa26 (models/heads.py `MlmHead`, "
        "tasks/pretraining.py)"
    ),
}


def optimisation_section(rows: list[dict]) -> list[str]:
    groups: dict[str, list[dict]] = collections.OrderedDict()
    for r in rows:
        name = r["label"].split("/")[1]
        groups.setdefault((name, cpu_name(r)), []).append(r)
    out = []
    for (name, _), group in groups.items():
        base = next(r for r in group if r["variant"] == "base")
        out += [
            f"**{name}** ({_model(base)}, {base['task']} {base['mode']}, {_shape(base)}, "
            f"{base['dtype']}, {base['device']}, {cpu_name(base)}):",
            "",
            "| variant | overrides | ms/step | vs before | MFU | compile s | memory MiB |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in group:
            change = r["step_time_s"] / base["step_time_s"] - 1
            extra = r["overrides"][len(base["overrides"]) :]
            if r.get("glibc_tunables", "") != base.get("glibc_tunables", ""):
                extra = [*extra, f"GLIBC_TUNABLES={r.get('glibc_tunables') or '(unset)'}"]
            out.append(
                f"| {'before' if r is base else r['variant']} | {', '.join(extra) or '-'} | "
                f"{_ms(r['step_time_s'])} | {'' if r is base else f'{change:+.1%}'} | "
                f"{r['mfu']:.1%} | {r['compile_s']:.1f} | {_mib(r['peak_memory_bytes'])} |"
            )
        commands = dict.fromkeys(r["command"] for r in group)  # one, or before and after
        out += ["", *(line for c in commands for line in (f"Command: `{c}`", ""))]
        if name in CODE_CHANGES:
            out += [f"A change to the code: {CODE_CHANGES[name]}, back to back.", ""]
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
            f"| {_model(r)}, {r['task']} {r['mode']}, {_shape(r)}; {cpu_name(r)} | "
            f"{r['variant']} | "
            f"{_ms(r['step_time_s'])} | {' | '.join(cells)} | "
            f"{inside / 1e9:,.0f} GFLOP/s ({inside / r['peak_flops']:.0%} of the measured "
            "matmul rate) |"
        )
    latest = cpu_name(rows[-1])  # the narrative and the kernels: the latest CPU's first run
    first = next(r for r in rows if cpu_name(r) == latest)
    p = first["profile"]
    alone = first["model_flops_per_step"] / (p["ms_by_kind"]["matmul"] / 1e3) / first["peak_flops"]
    matmul_ms, step_ms = p["ms_by_kind"]["matmul"], first["step_time_s"] * 1e3
    if matmul_ms < step_ms:
        reading = (
            f"In the first run on the {latest} the matmul kernels alone take "
            f"{matmul_ms:,.0f} ms a step: "
            f"even if every other kernel cost nothing, its MFU would be {alone:.0%}, since "
            "XLA:CPU's matmuls on these shapes run below its rate on one 2048 x 2048 x "
            "2048 product (the peak MFU is taken against)."
        )
    else:
        reading = (
            f"In the first run on the {latest} the matmul kernels' times add up to "
            f"{matmul_ms:,.0f} ms, "
            f"more than the {step_ms:,.0f} ms step: XLA:CPU runs independent matmuls (a "
            "weight gradient and an input gradient) at once, sharing the two cores, so "
            "their times overlap and the last column understates their rate."
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
    for k in first["profile"]["top_kernels"]:
        out.append(f"| {k['kernel']} | {k['kind']} | {k['ms']:,.1f} | `{k['op_name'][:110]}` |")
    return (
        out
        + ["", "Commands:", ""]
        + [f"- `{c}`" for c in dict.fromkeys(r["command"] for r in rows)]
    )


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
    return out + ["", "Commands:", ""] + sorted({f"- `{r['command']}`" for r in rows})


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
    return out + ["", f"Command: `{rows[0]['command']}`" if rows else ""]


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
    return out + ["", "Commands:", ""] + [f"- `{r['command']}`" for r in rows]


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
    return out + ["", f"Command: `{rows[0]['command']}`" if rows else ""]


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
            f"| {r['label']} | {r['slice']} | {m['num_layers']}/{m['hidden_size']}, {m['dtype']} | "
            f"{r['batch']} x {r['seq']} | {r.get('attention_impl', 'default')} | "
            f"{r['scan_layers']} | {r['remat_policy']} | "
            f"{'yes' if r['fits'] else 'no'} | {mem} | {ratio} | {est} | {mfu} |"
        )
    out += ["", "Commands:", ""]
    out += [f"- `{r['command']}`" for r in rows]
    return out


def targets_section(
    compare: list[dict], aot: list[dict], alone: list[dict] = (), gpu: list[dict] = ()
) -> list[str]:
    """Issue 10's targets against the records (the measured value, or "not measured");
    the CPU targets once for each CPU with records, the latest CPU first."""
    cpus = list(dict.fromkeys(cpu_name(r) for r in reversed(compare))) or ["CPU"]
    alone = [r for r in alone if r["variant"] == "base"]
    out = ["| target | at least | measured | met |", "|---|---|---|---|"]
    for cpu in cpus:
        mine = [r for r in compare + alone if cpu_name(r) == cpu]
        rows = _cpu_targets(mine)
        if len(cpus) > 1:
            rows = [(f"{name}; {cpu}", goal, value) for name, goal, value in rows]
        out += _target_rows(rows)
    return out + _target_rows(_accelerator_targets(aot, gpu))


def _target_rows(rows) -> list[str]:
    out = []
    for name, goal, (value, text) in rows:
        goal_text = f"{goal:.0%}" if goal < 1 else f"{goal}x"
        met = "-" if value is None else ("yes" if value >= goal else "no")
        out.append(f"| {name} | {goal_text} | {text} | {met} |")
    return out


# Side-by-side runs of a label with another malloc: glibc's default for both
# (before HF ran in its own process, the huge-page malloc slowed HF's step), and
# HF with bert_jax's tunables (`--hf_malloc=bert_jax`; reused buffers speed HF's too).
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
        # The side-by-side run's MFU, and where the same CPU has one, the profile
        # run's (bert_jax alone; before reused buffers, bert_jax's step was a few
        # percent slower beside HF's rounds than alone). Met only if both are.
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


# The GPU targets are for one H100; an H200 has the same bf16 peak (989 TFLOP/s,
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
        return (None, "not measured (no GPU lent)")
    return (best["mfu"], f"{best['mfu']:.1%} ({best['device']}, {best['label']})")


def _accelerator_targets(aot: list[dict], gpu: list[dict] = ()) -> list[tuple]:
    base_v5p = [
        r
        for r in aot
        if r["slice"].startswith("v5p")
        and r["model"]["num_layers"] == 12
        and r["seq"] == 128
        and r["batch"] == 256  # the base configuration
        and r.get("predicted_mfu")
    ]
    best = max(base_v5p, key=lambda r: r["predicted_mfu"], default=None)
    tpu = (
        (best["predicted_mfu"], f"{best['predicted_mfu']:.1%} ({best['label']})")
        if best
        else (None, "not measured")
    )
    return [
        ("TPU v5p predicted MFU, base seq 128, batch 256 (AOT)", 0.45, tpu),
        ("H100 MFU, large seq 512 bf16", 0.45, _gpu_mfu(gpu, "large", 512)),
        ("H100 MFU, base seq 128 bf16", 0.40, _gpu_mfu(gpu, "base", 128)),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="docs/results")
    p.add_argument("--out", default="docs/performance.md")
    a = p.parse_args()
    results = Path(a.results)
    cpu = _rows(results / "cpu.jsonl", "label", cpu_name)
    aot = _rows(results / "aot.jsonl", "label", "slice")
    gpu = _rows(results / "gpu.jsonl", "label")
    packing = _rows(results / "packing.jsonl", "corpus", "seq", "examples_per_row")
    trainer = _rows(results / "trainer.jsonl", "label", "model")
    compare = [r for r in cpu if r["label"].startswith("compare/")]
    opt = [r for r in cpu if r["label"].startswith("opt/")]
    packed_steps = [r for r in cpu if r["label"].startswith("packing/")]
    profiled = [r for r in cpu if r["label"].startswith("profile/")]
    lines = [
        "# Performance",
        "",
        "Generated by `python experiments/performance_doc.py` from the records in "
        "`docs/results/` (written by `python -m bert_jax.perf.bench --record` and `python -m "
        "bert_jax.perf.aot --record`; `experiments/performance_runs.sh` runs them all). Every "
        "number below comes from those runs; each table names its command.",
        "",
        "Model FLOPs follow one formula (`bert_jax/flops.py`, also the trainer's "
        "`perf/mfu`): 3 x forward, forward = layers x (2 s (4 d^2 + 2 d f) + 4 s^2 d) + "
        "p (2 d^2 + 2 d V) for the p MLM predictions, on real tokens. MFU on a CPU is "
        "taken against this machine's measured matrix-multiply rate in the same dtype; "
        "on accelerators against the chip's bf16 peak.",
        "",
        "## Targets (issue 10)",
        "",
        *targets_section(compare, aot, profiled, gpu),
        "",
        "## Machines",
        "",
        *machine_section(cpu + gpu),
        "",
        "## CPU: bert_jax and HF transformers (PyTorch), side by side",
        "",
        "Same architecture, batch, masked positions, optimizer (AdamW, clipping) and "
        "threads; alternating rounds in one process; medians of every timed step. HF "
        "gets the batch padded to its longest row (rounded up to 32, as the trainer's "
        "`data.length_bucket`); bert_jax runs that batch as is, and for classification "
        "also the same 32 examples packed into rows of 128 (`data.pack_examples=16`: "
        "the same examples and loss per step, each attending only to itself). HF has "
        "no packed equivalent for this head: its `DataCollatorWithFlattening` joins a "
        "batch into one row for token-level losses, and `BertForSequenceClassification` "
        "pools only a row's first token. Since commit 93d38e1 HF runs in a process of its own "
        "(`bert_jax.perf.bench_hf.Worker`, started fresh with glibc's default malloc, as HF "
        "users run it; still in alternating rounds of one run); before it, both ran in "
        "one process with the same malloc, which slowed HF's step. Labels ending "
        "`-hf-bert-jax-malloc` give HF's process bert_jax's malloc tunables instead "
        "(`--hf_malloc=bert_jax`): the targets take each framework at its fastest. "
        "Malloc (`bert_jax.perf.glibc_malloc`, what `python -m bert_jax.perf.bench` and "
        "`bert_jax.main` set by default since each was added): `huge pages` where the "
        "run started with glibc's malloc on transparent huge pages, `reused buffers` "
        "where freed step buffers stayed in the process (one arena, no mappings, no "
        "trimming; since commit c7f05fe), `default` for glibc's default "
        "(`BERT_JAX_MALLOC_HUGEPAGES=0 BERT_JAX_MALLOC_REUSE=0`, and every run recorded "
        "before). CPU "
        "dots: `oneDNN` where XLA:CPU ran bert_jax's matrix multiplies in oneDNN "
        "(`bert_jax.perf.xla_cpu_onednn`, the CLIs' default on x86-64 since it was added), "
        "`XLA default` for XLA's own choice (YNNPACK and plain dot thunks; "
        "`BERT_JAX_XLA_CPU_ONEDNN=0`, and every run recorded before). Dropout masks: "
        "`16-bit` for bert_jax's own (`models/dropout.py`, four 16-bit uniforms per "
        "Threefry hash; the default on CPU since it was added), `flax` for flax's nn.Dropout "
        "(`model.dropout_mask_bits=32`, and every run recorded before); HF draws its "
        "own. HF's PyTorch is the same in both.",
        "",
        *compare_section(compare),
        "",
        "Commands:",
        "",
        *[f"- `{c}`" for c in dict.fromkeys(r["command"] for r in compare)],
        "",
        "## Optimisations, before and after",
        "",
        "Each measured in one process, the variants in alternating rounds with the "
        "base config (`--variant`; an `xla.` override is an XLA compiler option for "
        "that variant's compile).",
        "",
        *optimisation_section(opt),
        "## Where a CPU step's time goes",
        "",
        "`python -m bert_jax.perf.bench --profile` traces a few more steps with XLA:CPU's "
        "per-kernel events and sums each kernel's time by what its HLO computes "
        "(`bert_jax/perf/profile.py`): matmuls (YNNPACK's, or oneDNN's under "
        "`bert_jax.perf.xla_cpu_onednn`), the dropout masks' random bits (flax's, and the "
        "hash of bert_jax's 16-bit masks since commit 9ba6919; before it that hash "
        "was fused into the selects that apply the masks and counted as other), "
        "layout copies and transposes, and everything else. Kernels can overlap, so "
        "the kinds can add up to more than the step.",
        "",
        *(profile_section(profiled) if profiled else ["Not profiled yet."]),
        "",
        "## Sequence packing: padding that is no longer computed",
        "",
        "`python -m bert_jax.data.pretraining.pack_records` puts up to K examples in a row (each "
        "attending only to itself); the share of a row's tokens that are real, before and "
        "after, on real text with the original recipe (dupe factor 1):",
        "",
        *packing_section(packing),
        "",
        "The training step on the first rows of those Wikipedia records at length 512, "
        "unpacked and packed (small model, fp32, CPU):",
        "",
        *packed_step_section(packed_steps),
        "",
        "## The training loop: input pipeline, dispatch, asynchronous checkpoints",
        "",
        "`train.run` on the embedded corpus's records (its own steps/s, the rows after "
        "compile) against the step alone on one batch (`bert_jax.perf.bench`'s timing). The "
        "loop adds nothing measurable (within the few-percent noise of two processes); a "
        "save in flight every step costs the step time that orbax's serialising takes "
        "from the same two CPU cores (on an accelerator the step does not share them).",
        "",
        *trainer_section(trainer),
        "",
        "## TPU: ahead-of-time compile for slices (no TPU needed)",
        "",
        "`python -m bert_jax.perf.aot` compiles the trainer's sharded step with libtpu on this "
        "CPU. Memory is per chip; the estimate is the compiler's (`optimal_seconds`), "
        "and the predicted MFU is analytical FLOPs / (estimate x bf16 peak). With "
        "scanned layers the compiler counts the layer once, so no estimate is given.",
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
            "Not measured yet: no GPU was lent to the sessions that made these numbers. "
            "`experiments/bench_gpu.sh` prints the table on one GPU in under 8 minutes.",
        ]
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    Path(a.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(
        f"wrote {a.out}: {len(compare)} side-by-side, {len(opt)} optimisation, {len(aot)} AOT rows"
    )


if __name__ == "__main__":
    main()
