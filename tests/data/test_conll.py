"""Tests for bert_jax.data.conll on the real CoNLL-2003 files and small cases."""

import collections
import re

import numpy as np
import pytest

from bert_jax.data import conll
from bert_jax.tokenizers.wordpiece import BertTokenizer
from tests.data.iob1 import iob2_to_iob1
from tests.numerics import assert_equal

# split: (sentences, documents, words) in the shared copy of CoNLL-2003.
REAL_COUNTS = {
    "train": (14041, 946, 203621),
    "valid": (3250, 216, 51362),
    "test": (3453, 231, 46435),
}
# split: (rows over 128 pieces with [CLS] and [SEP], words truncated away) with
# the bert-base-cased vocab at max_seq_length=128.
REAL_TRUNCATION = {"train": (1, 28), "valid": (4, 39), "test": (2, 18)}
FIRST_WORD = {"train": "EU", "valid": "CRICKET", "test": "SOCCER"}


@pytest.fixture(scope="module")
def real(shared_data):
    """split -> (sentences, stats), read once."""
    return {
        split: conll.read_conll(str(shared_data / "conll2003" / f"{split}.txt"))
        for split in REAL_COUNTS
    }


@pytest.fixture(scope="module")
def tokenizer(shared_data):
    return BertTokenizer(str(shared_data / "vocab" / "bert-base-cased" / "vocab.txt"), False)


def _write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _write_tags(path, sentences, tags) -> str:
    """A CoNLL-2003 file of `sentences` with other NER tags."""
    lines, doc = [], None
    for s, t in zip(sentences, tags, strict=True):
        if s.doc_index != doc:
            lines += ["-DOCSTART- -X- -X- O", ""]
            doc = s.doc_index
        lines += [" ".join(c) for c in zip(s.tokens, s.pos, s.chunk, t, strict=True)] + [""]
    return _write(path, "\n".join(lines) + "\n")


# ------------------------------------------------------------------ reader


@pytest.mark.parametrize("split", list(REAL_COUNTS))
def test_real_files(real, split):
    sentences, stats = real[split]
    n_sentences, n_docs, n_words = REAL_COUNTS[split]
    assert (stats.sentences, stats.documents, stats.tokens) == (n_sentences, n_docs, n_words)
    assert len(sentences) == n_sentences
    assert sum(len(s.tokens) for s in sentences) == n_words
    # Documents are numbered in order, none empty.
    docs = [s.doc_index for s in sentences]
    assert docs == sorted(docs) and set(docs) == set(range(n_docs))
    assert (stats.scheme, stats.scheme_violations, stats.converted_tags) == ("iob2", 0, 0)
    assert (stats.malformed_lines, stats.skipped_sentences, stats.problems) == (0, 0, [])
    tags = collections.Counter(t for s in sentences for t in s.tags)
    assert set(tags) == set(conll.NER_LABELS)
    for s in sentences:
        assert len(s.tokens) == len(s.tags) == len(s.pos) == len(s.chunk) > 0
        assert conll.iob1_to_iob2(s.tags) == list(s.tags)  # Valid IOB2.
    assert (sentences[0].tokens[0], sentences[0].line) == (FIRST_WORD[split], 3)


@pytest.mark.parametrize("split", ["valid", "test"])
def test_iob1_round_trip(real, tmp_path, split):
    sentences, _ = real[split]
    iob1 = [iob2_to_iob1(s.tags) for s in sentences]
    # Entities of one type next to each other keep a B- in IOB1.
    assert any(t.startswith("B-") for tags in iob1 for t in tags)
    path = _write_tags(tmp_path / "iob1.txt", sentences, iob1)
    for scheme in ("iob1", "auto"):
        back, stats = conll.read_conll(path, scheme=scheme)
        assert back == sentences
        assert (stats.scheme, stats.scheme_violations) == ("iob1", 0)
        assert stats.converted_tags == sum(
            a != b
            for s, t in zip(sentences, iob1, strict=True)
            for a, b in zip(s.tags, t, strict=True)
        )
    # Read as IOB2, every I- start breaks the scheme, but the tags are the same.
    back, stats = conll.read_conll(path, scheme="iob2")
    assert back == sentences and stats.scheme_violations == stats.converted_tags > 1000


