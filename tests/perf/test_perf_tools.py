"""The benchmark and the TPU compile check, run small: their numbers are the ones the
formula and the compiler give (timings themselves are measured, not tested)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bert_jax import flops
from bert_jax.models.bert import config_for_size
from bert_jax.perf import aot, bench_inputs
from tests.cli_env import cli_env
from tests.numerics import assert_close, assert_equal

REPO = Path(__file__).resolve().parents[2]


def _run(module: str, *args: str, expect: int = 0) -> tuple[dict, str]:
    """The last stdout line's JSON, and stdout followed by stderr."""
    env = cli_env(1)
    # libtpu takes a lock file per machine; two test workers compiling at once
    # would fail on it (compiling only, they share no TPU).
    env["ALLOW_MULTIPLE_LIBTPU_LOAD"] = "1"
    cmd = [sys.executable, "-m", module, *args]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == expect, out.stdout[-2000:] + out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stdout + out.stderr


def test_bench_side_by_side_reports_the_formula(tmp_path):
    record = tmp_path / "bench.jsonl"
    r, text = _run(
        "bert_jax.perf.bench", "--model=tiny", "--batch=4", "--seq=32", "--predictions=5",
        "--steps=2", "--rounds=1", "--warmup=1", "--compare=hf-torch", f"--record={record}",
        "--label=test", "--set=model.hidden_dropout=0.0",
        "--variant=noattn:model.attention_dropout=0.0;model.scan_layers=True", "--profile",
    )  # fmt: skip
    assert "bert_jax is" in text and "as fast" in text and "bert_jax base:" in text
    # Pretraining rows are full: 4 x 32 real tokens, 5 predictions each.
    assert r["real_tokens_per_step"] == 128 and r["seq"] == 32
    expected = flops.train_flops(
        config_for_size("tiny", vocab_size=30522),
        {"tokens": 128, "tokens_sq": 4 * 32**2, "predictions": 20},
    )
    assert_close(r["model_flops_per_step"], expected, rtol=1e-9)
    assert_close(r["tokens_per_s"], 128 / r["step_time_s"], rtol=1e-9)
    assert_close(r["mfu"], expected / r["step_time_s"] / r["peak_flops"], rtol=1e-9)
    assert_close(r["ratio"], r["hf_step_time_s"] / r["step_time_s"], rtol=1e-9)
    # HF ran in its own process, with glibc's default malloc (bench_hf.Worker).
    assert "hugetlb" not in r["hf_glibc_tunables"] and r["torch"].startswith("2.")
    assert r["peak_source"] == "measured matmul" and r["peak_flops"] > 1e9
    assert r["compile_s"] > 0 and r["peak_memory_bytes"] > 1e6
    assert r["overrides"] == ["model.hidden_dropout=0.0"]
    # A variant: timed in the same rounds, its overrides on top of --set.
    (v,) = r["variants"]
    assert v["variant"] == "noattn" and v["label"] == "test/noattn"
    assert v["overrides"] == [
        "model.hidden_dropout=0.0",
        "model.attention_dropout=0.0",
        "model.scan_layers=True",
    ]
    assert v["model_flops_per_step"] == r["model_flops_per_step"] and v["step_time_s"] > 0
    # --profile: the kernels' time by kind. Attention dropout is the only dropout
    # left on in the base run, and the variant turns it off: its RNG time is 0.
    for run, rng in ((r, True), (v, False)):
        p = run["profile"]
        assert all(math.isfinite(ms) for ms in p["ms_by_kind"].values()), p["ms_by_kind"]
        assert_close(sum(p["ms_by_kind"].values()), p["kernel_ms"], rtol=1e-9)
        assert p["ms_by_kind"]["matmul"] > 0 and p["ms_by_kind"]["other"] > 0
        assert (p["ms_by_kind"]["dropout RNG"] > 0) == rng, p["ms_by_kind"]
        assert p["top_kernels"][0]["ms"] >= p["top_kernels"][-1]["ms"] > 0
    assert "where base's time goes" in text
    rows = [json.loads(x) for x in record.read_text().splitlines()]
    assert [x["label"] for x in rows] == ["test", "test/noattn"]
    assert rows[0]["step_time_s"] == r["step_time_s"]
    assert rows[0]["machine"]["cpu"] and rows[0]["command"].startswith(
        "python -m bert_jax.perf.bench"
    )


