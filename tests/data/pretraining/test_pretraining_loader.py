"""The streaming pretraining loader: exact resume, host sharding, dynamic masking, bad records."""

import numpy as np
import pytest

from bert_jax.data.pretraining import loader as pretraining_loader
from bert_jax.data.pretraining import records as pretraining_records
from bert_jax.data.pretraining.masking_vocab import MaskingVocab
from bert_jax.tokenizers.wordpiece import BertTokenizer
from tests import train_data
from tests.numerics import all_equal, assert_differ, assert_equal

SEQ, PRED = 32, 5


@pytest.fixture(scope="module")
def static_files(shared_data, tmp_path_factory):
    """Four shards of static-masking records made from real SST-2 sentence pairs."""
    d = tmp_path_factory.mktemp("static")
    ex = train_data.make_examples(shared_data, 400, seq_len=SEQ, max_pred=PRED)
    for i in range(4):
        part = {k: v[i::4] for k, v in ex.items()}
        train_data.write_tfrecord(str(d / f"part-{i}.tfrecord"), part)
    return str(d / "part-*.tfrecord")


@pytest.fixture(scope="module")
def dynamic_files(shared_data, tmp_path_factory):
    """Unmasked records (the dynamic layout): the same pairs before masking."""
    d = tmp_path_factory.mktemp("dynamic")
    ex = train_data.make_examples(shared_data, 400, seq_len=SEQ, max_pred=PRED)
    # Undo the masking to get the original sequences back.
    ids = ex["input_ids"].copy()
    for r in range(len(ids)):
        w = ex["masked_lm_weights"][r] > 0
        ids[r, ex["masked_lm_positions"][r][w]] = ex["masked_lm_ids"][r][w]
    keep = {k: v for k, v in ex.items() if k in pretraining_records.UNMASKED}
    keep["input_ids"] = ids
    path = d / "seqs.tfrecord"
    _write_unmasked(path, keep)
    return str(path)


def _write_unmasked(path, arrays):
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as w:
        for i in range(len(arrays["input_ids"])):
            feats = {
                k: tf.train.Feature(int64_list=tf.train.Int64List(value=np.ravel(v[i])))
                for k, v in arrays.items()
            }
            w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())


def _loader(files, **kw):
    args = dict(
        max_seq_length=SEQ, max_predictions=PRED, global_batch_size=16, seed=3, shuffle_buffer=64
    )
    return pretraining_loader.PretrainingLoader(files, **(args | kw))


def _take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_resume_gives_the_exact_next_batch(static_files):
    # 2 shards x 200 records, 8 per shard batch: 25 batches an epoch, so the
    # restart at batch 27 is inside the second epoch.
    straight = _take(_loader(static_files, num_shards=2), 40)
    first = _loader(static_files, num_shards=2)
    _take(first, 27)
    state = first.get_state()
    assert state == {"0": {"epoch": 1, "position": 2}, "1": {"epoch": 1, "position": 2}}
    resumed = _loader(static_files, num_shards=2)
    resumed.set_state(state)
    again = _take(resumed, 13)
    for a, b in zip(straight[27:], again, strict=True):
        for k in a:
            assert_equal(a[k], b[k])
    assert straight[0]["input_ids"].shape == (16, SEQ)


def test_hosts_read_their_shards_and_rebuild_the_same_global_batch(static_files):
    one = _take(_loader(static_files, num_shards=2), 5)
    hosts = [
        _take(_loader(static_files, num_shards=2, process_index=p, process_count=2), 5)
        for p in range(2)
    ]
    for step in range(5):
        glued = np.concatenate([hosts[0][step]["input_ids"], hosts[1][step]["input_ids"]])
        assert_equal(glued, one[step]["input_ids"])
        assert hosts[0][step]["input_ids"].shape == (8, SEQ)
    loader = _loader(static_files, num_shards=2, process_index=1, process_count=2)
    assert loader.my_shards == [1]
    assert loader._shard_files(1, 0) and all(
        f.endswith(("1.tfrecord", "3.tfrecord")) for f in loader._shard_files(1, 0)
    )


def test_epochs_reshuffle(static_files):
    batches = _take(_loader(static_files, num_shards=1), 50)  # 400 records = 25 per epoch
    first = np.concatenate([b["input_ids"] for b in batches[:25]])
    second = np.concatenate([b["input_ids"] for b in batches[25:]])
    assert sorted(map(bytes, first)) == sorted(map(bytes, second))  # same records
    assert_differ(first, second)  # another order