def test_scheme_helpers():
    iob2 = ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "I-ORG", "O", "B-MISC"]
    iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "I-ORG", "O", "I-MISC"]
    assert iob2_to_iob1(iob2) == iob1
    assert conll.iob1_to_iob2(iob1) == iob2
    assert conll.iob1_to_iob2(iob2) == iob2
    # An IOB2 error is read as conlleval reads it.
    assert conll.iob1_to_iob2(["B-ORG", "I-PER", "O", "I-LOC"]) == ["B-ORG", "B-PER", "O", "B-LOC"]


GOOD = "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n"


@pytest.mark.parametrize(
    "bad_line, why",
    [
        ("Blackburn NNP I-PER", "3 columns, but the first word line has 4"),
        ("Blackburn NNP I-NP I-PER extra", "5 columns"),
        ("Blackburn NNP I-NP X-PER", "invalid NER tag 'X-PER'"),
        ("Blackburn NNP I-NP E-PER", "invalid NER tag 'E-PER'"),
        ("Blackburn NNP I-NP PER", "invalid NER tag 'PER'"),
        ("Blackburn NNP I-NP B-", "invalid NER tag 'B-'"),
    ],
)
def test_malformed_line_fails_or_is_skipped(tmp_path, bad_line, why):
    text = GOOD + bad_line + "\n\nBRUSSELS NNP B-NP B-LOC\n"
    path = _write(tmp_path / "bad.txt", text)
    with pytest.raises(ValueError, match=re.escape(f"{path}:7: {why}")):
        conll.read_conll(path)
    sentences, stats = conll.read_conll(path, on_bad_input="skip")
    assert [s.tokens for s in sentences] == [("EU", "rejects"), ("BRUSSELS",)]
    assert (stats.sentences, stats.malformed_lines, stats.skipped_sentences) == (2, 1, 1)
    assert stats.problems[0][0] == 7 and why in stats.problems[0][1]


def test_skip_counts_several_bad_lines(tmp_path):
    text = GOOD + "A B\nC D E F G\n\nx NN B-NP O\n\ny NN B-NP Y-LOC\nz NN B-NP O\n"
    sentences, stats = conll.read_conll(_write(tmp_path / "bad.txt", text), on_bad_input="skip")
    assert [s.tokens for s in sentences] == [("EU", "rejects"), ("x",)]
    assert (stats.malformed_lines, stats.skipped_sentences) == (3, 2)
    assert [line for line, _ in stats.problems] == [7, 8, 12]


def test_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(GOOD.encode() + "Müller NNP I-NP I-PER\n\nok NN B-NP O\n".encode("latin-1"))
    with pytest.raises(ValueError, match=re.escape(f"{path}:7: not valid UTF-8")):
        conll.read_conll(str(path))
    sentences, stats = conll.read_conll(str(path), on_bad_input="skip")
    assert [s.tokens for s in sentences] == [("EU", "rejects"), ("ok",)]
    assert stats.skipped_sentences == 1


def test_iob2_violations_are_warnings(tmp_path):
    text = GOOD + "Blackburn NNP I-NP I-LOC\n\nin IN B-PP O\nParis NNP B-NP I-LOC\n"
    sentences, stats = conll.read_conll(_write(tmp_path / "v.txt", text))
    assert sentences[1].tags == ("B-PER", "B-LOC")
    assert sentences[2].tags == ("O", "B-LOC")
    assert (stats.scheme, stats.scheme_violations, stats.converted_tags) == ("iob2", 2, 2)
    assert [line for line, _ in stats.problems] == [7, 10]


def test_layout_variants(tmp_path):
    # Sentences before the first -DOCSTART-, a -DOCSTART- without blank lines
    # around it, repeated blank lines, CRLF, no final newline, 2 columns.
    text = "\r\n\r\nA B-PER\r\nb O\r\n-DOCSTART- O\r\nc I-LOC\r\n\r\n\r\n \r\n-DOCSTART- O\r\nd O"
    sentences, stats = conll.read_conll(_write(tmp_path / "two.txt", text))
    assert [(s.tokens, s.tags, s.doc_index, s.line) for s in sentences] == [
        (("A", "b"), ("B-PER", "O"), 0, 3),
        (("c",), ("B-LOC",), 1, 6),
        (("d",), ("O",), 2, 11),
    ]
    assert sentences[0].pos is None and sentences[0].chunk is None
    assert (stats.documents, stats.sentences, stats.tokens) == (3, 3, 4)