def test_bench_classification_inference_on_real_sentences(shared_data):
    r, _ = _run(
        "bert_jax.perf.bench", "--model=tiny", "--task=classification", "--mode=infer",
        "--batch=8", "--seq=128", "--steps=2", "--rounds=1", "--warmup=1",
        f"--text_file={shared_data / 'glue/SST-2/dev.tsv'}",
        f"--vocab_file={shared_data / 'vocab/bert-base-uncased/vocab.txt'}",
    )  # fmt: skip
    # Real SST-2 lengths: the batch is cut to its longest row, rounded up to 32.
    assert r["seq"] in (32, 64, 96) and 8 * 5 < r["real_tokens_per_step"] < 8 * r["seq"]
    assert r["mode"] == "infer" and r["task"] == "classification"


def test_aot_compiles_tiny_for_a_v5p_slice(tmp_path):
    record = tmp_path / "aot.jsonl"
    r, text = _run(
        "bert_jax.perf.aot", "--config=configs/pretrain.py:tiny", "--topology=v5p-8",
        f"--record={record}",
    )  # fmt: skip
    assert r["fits"] and "fits" in text
    # Progress while it works, in order; libtpu is told the target slice, so it
    # does not warn that it could not find a TPU VM's accelerator type.
    progress = [line for line in text.splitlines() if line.startswith("bert_jax.perf.aot: ")]
    assert [line.split(": ")[1].split(" ")[0] for line in progress] == [
        "compiling",
        "lowered",
        "compiled",
    ], progress
    assert "for v5p-8 (4 chips, topology v5:2x2x1)" in progress[0]
    assert "accelerator type" not in text, text[-3000:]
    assert r["chips"] == 4 and r["device"] == "TPU v5" and r["mesh"]["data"] == 4
    assert 0 < r["memory_total_bytes"] < r["hbm_bytes"] == 95 * 2**30
    assert r["memory_argument_bytes"] > 0 and r["memory_temp_bytes"] > 0
    # The analytical count and the compiler's agree within the formula's omissions.
    assert 0.8 < r["compiled_flops_per_chip"] / r["analytical_flops_per_chip"] < 1.5
    assert r["estimated_step_s"] > 0 and 0 < r["predicted_mfu"] < 1
    assert_close(
        r["predicted_mfu"],
        r["analytical_flops_per_chip"] / r["estimated_step_s"] / 459e12,
        rtol=1e-9,
    )
    assert json.loads(record.read_text())["slice"] == "v5p-8"


def test_aot_compiles_a_distillation_step_with_its_teacher(tmp_path):
    """configs/distill.py: the teacher (`Task.frozen`) is planned and sharded like the
    student's params and compiled into the step."""
    import jax

    from bert_jax import sharding
    from bert_jax.checkpoints import pretrained
    from bert_jax.models.heads import BertForPreTraining

    teacher = BertForPreTraining(config_for_size("tiny", num_layers=2, vocab_size=8000))
    ids = np.zeros((1, 8), np.int32)
    params = teacher.init(jax.random.key(0), ids, ids, ids, masked_positions=ids[:, :2])
    pretrained.save(tmp_path / "teacher", teacher, sharding.unboxed(params["params"]))
    r, text = _run(
        "bert_jax.perf.aot", f"--config=configs/distill.py:tiny,teacher={tmp_path / 'teacher'}",
        "--topology=v5p-8",
    )  # fmt: skip
    assert r["fits"] and r["frozen_model"]["num_layers"] == 2 and r["model"]["num_layers"] == 1
    assert "frozen model (teacher)" in text and r["memory_argument_bytes"] > 0


def test_aot_says_what_does_not_fit():
    r, text = _run(
        "bert_jax.perf.aot", "--config=configs/pretrain.py:tiny", "--topology=v5e-1",
        "--config.train_batch_size=16384", "--config.max_seq_length=512",
        "--config.max_predictions_per_seq=80", expect=1,
    )  # fmt: skip
    assert not r["fits"] and "DOES NOT FIT" in text
    assert "Ran out of memory" in r["why"] or "RESOURCE_EXHAUSTED" in r["why"]


