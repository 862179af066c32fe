"""Packing pretraining examples several to a row: nothing lost, nothing mixed, the same loss."""

import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from bert_jax import configs, tasks
from bert_jax.data.pretraining import pack_records
from bert_jax.data.pretraining import records as pretraining_records
from tests import train_data
from tests.numerics import assert_close, assert_equal

REPO = Path(__file__).resolve().parents[3]
SEQ, PRED = 32, 5


@pytest.fixture(scope="module")
def examples(shared_data, tmp_path_factory):
    """Real SST-2 sentence pairs in the original layout, of varied real lengths."""
    files = train_data.write_records(shared_data, tmp_path_factory.mktemp("ex"), 192, 64)
    return files, pretraining_records.read_tfrecords(files["train_files"], SEQ, PRED)


def test_best_fit_decreasing_places_every_example_once():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 129, size=2000)
    rows = pack_records.pack_lengths(lengths, 128, 3)
    assert sorted(i for r in rows for i in r) == list(range(2000))
    assert all(len(r) <= 3 and sum(lengths[i] for i in r) <= 128 for r in rows)
    # Fewer rows than one example each, and no fewer than the tokens need.
    assert int(np.ceil(lengths.sum() / 128)) <= len(rows) < 2000
    assert pack_records.pack_lengths(lengths, 128, 3) == rows  # deterministic
    with pytest.raises(ValueError, match=r"lengths must be in 1..128"):
        pack_records.pack_lengths([0, 5], 128, 3)
    # A row's masked positions are bounded too: nothing is dropped.
    preds = np.minimum(20, np.maximum(1, np.round(0.15 * lengths))).astype(int)
    bounded = pack_records.pack_lengths(lengths, 128, 3, preds, 20)
    assert sorted(i for r in bounded for i in r) == list(range(2000))
    assert all(sum(preds[i] for i in r) <= 20 for r in bounded)


def test_packed_rows_unpack_to_the_examples(examples):
    _, ex = examples
    stats = pack_records.PackStats()
    rows = pack_records.pack_arrays(ex, SEQ, 3, PRED, np.random.default_rng(0), stats)
    before, after = stats.efficiency(SEQ)
    assert after > before and stats.rows < stats.examples == 192
    assert stats.dropped_predictions == 0
    unpacked = [e for r in range(stats.rows) for e in pack_records.unpack_row(rows, r)]
    assert len(unpacked) == 192
    # Match every original example to its unpacked copy by its ids.
    originals = {}
    for i in range(192):
        n = int(ex["input_mask"][i].sum())
        originals[tuple(ex["input_ids"][i, :n])] = i
    for e in unpacked:
        i = originals[tuple(e["input_ids"])]
        n = len(e["input_ids"])
        assert_equal(e["segment_ids"], ex["segment_ids"][i, :n])
        assert_equal(e["position_ids"], np.arange(n))
        assert e["next_sentence_label"] == ex["next_sentence_labels"][i]
        real = ex["masked_lm_weights"][i] > 0
        assert_equal(np.sort(e["masked_lm_positions"]), ex["masked_lm_positions"][i][real])
        assert_equal(e["masked_lm_ids"], ex["masked_lm_ids"][i][real])


def test_a_packed_batch_has_the_loss_of_its_examples(examples):
    """The task's MLM and NSP sums over packed rows equal those over the same
    examples one per row (tiny random model, no dropout)."""
    _, ex = examples
    rows = pack_records.pack_arrays(ex, SEQ, 3, PRED, np.random.default_rng(0))
    plain_cfg = configs.load(train_data.PRETRAIN_CONFIG + ":tiny")
    plain_cfg.max_seq_length, plain_cfg.max_predictions_per_seq = SEQ, PRED
    plain_cfg.model.vocab_size = 30522
    packed_cfg = configs.load(train_data.PRETRAIN_CONFIG + ":tiny,pack=3")
    packed_cfg.max_seq_length, packed_cfg.max_predictions_per_seq = SEQ, PRED
    packed_cfg.model.vocab_size = 30522
    plain, packed = tasks.get(plain_cfg), tasks.get(packed_cfg)
    model = plain.model()
    params = model.init(jax.random.key(0), **plain.model_inputs(plain.dummy_batch()))["params"]

    def sums(task, batch):
        out = model.apply({"params": params}, **task.model_inputs(batch), deterministic=True)
        return jax.device_get(task.eval_stats(out, batch))

    a, b = sums(plain, ex), sums(packed, rows)
    assert b["mlm_weight"] == a["mlm_weight"] and b["nsp_count"] == a["nsp_count"] == 192
    for k in ("mlm_loss_sum", "mlm_correct", "nsp_loss_sum", "nsp_correct"):
        assert_close(b[k], a[k], rtol=1e-4, err_msg=k)


def test_cli_writes_records_the_loader_reads(examples, tmp_path):
    files, ex = examples
    out = [tmp_path / "p0.tfrecord", tmp_path / "p1.tfrecord"]
    cmd = [
        sys.executable, "-m", "bert_jax.data.pretraining.pack_records",
        f"--input_file={files['train_files']}",
        f"--output_file={','.join(map(str, out))}", f"--max_seq_length={SEQ}",
        f"--max_predictions_per_seq={PRED}", "--examples_per_row=3",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "192 examples ->" in result.stdout and "packing efficiency" in result.stdout
    rows = pretraining_records.read_tfrecords(f"{tmp_path}/p*.tfrecord", SEQ, PRED, 3)
    assert rows["next_sentence_labels"].shape[1] == 3 and rows["example_ids"].shape[1] == SEQ
    assert int(rows["nsp_weights"].sum()) == 192
    assert int(rows["input_mask"].sum()) == int(ex["input_mask"].sum())
    with pytest.raises(ValueError, match=r"p0.tfrecord: the records are packed with 3 examples"):
        pretraining_records.read_tfrecords(str(out[0]), SEQ, PRED)
    with pytest.raises(ValueError, match=r"the records are not packed; data.examples_per_row"):
        pretraining_records.read_tfrecords(files["train_files"], SEQ, PRED, 3)
