"""Tests for create_pretraining_data and pretraining_instances against the original recipe.

The reference is tests/data/original_recipe.py, a transcription of
google-research/bert `create_pretraining_data.py`. The corpora are real text
from the shared data folder: CoNLL-2003 (train+valid+test, 1,393 news
documents, ~15 sentences each) and the SST-2 training sentences grouped into
documents of 1..30 sentences; the vocabulary is bert-base-uncased.
"""

import collections
import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from bert_jax.data.pretraining import corpus
from bert_jax.data.pretraining import create_pretraining_data as cpd
from bert_jax.data.pretraining import instances as recipe
from bert_jax.data.pretraining import records as pretraining_records
from bert_jax.data.pretraining.masking_vocab import MaskingVocab
from tests import train_data
from tests.data import original_recipe as orig
from tests.numerics import assert_equal

REPO = str(Path(__file__).resolve().parents[3])
L, P = 128, 20  # max_seq_length, max_predictions_per_seq


# ------------------------------------------------------------------ corpora


def _write_docs(path, docs):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines("\n".join(d) + "\n\n" for d in docs)
    return str(path)


@pytest.fixture(scope="module")
def mvocab(tok):
    return MaskingVocab.from_vocab(tok.vocab)


@pytest.fixture(scope="module")
def conll_file(shared_data, tmp_path_factory):
    """CoNLL-2003 as BERT text: a document per -DOCSTART-, a line per sentence."""
    docs, doc, sent = [], [], []
    for split in ("train", "valid", "test"):
        lines = (shared_data / "conll2003" / f"{split}.txt").read_text(encoding="utf-8")
        for line in lines.splitlines():
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if sent:
                    doc.append(" ".join(sent))
                    sent = []
                if fields and doc:
                    docs.append(doc)
                    doc = []
            else:
                sent.append(fields[0])
    docs.append(doc + ([" ".join(sent)] if sent else []))
    return _write_docs(tmp_path_factory.mktemp("conll") / "conll.txt", docs)


@pytest.fixture(scope="module")
def sst2_sentences(shared_data):
    lines = (shared_data / "glue" / "SST-2" / "train.tsv").read_text(encoding="utf-8")
    return [line.split("\t")[0].strip() for line in lines.splitlines()[1:]]


@pytest.fixture(scope="module")
def sst2_file(sst2_sentences, tmp_path_factory):
    """SST-2 train sentences in order, grouped into documents of 1..30 sentences."""
    rng, docs, i = random.Random(0), [], 0
    while i < len(sst2_sentences):
        n = rng.randint(1, 30)
        docs.append(sst2_sentences[i : i + n])
        i += n
    return _write_docs(tmp_path_factory.mktemp("sst2") / "sst2.txt", docs)


def _ids_docs(path, tok):
    return [[tok.convert_tokens_to_ids(s) for s in d] for d in orig.read_documents([path], tok)]


@pytest.fixture(scope="module")
def conll_docs(conll_file, tok):
    return _ids_docs(conll_file, tok)


@pytest.fixture(scope="module")
def sst2_docs(sst2_file, tok):
    return _ids_docs(sst2_file, tok)


def _instances(docs, tok, mvocab, seed=1, **config):
    """The recipe on one block, as `create_pretraining_data` runs it: the original's
    `create_training_instances`, its final shuffle included."""
    docs = [list(d) for d in docs]
    cfg = recipe.RecipeConfig(**{"dupe_factor": 1, **config})
    rng = random.Random(seed)
    instances = list(recipe.generate_instances(docs, rng, cfg, mvocab, tok.cls_id, tok.sep_id))
    rng.shuffle(instances)
    return instances


def _segment_ids(inst):
    """0 for [CLS] A [SEP], 1 for B [SEP]."""
    return [0] * (inst.len_a + 2) + [1] * (len(inst.input_ids) - inst.len_a - 2)


# ------------------------------------------------------------ statistics