def test_dynamic_masking_statistics(dynamic_files, shared_data):
    tok = BertTokenizer(str(shared_data / "vocab" / "bert-base-uncased" / "vocab.txt"))
    vocab = MaskingVocab.from_vocab(tok.vocab)
    loader = _loader(dynamic_files, masking_vocab=vocab, masked_lm_prob=0.15, global_batch_size=32)
    batches = _take(loader, 40)  # ~3 epochs of 400 sequences
    raw = pretraining_records.read_tfrecords(dynamic_files, SEQ, PRED)
    assert loader.dynamic
    n_pred = n_real = 0
    kinds = {"mask": 0, "same": 0, "other": 0}
    for b in batches:
        w = b["masked_lm_weights"] > 0
        n_pred += w.sum()
        n_real += b["input_mask"].sum()
        for r in range(len(w)):
            pos, labels = b["masked_lm_positions"][r][w[r]], b["masked_lm_ids"][r][w[r]]
            assert np.all(np.diff(pos) > 0)
            now = b["input_ids"][r][pos]
            kinds["mask"] += np.sum(now == tok.vocab["[MASK]"])
            kinds["same"] += np.sum(now == labels)
            kinds["other"] += np.sum((now != labels) & (now != tok.vocab["[MASK]"]))
            assert not np.isin(labels, [tok.vocab["[CLS]"], tok.vocab["[SEP]"], 0]).any()
    total = sum(kinds.values())
    # The original's rate: round(0.15 x all tokens, [CLS]/[SEP] included), at least 1.
    assert abs(n_pred / n_real - 0.15) < 0.01, n_pred / n_real
    assert abs(kinds["mask"] / total - 0.8) < 0.03
    assert abs(kinds["same"] / total - 0.1) < 0.03
    assert abs(kinds["other"] / total - 0.1) < 0.03
    # Fresh masks each epoch: the same sequence is masked differently.
    seen = {}
    differs = 0
    for b in batches:
        for r in range(len(b["input_ids"])):
            key = bytes(b["segment_ids"][r]) + bytes(b["input_mask"][r])
            orig = b["input_ids"][r].copy()
            w = b["masked_lm_weights"][r] > 0
            orig[b["masked_lm_positions"][r][w]] = b["masked_lm_ids"][r][w]
            key += bytes(orig)
            if key in seen and not all_equal(seen[key], b["masked_lm_positions"][r]):
                differs += 1
            seen[key] = b["masked_lm_positions"][r]
    assert differs > 100
    assert len(raw["input_ids"]) == 400


def test_whole_word_masking_masks_whole_words(shared_data):
    tok = BertTokenizer(str(shared_data / "vocab" / "bert-base-uncased" / "vocab.txt"))
    vocab = MaskingVocab.from_vocab(tok.vocab)
    text = "the unbelievably magnificent tokenization of antidisestablishmentarianism"
    ids = np.asarray([tok.encode(text, max_length=24)["input_ids"]] * 64)
    ids = np.pad(ids, ((0, 0), (0, 24 - ids.shape[1])))
    masked, pos, labels, w = pretraining_loader.mask_batch(
        ids, vocab, 8, np.random.default_rng(0), masked_lm_prob=0.3, whole_word=True
    )
    cont = vocab.continuation_array[ids]
    for r in range(len(ids)):
        chosen = set(pos[r][w[r] > 0].tolist())
        for j in chosen:
            if cont[r, j]:
                assert j - 1 in chosen, "a ## piece masked without its word start"
            if j + 1 < ids.shape[1] and cont[r, j + 1]:
                assert j + 1 in chosen, "a word start masked without its ## pieces"


def test_bad_records_name_the_file(tmp_path, static_files):
    empty = tmp_path / "empty.tfrecord"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.tfrecord: contains no records"):
        _loader(str(empty))
    with pytest.raises(ValueError, match=r"part-0.tfrecord: feature 'input_ids' has length 32, "):
        _loader(static_files, max_seq_length=64)
    with pytest.raises(FileNotFoundError, match="no files match"):
        _loader(str(tmp_path / "nothing-*.tfrecord"))
    partial = tmp_path / "partial.tfrecord"
    _write_unmasked(partial, {"input_ids": np.zeros((2, SEQ), np.int64)})
    with pytest.raises(ValueError, match="partial.tfrecord: feature 'input_mask' is missing"):
        _loader(str(partial))
