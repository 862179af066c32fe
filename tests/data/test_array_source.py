"""ArraySource: exact resume, host shares, and the padding cuts (length_bucket, group_by_length)."""

import itertools

import numpy as np
import pytest

from bert_jax.data.array_source import ArraySource
from tests.numerics import assert_differ, assert_equal


def _arrays(n=200, width=64, choices=None, seed=0):
    """Rows with random real lengths (1..width), padded with 0 as the tokenizer pads."""
    rng = np.random.default_rng(seed)
    shape = (n, width) if choices is None else (n, choices, width)
    lengths = rng.integers(1, width + 1, size=shape[:-1])
    mask = (np.arange(width) < lengths[..., None]).astype(np.int32)
    ids = (rng.integers(1, 1000, size=shape) * mask).astype(np.int32)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "label": np.arange(n, dtype=np.int32),  # row id, to follow rows through
    }


def _take(source, n):
    return list(itertools.islice(iter(source), n))


def test_resume_gives_the_exact_next_batches():
    a = _arrays()
    full = ArraySource(a, 32, seed=3, length_bucket=16, group_by_length=True)
    want = _take(full, 14)  # crosses the epoch boundary (6 batches per epoch)
    first = ArraySource(a, 32, seed=3, length_bucket=16, group_by_length=True)
    _take(first, 5)
    again = ArraySource(a, 32, seed=3, length_bucket=16, group_by_length=True)
    again.set_state(first.get_state())
    for w, g in zip(want[5:], _take(again, 9), strict=True):
        assert w.keys() == g.keys()
        for k in w:
            assert_equal(w[k], g[k])


@pytest.mark.parametrize("options", [{}, {"length_bucket": 16, "group_by_length": True}])
def test_host_shares_assemble_the_single_host_batch(options):
    a = _arrays()
    one = _take(ArraySource(a, 32, seed=1, **options), 8)
    hosts = [_take(ArraySource(a, 32, seed=1, process_index=i, process_count=4, **options), 8)
             for i in range(4)]  # fmt: skip
    for step, whole in enumerate(one):
        for k in whole:
            parts = [h[step][k] for h in hosts]
            assert_equal(np.concatenate(parts), whole[k])


def test_length_bucket_cuts_only_padding():
    a = _arrays()
    full = _take(ArraySource(a, 32, seed=2), 6)
    cut = _take(ArraySource(a, 32, seed=2, length_bucket=16), 6)
    for f, c in zip(full, cut, strict=True):
        w = c["input_ids"].shape[1]
        assert w % 16 == 0 and c["attention_mask"].shape == (32, w)
        longest = f["attention_mask"].sum(1).max()
        assert w - 16 < longest <= w  # the smallest multiple of 16 that holds every row
        assert_equal(c["input_ids"], f["input_ids"][:, :w])
        assert not f["attention_mask"][:, w:].any()
        assert_equal(c["label"], f["label"])  # per-row arrays untouched


def test_eval_cut_keeps_every_row_once():
    a = _arrays(n=70)
    batches = list(ArraySource.for_eval(a, 32, length_bucket=8).one_epoch())
    assert [b["input_ids"].shape[1] % 8 for b in batches] == [0, 0, 0]
    valid = np.concatenate([b["valid"] for b in batches])
    rows = np.concatenate([b["label"] for b in batches])[valid > 0]
    assert_equal(rows, np.arange(70))


def test_multiple_choice_rows_are_cut_on_their_longest_choice():
    a = _arrays(n=64, choices=4)
    (batch,) = _take(ArraySource(a, 64, length_bucket=8), 1)
    w = batch["input_ids"].shape[-1]
    assert batch["input_ids"].shape == (64, 4, w)
    assert a["attention_mask"].sum(-1).max() <= w


def test_group_by_length_batches_similar_rows_and_keeps_the_epoch():
    a = _arrays(n=3200 + 7)  # two mega-batches of 50 x 32 and a remainder
    plain = ArraySource(a, 32, seed=5, length_bucket=8)
    grouped = ArraySource(a, 32, seed=5, length_bucket=8, group_by_length=True)
    n = plain.batches_per_epoch
    assert grouped.batches_per_epoch == n == 100
    for epoch in range(2):
        p, g = _take(plain, n), _take(grouped, n)
        rows = np.concatenate([b["label"] for b in g])
        assert len(set(rows)) == len(rows) == 3200  # each row at most once per epoch
        width = lambda bs: np.mean([b["input_ids"].shape[1] for b in bs])  # noqa: E731
        # Uniform lengths 1..64: random batches of 32 nearly always hold a row
        # near 64; sorted ones are as wide as their rows.
        assert width(g) < 0.6 * width(p), (epoch, width(g), width(p))
        spread = [np.ptp(b["attention_mask"].sum(1)) for b in g]
        assert np.median(spread) <= 2
    # Different epochs group differently (the permutation is per epoch).
    first, second = _take(ArraySource(a, 32, seed=5, group_by_length=True), 2 * n)[::n]
    assert_differ(first["label"], second["label"])


def test_bad_options():
    a = _arrays()
    with pytest.raises(ValueError, match="length_bucket must be >= 0"):
        ArraySource(a, 32, length_bucket=-1)
    del a["attention_mask"]
    with pytest.raises(ValueError, match="need an attention_mask"):
        ArraySource(a, 32, group_by_length=True)