def test_bad_arguments(tmp_path):
    path = _write(tmp_path / "a.txt", GOOD)
    for kwargs, message in (
        ({"on_bad_input": "ignore"}, "on_bad_input must be 'fail' or 'skip'"),
        ({"scheme": "bioes"}, "scheme must be"),
    ):
        with pytest.raises(ValueError, match=message):
            conll.read_conll(path, **kwargs)
    with pytest.raises(ValueError, match="one column"):  # No tag column at all.
        conll.read_conll(_write(tmp_path / "words.txt", "EU\nrejects\n"), on_bad_input="skip")


# ---------------------------------------------------------------- features


@pytest.mark.parametrize("split", list(REAL_COUNTS))
def test_first_subword_features_on_real_data(real, tokenizer, split):
    sentences, _ = real[split]
    features, meta = conll.make_features(sentences, tokenizer, conll.NER_LABELS, 128)
    n = len(sentences)
    for key in ("input_ids", "token_type_ids", "attention_mask", "labels"):
        assert features[key].shape == (n, 128) and features[key].dtype == np.int32, key
    assert not features["token_type_ids"].any()
    label_id = {t: i for i, t in enumerate(conll.NER_LABELS)}
    cls, sep = tokenizer.cls_id, tokenizer.sep_id
    for i, s in enumerate(sentences):
        ids, labels, starts = features["input_ids"][i], features["labels"][i], meta.word_starts[i]
        length = int(features["attention_mask"][i].sum())
        assert length == min(meta.num_pieces[i], 128)
        assert ids[0] == cls and ids[length - 1] == sep
        assert (ids[length:] == tokenizer.pad_id).all()
        kept = starts >= 0
        assert kept.sum() + meta.num_truncated[i] == len(s.tokens)
        assert kept[: kept.sum()].all()  # Only the last words are truncated away.
        # Every kept word's first piece carries its tag, and nothing else does.
        expected = np.full(128, -1)
        expected[starts[kept]] = [label_id[t] for t, k in zip(s.tags, kept, strict=True) if k]
        assert_equal(labels, expected)
        for j in range(min(3, int(kept.sum()))):
            assert (
                ids[starts[j]]
                == tokenizer.convert_tokens_to_ids(tokenizer.tokenize(s.tokens[j]))[0]
            )
    long_rows, truncated = int((meta.num_pieces > 128).sum()), int(meta.num_truncated.sum())
    print(f"{split}: {long_rows} sentences over 128 pieces, {truncated} words truncated away")
    assert (long_rows, truncated) == REAL_TRUNCATION[split]
    # Gold labels as predictions give the gold tags back, but truncated words are "O".
    back = conll.predictions_to_tags(np.maximum(features["labels"], 0), meta)
    for s, tags, starts in zip(sentences, back, meta.word_starts, strict=True):
        assert tags == [t if k >= 0 else "O" for t, k in zip(s.tags, starts, strict=True)]


