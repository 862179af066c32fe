"""Measurement records: the machine they name, and the performance document's
choice of the latest CPU machine's results (`experiments/performance_doc.py`)."""

import importlib.util
import json
from pathlib import Path

from bert_jax.perf import records

ROOT = Path(__file__).resolve().parents[2]
CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: Another CPU
"""


def _doc_module():
    spec = importlib.util.spec_from_file_location(
        "performance_doc", ROOT / "experiments" / "performance_doc.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_machine_names_the_first_cpus_family_and_model(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO)
    m = records.machine(str(info))
    assert (m["cpu"], m["cpu_family"], m["cpu_model"]) == ("AMD EPYC", "26", "2")
    missing = records.machine(str(tmp_path / "absent"))
    assert missing["cpu"] and "cpu_family" not in missing


def _compare(cpu: dict, ours: float, hf: float, mfu: float) -> dict:
    return {
        "label": "compare/small-pretraining-train",
        "step_time_s": ours,
        "hf_step_time_s": hf,
        "mfu": mfu,
        "machine": cpu,
    }


def test_the_latest_cpu_keeps_its_results_and_targets(tmp_path):
    doc = _doc_module()
    old = {"cpu": "AMD EPYC"}  # recorded before the family was
    new = {"cpu": "AMD EPYC", "cpu_family": "26", "cpu_model": "2"}
    path = tmp_path / "cpu.jsonl"
    rows = [_compare(old, 2.5, 5.0, 0.69), _compare(new, 1.3, 5.2, 0.60)]
    rows.append(_compare(new, 1.2, 5.4, 0.68))  # a re-run supersedes its machine's row
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept = doc._rows(path, "label", doc.cpu_name)
    assert [(doc.cpu_name(r), r["step_time_s"]) for r in kept] == [
        ("AMD EPYC (family not recorded)", 2.5),
        ("AMD EPYC (family 26, model 2)", 1.2),
    ]
    # Only the latest machine's records are reported: an older machine's leave the doc.
    assert [r["step_time_s"] for r in doc.latest_machine(kept)] == [1.2]
    table = doc.targets_section(kept, aot=[])
    ratio = [line for line in table if line.startswith("| CPU pretraining step vs HF")]
    assert ratio == ["| CPU pretraining step vs HF (small, 32 x 128, fp32) | 2.5x | 4.50x | yes |"]
    mfu = [line for line in table if "share of the measured matmul rate" in line]
    assert [line.split("|")[3].strip() for line in mfu] == ["68.0%"]
    # A profile run (bert_jax alone) is shown beside; the target is met only if both are.
    alone = _compare(new, 1.1, 0.0, 0.71) | {"label": "profile/small-pretraining-train"}
    table = doc.targets_section(kept, aot=[], alone=[alone | {"variant": "base"}])
    mfu = [line for line in table if "share of the measured matmul rate" in line]
    assert [line.split("|")[3:5] for line in mfu][0] == [
        " 68.0% side by side; 71.0% alone (profile run) ",
        " no ",
    ]
    # Accelerators lead the table, then the CPU.
    first_cpu = next(i for i, line in enumerate(table) if line.startswith("| CPU"))
    tpu = next(i for i, line in enumerate(table) if line.startswith("| TPU v5p predicted MFU"))
    assert tpu < first_cpu


def test_the_document_has_no_changelog_and_names_commands(tmp_path):
    doc = _doc_module()
    lines, _ = doc.render(ROOT / "docs" / "results")
    text = "\n".join(lines)
    assert "Optimisations" not in text and "commit " not in text and "issue " not in text
    assert "../shared" not in text
    # TPU and GPU come before the CPU.
    assert text.index("## TPU") < text.index("## GPU") < text.index("## CPU")
    assert "family not recorded), 2 cores" not in text.split("## CPU")[1]


def test_each_framework_at_its_fastest_malloc():
    doc = _doc_module()
    cpu = {"cpu": "AMD EPYC", "cpu_family": "26", "cpu_model": "2"}
    base = _compare(cpu, 1.0, 5.0, 0.74)
    # HF with bert_jax's malloc tunables ran faster; bert_jax was slower that run.
    faster_hf = _compare(cpu, 1.1, 3.0, 0.70)
    faster_hf["label"] += "-hf-bert-jax-malloc"
    table = doc.targets_section([base, faster_hf], aot=[])
    ratio = [line for line in table if line.startswith("| CPU pretraining step vs HF")]
    assert ratio == [
        "| CPU pretraining step vs HF (small, 32 x 128, fp32) | 2.5x "
        "| 3.00x (each at its fastest malloc) | yes |"
    ]
    assert doc._malloc_runs("compare/minilm-train/packed")[2] == (
        "compare/minilm-train-hf-bert-jax-malloc/packed"
    )
    assert doc._malloc({"glibc_tunables": "glibc.malloc.hugetlb=1"}) == "huge pages"
    tunables = ":".join(("glibc.malloc.hugetlb=1", *doc.cpu_env.REUSE))
    assert doc._malloc({"glibc_tunables": tunables}) == "huge pages, reused buffers"
    assert doc._malloc({}) == "default"


def test_gpu_targets_read_the_gpu_records():
    doc = _doc_module()

    def gpu(model, seq, mfu, device="NVIDIA H200", variant="base"):
        label = f"gpu/{model}-{seq}" + ("" if variant == "base" else f"/{variant}")
        return {"label": label, "variant": variant, "model": model, "seq": seq,
                "dtype": "bfloat16", "device": device, "mfu": mfu}  # fmt: skip

    rows = [
        gpu("base", 128, 0.38),
        gpu("base", 128, 0.43, variant="cudnn"),  # the best variant counts
        gpu("large", 512, 0.50, device="NVIDIA A100-SXM4-80GB"),  # not H100-class
        gpu("large", 512, 0.41),
    ]
    table = doc.targets_section([], aot=[], gpu=rows)
    h100 = [line for line in table if line.startswith("| H100 MFU")]
    assert h100 == [
        "| H100 MFU, large seq 512 bf16 | 45% | 41.0% (NVIDIA H200, gpu/large-512) | no |",
        "| H100 MFU, base seq 128 bf16 | 40% | 43.0% (NVIDIA H200, gpu/base-128/cudnn) | yes |",
    ]
    none = [line for line in doc.targets_section([], aot=[]) if line.startswith("| H100")]
    assert all(line.endswith("| not measured yet (no GPU lent) | - |") for line in none)