def _features(instances, tok, max_seq_length=L, max_predictions=P):
    """Original-recipe instances -> padded feature arrays, as the original writes them."""
    rows = [
        orig.instance_features(i, tok.vocab, max_seq_length, max_predictions) for i in instances
    ]
    out = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    out["next_sentence_labels"] = out["next_sentence_labels"][:, 0]
    return out


def _stats(f, mask_id):
    """Recipe statistics of padded feature arrays."""
    n = f["input_mask"].sum(1)
    k = f["masked_lm_weights"].sum(1).astype(int)
    rows = np.repeat(np.arange(len(n)), k)
    pos = np.concatenate([p[:j] for p, j in zip(f["masked_lm_positions"], k, strict=True)])
    labels = np.concatenate([t[:j] for t, j in zip(f["masked_lm_ids"], k, strict=True)])
    shown = f["input_ids"][rows, pos]
    uncapped = np.round(n * 0.15) < P
    return {
        "examples": len(n),
        "tokens_per_example": n.mean(),
        "mask_rate": k[uncapped].sum() / (n[uncapped] - 3).sum(),  # of non-special tokens
        "mask": np.mean(shown == mask_id),
        "keep": np.mean(shown == labels),
        "random_next": f["next_sentence_labels"].mean(),
    }


def _check_layout(f, tok, max_seq_length=L, max_predictions=P):
    """Padding, [CLS]/[SEP] placement, segment lengths and prediction layout."""
    for i in range(len(f["input_ids"])):
        ids, mask, seg = f["input_ids"][i], f["input_mask"][i], f["segment_ids"][i]
        n = int(mask.sum())
        assert n <= max_seq_length and (mask[:n] == 1).all() and (mask[n:] == 0).all()
        assert (ids[n:] == 0).all() and (seg[n:] == 0).all()
        len_a = int((seg[:n] == 0).sum()) - 2
        len_b = n - len_a - 3
        assert len_a >= 1 and len_b >= 1 and len_a + len_b + 3 <= max_seq_length
        assert (seg[: len_a + 2] == 0).all() and (seg[len_a + 2 : n] == 1).all()
        assert ids[0] == tok.cls_id and ids[len_a + 1] == tok.sep_id and ids[n - 1] == tok.sep_id
        k = int(f["masked_lm_weights"][i].sum())
        pos = f["masked_lm_positions"][i]
        assert 1 <= k <= max_predictions and (f["masked_lm_weights"][i][:k] == 1).all()
        assert (pos[k:] == 0).all() and (f["masked_lm_ids"][i][k:] == 0).all()
        assert (np.diff(pos[:k]) > 0).all() and pos[0] > 0 and pos[k - 1] < n - 1
        assert len_a + 1 not in pos[:k]


def _to_features(instances, max_seq_length=L, max_predictions=P):
    """Our instances -> the same padded arrays, without going through TFRecords."""
    f = collections.defaultdict(list)
    for inst in instances:
        n, k = len(inst.input_ids), len(inst.masked_lm_positions)
        f["input_ids"].append(inst.input_ids + [0] * (max_seq_length - n))
        f["input_mask"].append([1] * n + [0] * (max_seq_length - n))
        f["segment_ids"].append(_segment_ids(inst) + [0] * (max_seq_length - n))
        f["masked_lm_positions"].append(inst.masked_lm_positions + [0] * (max_predictions - k))
        f["masked_lm_ids"].append(inst.masked_lm_ids + [0] * (max_predictions - k))
        f["masked_lm_weights"].append([1.0] * k + [0.0] * (max_predictions - k))
        f["next_sentence_labels"].append(int(inst.is_random_next))
    return {k: np.array(v) for k, v in f.items()}