def test_truncation_and_odd_words(tokenizer):
    words = ["Johanson", "\x00", "visited", "Leipzig", "yesterday", "."]
    tags = ["B-PER", "O", "O", "B-LOC", "O", "O"]
    pieces = [tokenizer.tokenize(w) for w in words]
    assert len(pieces[0]) > 1 and pieces[1] == []  # Several pieces; no piece at all.
    sentence = conll.Sentence(tuple(words), tuple(tags))
    # Room for Johanson's pieces, [UNK], "visited" and Leipzig's first piece.
    width = 2 + len(pieces[0]) + 1 + len(pieces[2]) + 1
    features, meta = conll.make_features([sentence], tokenizer, max_seq_length=width)
    ids = features["input_ids"][0]
    starts = [1, 1 + len(pieces[0]), 2 + len(pieces[0]), 2 + len(pieces[0]) + len(pieces[2])]
    assert_equal(meta.word_starts[0], [*starts, -1, -1])
    assert ids[starts[1]] == tokenizer.unk_id and ids[-1] == tokenizer.sep_id
    assert meta.num_truncated[0] == 2
    labels = [-1] * width
    for s, t in zip(starts, [1, 0, 0, 5], strict=True):
        labels[s] = t
    assert features["labels"][0].tolist() == labels
    pred = np.full((1, width), conll.NER_LABELS.index("B-MISC"))
    assert conll.predictions_to_tags(pred, meta) == [["B-MISC"] * 4 + ["O", "O"]]
    # Plain word lists (for prediction) have no labels.
    features, meta = conll.make_features([words], tokenizer, max_seq_length=width)
    assert (features["labels"] == -1).all() and meta.word_starts[0][0] == 1
    with pytest.raises(ValueError, match="tag 'B-FOO' is not in labels"):
        conll.make_features([conll.Sentence(("a",), ("B-FOO",))], tokenizer)


# ------------------------------------------------------------------ output


def test_predictions_file_reads_back_as_the_predictions(real, tokenizer, tmp_path):
    sentences, _ = real["valid"]
    features, meta = conll.make_features(sentences, tokenizer)
    pred = conll.predictions_to_tags(np.maximum(features["labels"], 0), meta)
    text = conll.format_predictions(sentences, pred)
    lines = text.split("\n")
    assert lines[:3] == ["-DOCSTART- -X- -X- O O", "", "CRICKET NNP B-NP O O"]
    assert sum(line.startswith("-DOCSTART-") for line in lines) == 216
    # The gold tag is the 4th column, the prediction the last (what read_conll takes).
    golds = [line.split()[3] for line in lines if line and not line.startswith("-DOCSTART-")]
    assert golds == [t for s in sentences for t in s.tags]
    (tmp_path / "pred.txt").write_text(text)
    predicted, stats = conll.read_conll(str(tmp_path / "pred.txt"))
    assert [list(s.tags) for s in predicted] == pred and stats.documents == 216
    assert [s.tokens for s in predicted] == [s.tokens for s in sentences]
    assert predicted[0].pos == sentences[0].pos and predicted[-1].chunk == sentences[-1].chunk
    with pytest.raises(ValueError, match="3250 sentences but 1 predictions"):
        conll.format_predictions(sentences, pred[:1])


def test_predictions_file_without_pos_columns():
    sentences = [conll.Sentence(("Hi", "Bob"), ("O", "B-PER")), conll.Sentence(("x",), ("O",))]
    assert conll.format_predictions(sentences, [["O", "B-PER"], ["B-LOC"]]) == (
        "-DOCSTART- -X- -X- O O\n\nHi - - O O\nBob - - B-PER B-PER\n\nx - - O B-LOC\n\n"
    )


def test_entities_with_offsets():
    text = "Peter Blackburn  visited the U.S. on 1996-08-22, with EU officials of No. 10."
    words, spans = conll.split_words(text)
    assert words == [
        "Peter", "Blackburn", "visited", "the", "U.S.", "on", "1996-08-22", ",", "with",
        "EU", "officials", "of", "No", ".", "10", ".",
    ]  # fmt: skip
    assert all(text[a:b] == w for w, (a, b) in zip(words, spans, strict=True))
    tags = ["B-PER", "I-PER", "O", "O", "B-LOC", "O", "O", "O", "O", "I-ORG", "O", "O", "B-LOC"]
    tags += ["I-LOC", "I-LOC", "O"]
    assert conll.entities_with_offsets(text, spans, tags) == [
        {"type": "PER", "text": "Peter Blackburn", "start": 0, "end": 15},
        {"type": "LOC", "text": "U.S.", "start": 29, "end": 33},
        {"type": "ORG", "text": "EU", "start": 54, "end": 56},
        {"type": "LOC", "text": "No. 10", "start": 70, "end": 76},
    ]
    with pytest.raises(ValueError, match="16 word spans but 1 tags"):
        conll.entities_with_offsets(text, spans, ["O"])