def test_aot_names_the_known_slices_and_flags_scan_estimates():
    with pytest.raises(ValueError, match=r"unknown TPU slice 'v5p-7'; known: v4-8, .*v6e-256"):
        aot.compile_for_slice(None, "v5p-7")
    # The command: one line, exit status 1, before libtpu or a compile.
    cmd = [sys.executable, "-m", "bert_jax.perf.aot", "--config=configs/pretrain.py:tiny"]
    out = subprocess.run(
        [*cmd, "--topology=v5p-7"], cwd=REPO, env=cli_env(1), capture_output=True, text=True
    )
    assert out.returncode == 1 and not out.stdout, out.stderr[-2000:]
    (line,) = out.stderr.splitlines()
    assert line.startswith("bert_jax.perf.aot: error: unknown TPU slice 'v5p-7'; known: v4-8, ")
    assert aot.SLICES["v5p-8"].topology == "v5:2x2x1"  # 4 chips, 8 TensorCores
    assert aot.SLICES["v5e-16"].topology == "v5e:4x4" and aot.SLICES["v6e-8"].topology == "v6e:2x4"
    _, text = _run(
        "bert_jax.perf.aot", "--config=configs/pretrain.py:tiny", "--topology=v6e-4",
        "--config.model.scan_layers=True",
    )  # fmt: skip
    assert "no time estimate: the compiler counts a scanned layer once" in text


def test_aot_compiles_splash_attention_for_tpu():
    """attention_impl=splash: the Pallas kernel compiles inside the sharded step (Mosaic
    custom calls: forward, and dq and dkv in the backward pass, per layer), with packed
    rows (example ids as its segment ids; unpacked rows pass 1/0 segments to the same
    kernels, and tests/models/test_splash.py runs both through the interpreter)."""
    r, text = _run(
        "bert_jax.perf.aot", "--config=configs/pretrain.py:tiny,pack=3", "--topology=v5p-8",
        "--config.model.attention_impl=splash", "--config.model.attention_dropout=0.0",
        "--config.max_seq_length=128",
    )  # fmt: skip
    assert r["fits"] and r["attention_impl"] == "splash"
    assert r["pallas_kernels"] >= 3 * 2, r["pallas_kernels"]  # 2 layers
    assert "Pallas (Mosaic) kernels in the compiled step" in text


def test_bench_saves_a_records_batch_and_times_it_without_tensorflow(shared_data, tmp_path):
    """--save_batch writes the real rows a --records run times; --records=FILE.npz reads
    them back with numpy only (a GPU box has no TensorFlow and no ../shared)."""
    from tests import train_data

    examples = train_data.make_examples(shared_data, 12, seq_len=32, max_pred=5)
    records = tmp_path / "train.tfrecord"
    train_data.write_tfrecord(str(records), examples)
    saved = tmp_path / "batch.npz"
    args = ["--model=tiny", "--batch=8", "--seq=32", "--predictions=5"]
    out = subprocess.run(
        [sys.executable, "-m", "bert_jax.perf.bench", *args, f"--records={records}",
         f"--save_batch={saved}"],
        cwd=REPO, env=cli_env(1), capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"wrote {saved}: 8 rows of 32" in out.stdout
    with np.load(saved) as batch:
        for key in ("input_ids", "input_mask", "masked_lm_positions", "masked_lm_ids"):
            assert_equal(batch[key], examples[key][:8].astype(batch[key].dtype))
    # Timed from the file in a process where TensorFlow cannot be imported.
    blocked = (
        "import sys, runpy; sys.modules['tensorflow'] = None; sys.argv = ['bench', *sys.argv[1:]]; "
    )
    blocked += "runpy.run_module('bert_jax.perf.bench', run_name='__main__')"
    out = subprocess.run(
        [sys.executable, "-c", blocked, *args, f"--records={saved}", "--steps=1", "--rounds=1",
         "--warmup=0"],
        cwd=REPO, env=cli_env(1), capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["real_tokens_per_step"] == int(examples["input_mask"][:8].sum())
    with pytest.raises(ValueError, match="rows of length 32, not --seq=64"):
        bench_inputs.records_batch(str(saved), 8, 64, 5)
    with pytest.raises(ValueError, match="8 rows, fewer than batch 9"):
        bench_inputs.records_batch(str(saved), 9, 32, 5)