def _assert_same_features(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert_equal(a[k], b[k], err_msg=k)


# ------------------------------------------------------- exact equivalence


@pytest.mark.parametrize(
    "corpus,config",
    [
        ("conll", dict(dupe_factor=2)),
        ("sst2", dict(do_whole_word_mask=True)),
        ("conll", dict(max_seq_length=32, max_predictions_per_seq=3, short_seq_prob=0.5)),
        ("sst2", dict(max_seq_length=512, max_predictions_per_seq=76, masked_lm_prob=0.2)),
    ],
)
def test_instances_identical_to_original(corpus, config, request, tok, mvocab):
    """Same documents, same seed: the same instances, in the same order, as the original."""
    docs = request.getfixturevalue(f"{corpus}_docs")
    mine = _instances(docs, tok, mvocab, seed=12345, **config)
    cfg = recipe.RecipeConfig(**{"dupe_factor": 1, **config})
    tokens = [[tok.convert_ids_to_tokens(s) for s in d] for d in docs]  # The original's input.
    theirs = orig.create_training_instances(
        tokens,
        list(tok.vocab.keys()),
        random.Random(12345),
        max_seq_length=cfg.max_seq_length,
        dupe_factor=cfg.dupe_factor,
        short_seq_prob=cfg.short_seq_prob,
        masked_lm_prob=cfg.masked_lm_prob,
        max_predictions_per_seq=cfg.max_predictions_per_seq,
        do_whole_word_mask=cfg.do_whole_word_mask,
    )
    assert len(mine) == len(theirs) > 1000
    for a, b in zip(mine, theirs, strict=True):
        assert a.input_ids == tok.convert_tokens_to_ids(b.tokens)
        assert _segment_ids(a) == b.segment_ids
        assert a.masked_lm_positions == b.masked_lm_positions
        assert a.masked_lm_ids == tok.convert_tokens_to_ids(b.masked_lm_labels)
        assert a.is_random_next == b.is_random_next


def test_masking_identical_to_original(tok, mvocab, sst2_docs):
    """`mask_tokens` on ids = the original's `create_masked_lm_predictions` on strings."""
    vocab_words = list(tok.vocab.keys())
    for i, doc in enumerate(sst2_docs[:300]):
        ids = [tok.cls_id, *doc[0], tok.sep_id, *[t for s in doc[1:] for t in s], tok.sep_id]
        ids = ids[: L - 1] + [tok.sep_id]
        tokens = tok.convert_ids_to_tokens(ids)
        wwm = i % 2 == 1
        ref = orig.create_masked_lm_predictions(tokens, 0.15, P, vocab_words, random.Random(i), wwm)
        masked, positions, labels = recipe.mask_tokens(
            ids, random.Random(i), mvocab, 0.15, P, whole_word=wwm
        )
        assert masked == tok.convert_tokens_to_ids(ref[0])
        assert positions == ref[1] and labels == tok.convert_tokens_to_ids(ref[2])


# ------------------------------------------------------ recipe statistics


def test_recipe_statistics(conll_docs, tok, mvocab):
    """15% masked, 80/10/10, layout and length limits, on ~10k CoNLL examples."""
    f = _to_features(_instances(conll_docs, tok, mvocab, dupe_factor=2))  # ~10k examples
    _check_layout(f, tok)
    s = _stats(f, tok.mask_id)
    assert s["examples"] > 10_000
    assert abs(s["mask_rate"] - 0.15) < 0.01, s
    assert abs(s["mask"] - 0.8) < 0.02 and abs(s["keep"] - 0.1) < 0.02, s
    assert abs(1 - s["mask"] - s["keep"] - 0.1) < 0.02, s  # Random replacement.
    assert 0.5 < s["random_next"] < 0.62, s  # Single-sentence chunks are always random.


def test_next_sentence_share(sst2_docs, tok, mvocab):
    """1/2 on long documents, more with short ones (a lone sentence is always random)."""
    sentences = [s for d in sst2_docs for s in d]
    long_docs = [sentences[i : i + 300] for i in range(0, len(sentences), 300)]
    long_share = np.mean(
        [i.is_random_next for i in _instances(long_docs, tok, mvocab, short_seq_prob=0)]
    )
    assert abs(long_share - 0.5) < 0.015
    grouped = np.mean([i.is_random_next for i in _instances(sst2_docs, tok, mvocab)])
    assert grouped > long_share + 0.03
    singles = _instances([[s] for s in sentences[:3000]], tok, mvocab)
    assert all(i.is_random_next for i in singles)


def test_whole_word_masking_masks_whole_words(sst2_docs, tok, mvocab):
    insts = _instances(sst2_docs, tok, mvocab, do_whole_word_mask=True)
    pieces = {i for t, i in tok.vocab.items() if t.startswith("##")}
    words_masked = 0
    for inst in insts:
        original = list(inst.input_ids)
        for p, t in zip(inst.masked_lm_positions, inst.masked_lm_ids, strict=True):
            original[p] = t
        words: list[list[int]] = []  # Positions of each word: a start and its "##" pieces.
        for i, t in enumerate(original):
            if t in (tok.cls_id, tok.sep_id):
                continue  # [SEP] does not end a word: the original joins across it.
            if words and t in pieces:
                words[-1].append(i)
            else:
                words.append([i])
        masked = set(inst.masked_lm_positions)
        for word in words:
            hit = len(masked.intersection(word))
            assert hit in (0, len(word)), (inst, word)
            words_masked += len(word) > 1 and hit > 0
    assert words_masked > 500  # Many multi-piece words were masked, always whole.


def test_mask_tokens_statistics(conll_docs, tok, mvocab):
    """Per sequence: the number to predict, sorted positions, 80/10/10, nothing else changed."""
    gen = random.Random(0)
    counts = collections.Counter()
    for doc in conll_docs[:400]:
        ids = [tok.cls_id, *[t for s in doc for t in s][: L - 2], tok.sep_id]
        masked, positions, labels = recipe.mask_tokens(ids, gen, mvocab, 0.15, P)
        assert len(masked) == len(ids) and positions == sorted(set(positions))
        assert labels == [ids[p] for p in positions] and 0 not in positions
        assert len(positions) == recipe.num_to_predict(len(ids), 0.15, P)
        for p in positions:
            counts[
                "mask" if masked[p] == tok.mask_id else "keep" if masked[p] == ids[p] else "r"
            ] += 1
        counts["other_changed"] += sum(
            a != b for i, (a, b) in enumerate(zip(masked, ids, strict=True)) if i not in positions
        )
    total = counts["mask"] + counts["keep"] + counts["r"]
    assert counts["other_changed"] == 0 and total > 5000
    assert abs(counts["mask"] / total - 0.8) < 0.02 and abs(counts["keep"] / total - 0.1) < 0.02


# --------------------------------------------------------------- the CLI


def _run(inputs, outputs, vocab_file, **kwargs):
    config = recipe.RecipeConfig(**{k: kwargs.pop(k) for k in list(kwargs) if k in _CONFIG})
    kwargs.setdefault("num_workers", 1)
    return cpd.run(
        [str(p) for p in inputs], [str(p) for p in outputs], vocab_file, config, **kwargs
    )


_CONFIG = {f.name for f in recipe.RecipeConfig.__dataclass_fields__.values()}


def test_cli_one_block_reproduces_original(conll_file, vocab_file, tok, tmp_path):
    """A corpus in one block: the original's examples, order and round-robin files."""
    outs = [tmp_path / "a.tfrecord", tmp_path / "b.tfrecord"]
    counts = _run([conll_file], outs, vocab_file, dupe_factor=2, random_seed=7)
    ref = orig.run([conll_file], tok, seed=7, dupe_factor=2)
    assert counts["examples"] == len(ref) and counts["documents"] == 1393
    for j, out in enumerate(outs):
        got = pretraining_records.read_tfrecords(str(out), L, P)
        _assert_same_features(got, _features(ref[j::2], tok))
    assert sorted(os.listdir(tmp_path)) == ["a.tfrecord", "b.tfrecord"]  # No temp files left.


def test_encoder_matches_tf_example(conll_docs, tok, mvocab, tmp_path):
    insts = _instances(conll_docs[:30], tok, mvocab, dupe_factor=1)
    path = str(tmp_path / "ref.tfrecord")
    train_data.write_tfrecord(path, _to_features(insts))
    encoder = cpd.ExampleEncoder(L, P, tok.vocab_size)
    for inst, raw in zip(insts, tf.data.TFRecordDataset(path), strict=True):
        assert tf.train.Example.FromString(encoder.encode(inst)) == tf.train.Example.FromString(
            raw.numpy()
        )


def test_cli_blocks_match_original_statistics(sst2_file, vocab_file, tok, tmp_path):
    """Blocks of 400 documents (11 blocks): the original's statistics on the whole corpus."""
    outs = [tmp_path / "out.tfrecord"]
    counts = _run([sst2_file], outs, vocab_file, dupe_factor=2, docs_per_block=400)
    got = pretraining_records.read_tfrecords(str(outs[0]), L, P)
    _check_layout(got, tok)
    ref = _features(orig.run([sst2_file], tok, seed=12345, dupe_factor=2), tok)
    s, r = _stats(got, tok.mask_id), _stats(ref, tok.mask_id)
    assert counts["examples"] == s["examples"]
    assert abs(s["examples"] / r["examples"] - 1) < 0.01, (s, r)
    assert abs(s["tokens_per_example"] / r["tokens_per_example"] - 1) < 0.01, (s, r)
    assert abs(s["mask_rate"] - r["mask_rate"]) < 0.002, (s, r)
    assert abs(s["mask"] - r["mask"]) < 0.01 and abs(s["keep"] - r["keep"]) < 0.01, (s, r)
    assert abs(s["random_next"] - r["random_next"]) < 0.015, (s, r)
    assert counts["masked"] == got["masked_lm_weights"].sum()
    assert counts["random_next"] == got["next_sentence_labels"].sum()


def test_cli_deterministic_across_workers_and_runs(conll_file, vocab_file, tmp_path):
    """In process with 1 worker vs `python -m` with 2 workers: identical bytes."""
    gz = tmp_path / "conll.txt.gz"
    with open(conll_file, "rb") as f, gzip.open(gz, "wb") as g:
        g.write(f.read())
    outs = [tmp_path / f"one-{i}.tfrecord" for i in range(3)]
    counts = _run([gz], outs, vocab_file, dupe_factor=1, docs_per_block=300, random_seed=3)
    assert counts["examples"] > 4000
    two = [tmp_path / f"two-{i}.tfrecord" for i in range(3)]
    cmd = [
        sys.executable,
        "-m",
        "bert_jax.data.pretraining.create_pretraining_data",
        f"--input_file={gz}",
        f"--output_file={','.join(map(str, two))}",
        f"--vocab_file={vocab_file}",
        "--dupe_factor=1",
        "--docs_per_block=300",
        "--random_seed=3",
        "--num_workers=2",
    ]
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "random next" in proc.stderr  # The final summary.
    for a, b in zip(outs, two, strict=True):
        assert a.read_bytes() == b.read_bytes()
    again = [tmp_path / f"again-{i}.tfrecord" for i in range(3)]
    _run([gz], again, vocab_file, dupe_factor=1, docs_per_block=300, random_seed=3)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in outs]


