"""create_pretraining_data --dynamic and --objective=nsp|sop|none, read back by the loader.

The corpus is the CoNLL-2003 training text (946 news documents, a line per
sentence); the vocabulary is bert-base-uncased.
"""

import collections
import random

import numpy as np
import pytest
import tensorflow as tf

from bert_jax.data.pretraining import create_pretraining_data as cpd
from bert_jax.data.pretraining import instances as recipe
from bert_jax.data.pretraining import loader as pretraining_loader
from bert_jax.data.pretraining import records as pretraining_records
from bert_jax.data.pretraining.masking_vocab import MaskingVocab
from tests.data import original_recipe as orig
from tests.numerics import assert_equal

L, P = 128, 20  # max_seq_length, max_predictions_per_seq
SEED = 7


@pytest.fixture(scope="module")
def conll_file(shared_data, tmp_path_factory):
    """CoNLL-2003 train as BERT text: a document per -DOCSTART-, a line per sentence."""
    docs, doc, sent = [], [], []
    lines = (shared_data / "conll2003" / "train.txt").read_text(encoding="utf-8")
    for line in [*lines.splitlines(), "-DOCSTART-"]:
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
    path = tmp_path_factory.mktemp("conll") / "conll.txt"
    path.write_text("".join("\n".join(d) + "\n\n" for d in docs), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def docs(conll_file, tok):
    """The corpus as the CLI tokenizes it: documents of sentences of ids."""
    return [
        [tok.convert_tokens_to_ids(s) for s in d] for d in orig.read_documents([conll_file], tok)
    ]


def _run(tmp_path, conll_file, vocab_file, name, n_files=1, dynamic=True, **config):
    outs = [str(tmp_path / f"{name}-{i}.tfrecord") for i in range(n_files)]
    counts = cpd.run(
        [conll_file],
        outs,
        vocab_file,
        recipe.RecipeConfig(**config),
        random_seed=SEED,
        num_workers=1,
        dynamic=dynamic,
    )
    return outs, counts


@pytest.fixture(scope="module")
def runs(conll_file, vocab_file, tmp_path_factory):
    """Dynamic runs of each objective (dupe_factor 10 asked, 1 used), and static ones."""
    tmp = tmp_path_factory.mktemp("runs")
    out = {}
    for objective in recipe.OBJECTIVES:
        out[objective] = _run(
            tmp, conll_file, vocab_file, objective, n_files=2, objective=objective, dupe_factor=10
        )
    for objective in ("nsp", "sop"):
        out[f"static-{objective}"] = _run(
            tmp,
            conll_file,
            vocab_file,
            f"static-{objective}",
            n_files=2,
            dynamic=False,
            objective=objective,
            dupe_factor=1,
        )
    return out


def _read(files):
    return [pretraining_records.read_tfrecords(f, L, P) for f in files]


def _unmasked(f):
    """Static feature arrays with the masks undone."""
    ids = f["input_ids"].copy()
    rows, cols = np.nonzero(f["masked_lm_weights"])
    ids[rows, f["masked_lm_positions"][rows, cols]] = f["masked_lm_ids"][rows, cols]
    return ids


def _check_dynamic_layout(files, tok):
    """Exactly the UNMASKED features, padded; [CLS] first, [SEP] last; returns the arrays."""
    assert pretraining_records.check_files(files, L, P) is True
    for f in files:
        for raw in tf.data.TFRecordDataset(f).take(3):
            keys = set(tf.train.Example.FromString(raw.numpy()).features.feature)
            assert keys == set(pretraining_records.UNMASKED)
    got = {k: np.concatenate([g[k] for g in _read(files)]) for k in pretraining_records.UNMASKED}
    n = got["input_mask"].sum(1)
    rows = np.arange(len(n))
    assert (n <= L).all() and (n >= 3).all()
    assert (got["input_mask"] == (np.arange(L)[None] < n[:, None])).all()
    assert (got["input_ids"][got["input_mask"] == 0] == 0).all()
    assert (got["segment_ids"][got["input_mask"] == 0] == 0).all()
    assert (got["input_ids"][:, 0] == tok.cls_id).all()
    assert (got["input_ids"][rows, n - 1] == tok.sep_id).all()
    assert not (got["input_ids"] == tok.mask_id).any()
    return got, n


def test_dynamic_nsp_is_static_unmasked(runs, tok):
    """--dynamic nsp: the static run's (dupe_factor 1) sequences and labels, masks undone."""
    files, counts = runs["nsp"]
    got, n = _check_dynamic_layout(files, tok)
    assert counts["masked"] == 0 and counts["examples"] == len(n) > 3000
    assert 0.45 < got["next_sentence_labels"].mean() < 0.6  # ~0.5 + one-sentence chunks.
    static_files, static_counts = runs["static-nsp"]
    assert static_counts["examples"] == counts["examples"]
    for dyn, static in zip(_read(files), _read(static_files), strict=True):  # Same file split.
        assert_equal(dyn["input_ids"], _unmasked(static))
        for k in ("input_mask", "segment_ids", "next_sentence_labels"):
            assert_equal(dyn[k], static[k], err_msg=k)


class _Locator:
    """Finds token spans in the tokenized corpus: (document, start) of each occurrence."""

    def __init__(self, docs):
        self.docs = [[t for s in d for t in s] for d in docs]
        self.index = collections.defaultdict(list)
        for d, stream in enumerate(self.docs):
            for i in range(len(stream)):
                for k in (1, 2, 3):
                    self.index[tuple(stream[i : i + k])].append((d, i))

    def find(self, span):
        return [
            (d, i)
            for d, i in self.index[tuple(span[:3])]
            if self.docs[d][i : i + len(span)] == span
        ]


def test_sop_pairs_are_consecutive_and_half_swapped(runs, docs, tok):
    files, counts = runs["sop"]
    got, n = _check_dynamic_layout(files, tok)
    labels = got["next_sentence_labels"]
    assert counts["random_next"] == labels.sum()
    locate = _Locator(docs)
    pairs = single = 0
    for ids, seg, length, label in zip(
        got["input_ids"], got["segment_ids"], n, labels, strict=True
    ):
        len_a = int((seg[:length] == 0).sum()) - 2
        a = ids[1 : len_a + 1].tolist()
        if len_a + 2 == length:  # A one-sentence chunk alone: label 0.
            assert label == 0 and locate.find(a)
            single += 1
            continue
        b = ids[len_a + 2 : length - 1].tolist()
        assert (seg[len_a + 2 : length] == 1).all() and ids[len_a + 1] == tok.sep_id
        first, second = (b, a) if label else (a, b)  # Label 1: the record has them swapped.
        # `first` ends where `second` begins in the same document, up to the
        # tokens truncation took from the back of one and the front of the other.
        assert any(
            d1 == d2 and i1 + len(first) <= i2 <= i1 + len(first) + L
            for d1, i1 in locate.find(first)
            for d2, i2 in locate.find(second)
        ), (first, second, label)
        pairs += 1
    # CoNLL has many short documents, so one-sentence chunks (label 0) are
    # ~12% here; among pairs, half are swapped.
    assert pairs > 2000 and single < 0.2 * pairs
    assert abs(labels.sum() / pairs - 0.5) < 0.03


def test_static_sop_is_dynamic_masked(runs):
    """--objective=sop without --dynamic: masked records, the same sequences under the masks."""
    static_files, _ = runs["static-sop"]
    assert pretraining_records.check_files(static_files, L, P) is False
    for dyn, static in zip(_read(runs["sop"][0]), _read(static_files), strict=True):
        assert (static["masked_lm_weights"].sum(1) >= 1).all()
        assert_equal(dyn["input_ids"], _unmasked(static))
        for k in ("input_mask", "segment_ids", "next_sentence_labels"):
            assert_equal(dyn[k], static[k], err_msg=k)


def test_full_sentences_packing(docs, tok):
    """In corpus order: every token once, in order, [SEP] only between documents, greedy."""
    seqs = list(recipe.pack_full_sentences(docs, L, tok.cls_id, tok.sep_id))
    flat = [t for d in docs for s in d for t in s]
    doc_starts, sentence_starts, pos = set(), {}, 0
    for d in docs:
        doc_starts.add(pos)
        for s in d:
            sentence_starts[pos] = len(s)
            pos += len(s)
    out, seps, seq_starts = [], set(), []
    for seq in seqs:
        assert len(seq) <= L and seq[0] == tok.cls_id and seq[-1] == tok.sep_id
        seq_starts.append(len(out))
        for t in seq[1:-1]:
            if t == tok.sep_id:
                seps.add(len(out))
            else:
                out.append(t)
    assert out == flat
    assert seps <= doc_starts and doc_starts - {0} <= seps | set(seq_starts)
    for seq, start in zip(seqs[:-1], seq_starts[1:], strict=True):
        if start in sentence_starts:  # The next sentence (and its [SEP]) did not fit.
            extra = sentence_starts[start] + (start in doc_starts)
            assert len(seq) - 2 + extra > L - 2
        else:  # A sentence longer than a sequence was cut here.
            assert len(seq) == L
    assert np.mean([len(s) for s in seqs]) > 0.85 * L  # Whole ~15-token sentences: ~0.9.


def test_dynamic_none_records(runs, docs, tok):
    """--objective=none: the packed sequences, segment ids and labels 0, in the recipe's order."""
    files, counts = runs["none"]
    got, n = _check_dynamic_layout(files, tok)
    assert (got["segment_ids"] == 0).all() and (got["next_sentence_labels"] == 0).all()
    assert counts["random_next"] == 0 and n.mean() > 0.85 * L
    # One block: the recipe's instances with the block's rng (random_seed itself).
    config = recipe.RecipeConfig(objective="none", dupe_factor=1)
    rng = random.Random(SEED)
    insts = list(
        recipe.generate_instances(
            [list(d) for d in docs],
            rng,
            config,
            MaskingVocab.from_vocab(tok.vocab),
            tok.cls_id,
            tok.sep_id,
        )
    )
    rng.shuffle(insts)  # The block's final shuffle, as create_pretraining_data does.
    assert len(insts) == len(n)
    for j, f in enumerate(_read(files)):  # Round-robin over the two files.
        for inst, ids, mask in zip(insts[j::2], f["input_ids"], f["input_mask"], strict=True):
            want = list(inst.input_ids)
            for p, t in zip(inst.masked_lm_positions, inst.masked_lm_ids, strict=True):
                want[p] = t
            assert ids[: mask.sum()].tolist() == want
    # All corpus tokens, each once (the order is the shuffled documents').
    content = got["input_ids"][(got["input_mask"] == 1) & (got["input_ids"] != tok.cls_id)]
    content = content[content != tok.sep_id]
    assert collections.Counter(content.tolist()) == collections.Counter(
        t for d in docs for s in d for t in s
    )


@pytest.mark.parametrize("objective", recipe.OBJECTIVES)
def test_loader_masks_dynamic_records(runs, tok, objective):
    files, _ = runs[objective]
    loader = pretraining_loader.PretrainingLoader(
        files,
        max_seq_length=L,
        max_predictions=P,
        global_batch_size=8,
        masking_vocab=MaskingVocab.from_vocab(tok.vocab),
    )
    assert loader.dynamic
    it = iter(loader)
    for _ in range(2):
        batch = next(it)
        assert batch["input_ids"].shape == (8, L)
        assert batch["masked_lm_positions"].shape == batch["masked_lm_ids"].shape == (8, P)
        w = batch["masked_lm_weights"]
        assert (w.sum(1) >= 1).all()
        pos, labels = batch["masked_lm_positions"], batch["masked_lm_ids"]
        assert (labels[w > 0] > 0).all() and (labels[w == 0] == 0).all()
        assert (np.take_along_axis(batch["input_mask"], pos, 1)[w > 0] == 1).all()
        shown = np.take_along_axis(batch["input_ids"], pos, 1)[w > 0]
        assert (shown == tok.mask_id).mean() > 0.5


def test_objective_validated():
    with pytest.raises(ValueError, match="objective"):
        recipe.RecipeConfig(objective="mlm")
