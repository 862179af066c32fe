"""Packed fine-tuning batches: the layout, the model's per-example outputs, the source."""

import itertools

import jax
import numpy as np
import pytest

from bert_jax.data.array_source import ArraySource
from bert_jax.data.pack_examples import pack_batch
from bert_jax.models.bert import config_for_size
from bert_jax.models.heads import BertForSequenceClassification
from tests.numerics import assert_close, assert_equal


def _batch(n=24, width=32, seed=0):
    """Encoded examples of random real lengths 3..width: [CLS] ids [SEP], two segments."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, width + 1, size=n)
    mask = (np.arange(width) < lengths[:, None]).astype(np.int32)
    ids = rng.integers(1000, 5000, size=(n, width)).astype(np.int32) * mask
    ids[:, 0] = 101
    ids[np.arange(n), lengths - 1] = 102
    types = ((np.arange(width) >= lengths[:, None] // 2) * mask).astype(np.int32)
    return {
        "input_ids": ids,
        "token_type_ids": types,
        "attention_mask": mask,
        "label": np.arange(n, dtype=np.int32),  # example id, to follow examples through
        "valid": np.ones(n, np.int32),
    }


def test_every_example_lands_whole_in_one_slot():
    b = _batch()
    b["valid"][[3, 7]] = 0  # an eval batch's padding rows: left out
    p = pack_batch(b, max_per_row=6, row_multiple=4, width_bucket=8)
    rows, width = p["input_ids"].shape
    assert rows % 4 == 0 and width % 8 == 0 and width <= 32
    assert p["cls_positions"].shape == p["label"].shape == p["valid"].shape == (rows, 6)
    seen = []
    for r, k in zip(*np.nonzero(p["valid"]), strict=True):
        i = int(p["label"][r, k])
        n = int(b["attention_mask"][i].sum())
        start = int(p["cls_positions"][r, k])
        span = slice(start, start + n)
        assert_equal(p["input_ids"][r, span], b["input_ids"][i, :n])
        assert_equal(p["token_type_ids"][r, span], b["token_type_ids"][i, :n])
        assert_equal(p["position_ids"][r, span], np.arange(n))
        assert_equal(p["example_ids"][r, span], np.full(n, k + 1))
        seen.append(i)
    assert sorted(seen) == [i for i in range(24) if i not in (3, 7)]
    # Real tokens are all there once; everything else is padding (example id 0).
    assert p["attention_mask"].sum() == b["attention_mask"][b["valid"] > 0].sum()
    assert_equal(p["attention_mask"] > 0, p["example_ids"] > 0)
    # Fewer, fuller rows than the 22 padded ones.
    assert rows < 22


def test_packed_rows_give_each_example_its_unpacked_logits():
    b = _batch(n=12, width=24)
    cfg = config_for_size("tiny", vocab_size=5000, hidden_dropout=0.0, attention_dropout=0.0)
    model = BertForSequenceClassification(cfg, num_labels=3)
    inputs = {k: b[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    params = model.init(jax.random.key(0), **inputs)["params"]
    want = np.asarray(model.apply({"params": params}, **inputs)["logits"])
    p = pack_batch(b, max_per_row=5)
    keys = ("input_ids", "token_type_ids", "attention_mask", "position_ids")
    got = model.apply(
        {"params": params},
        **{k: p[k] for k in keys},
        example_ids=p["example_ids"],
        cls_positions=p["cls_positions"],
    )["logits"]
    slots = np.nonzero(p["valid"])
    assert_close(np.asarray(got)[slots], want[p["label"][slots]], atol=2e-5)


def test_packed_source_serves_every_example_once_per_epoch_on_any_host_count():
    b = _batch(n=96, width=32, seed=1)
    del b["valid"]
    one = ArraySource(b, 16, seed=5, pack_examples=8, pack_row_multiple=2)
    two = [
        ArraySource(
            b, 16, seed=5, process_index=i, process_count=2, pack_examples=8, pack_row_multiple=2
        )
        for i in range(2)
    ]
    epoch = list(itertools.islice(iter(one), one.batches_per_epoch))
    labels = np.concatenate([x["label"][x["valid"] > 0] for x in epoch])
    assert sorted(labels.tolist()) == list(range(96))
    for batch, *shares in zip(epoch, *(iter(s) for s in two), strict=False):
        for k in batch:  # the hosts' rows put together are the one-host batch
            assert_equal(np.concatenate([s[k] for s in shares]), batch[k])
    # Evaluation: every example once, the partial last batch's padding left out.
    ev = ArraySource.for_eval(b, 40, pack_examples=8)
    labels = np.concatenate([x["label"][x["valid"] > 0] for x in ev.one_epoch()])
    assert sorted(labels.tolist()) == list(range(96))


def test_pack_row_multiple_must_split_over_hosts():
    with pytest.raises(ValueError, match="pack_row_multiple 3 is not divisible by 2 hosts"):
        ArraySource(_batch(), 8, process_count=2, pack_examples=4, pack_row_multiple=3)