def test_blocks_merge_short_tail(tmp_path):
    path = _write_docs(tmp_path / "t.txt", [[f"doc {i}"] for i in range(24)])
    sizes = [len(b) for b in cpd._blocks([path], 10, "fail", corpus.CorpusStats())]
    assert sizes == [10, 14]  # The 4-document tail joins the block before.
    sizes = [len(b) for b in cpd._blocks([path, path], 10, "fail", corpus.CorpusStats())]
    assert sizes == [10, 10, 10, 10, 8]  # Blocks run across files.


# ------------------------------------------------------------- bad input


def test_bad_input_reported(sst2_sentences, vocab_file, tmp_path):
    good = sst2_sentences[:200]
    path = tmp_path / "in.txt"
    long_line = " ".join(sst2_sentences[:40])  # ~400 wordpieces: longer than any sequence.
    path.write_bytes(
        "\n".join(good[:100]).encode()
        + b"\n\n\x00\x07\n\n"  # A document without any token.
        + b"caf\xe9 au lait\n"  # Latin-1, not UTF-8: line 104.
        + "\n".join([long_line, *good[100:]]).encode()
        + b"\n"
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    out = tmp_path / "out.tfrecord"
    with pytest.raises(ValueError, match=f"{path}:104: not UTF-8"):
        _run([path], [out], vocab_file, dupe_factor=1)
    with pytest.raises(ValueError, match=f"{empty}: no documents"):
        _run([empty, path], [out], vocab_file, dupe_factor=1)
    assert sorted(os.listdir(tmp_path)) == ["empty.txt", "in.txt"]
    counts = _run([path, empty], [out], vocab_file, dupe_factor=1, on_bad_input="skip")
    assert counts["bad_lines"] == 1 and counts["empty_files"] == 1
    # Two blank lines in `empty`, one document of only control characters.
    assert counts["empty_documents"] == 3 and counts["long_sentences"] == 1
    assert counts["documents"] == 2 and counts["sentences"] == 201
    got = pretraining_records.read_tfrecords(str(out), L, P)
    assert len(got["input_ids"]) == counts["examples"]


def test_bad_vocab_named(sst2_file, vocab_file, tmp_path):
    bad = tmp_path / "vocab.txt"
    words = open(vocab_file, encoding="utf-8").read().split("\n")  # noqa: SIM115
    bad.write_text("".join(t + "\n" for t in words if t != "[MASK]"))
    with pytest.raises(ValueError, match=f"{bad}.*MASK"):
        _run([sst2_file], [tmp_path / "o.tfrecord"], str(bad))
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        _run([sst2_file], [tmp_path / "o.tfrecord"], str(tmp_path / "nope.txt"))


def test_failed_run_leaves_no_output(conll_file, vocab_file, tmp_path):
    """Blocks already written when a later file fails: no partial or temp files remain."""
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\n\xff\xfe broken\n")
    outs = [tmp_path / "x.tfrecord", tmp_path / "y.tfrecord"]
    outs[0].write_bytes(b"previous")
    with pytest.raises(ValueError, match=f"{bad}:2: not UTF-8"):
        _run([conll_file, bad], outs, vocab_file, dupe_factor=1, docs_per_block=100)
    assert sorted(os.listdir(tmp_path)) == ["bad.txt", "x.tfrecord"]
    assert outs[0].read_bytes() == b"previous"


def test_a_tfds_text_dataset_gives_the_examples_of_the_same_text_in_a_file(
    shared_data, vocab_file, tmp_path
):
    """Wikipedia-like articles (real SQuAD paragraphs) served as TFDS
    `wikipedia/20230601.en` and written as a BERT text file: the same TFRecords."""
    import tensorflow_datasets as tfds

    data = json.loads((shared_data / "squad" / "v1.1" / "dev-v1.1.json").read_text())
    articles = ["\n".join(p["context"] for p in a["paragraphs"]) for a in data["data"][:12]]
    _write_docs(tmp_path / "wiki.txt", [corpus.split_sentences(a) for a in articles])

    def as_dataset(self, *args, **kwargs):
        del self, args, kwargs
        return tf.data.Dataset.from_tensor_slices({"text": articles, "title": ["t"] * 12})

    from_file = _run([tmp_path / "wiki.txt"], [tmp_path / "file.tfrecord"], vocab_file)
    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        from_tfds = _run(
            ["tfds:wikipedia/20230601.en:train"], [tmp_path / "tfds.tfrecord"], vocab_file
        )
    assert from_tfds["examples"] == from_file["examples"] > 100
    assert (tmp_path / "tfds.tfrecord").read_bytes() == (tmp_path / "file.tfrecord").read_bytes()
