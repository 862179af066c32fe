"""Tests for bert_jax.data.pretraining.corpus and bert_jax.data.pretraining.embedded_corpus."""

import gzip
import re

import numpy as np
import pytest

from bert_jax.data.pretraining import corpus, embedded_corpus

# Leading, repeated and whitespace-only blank lines, a one-sentence document,
# stray spaces, no final newline.
TEXT = "\n  A first line.  \nA second line.\n\n\n \nOnly sentence.\n\nLast one.\nReally last."
DOCS = [["A first line.", "A second line."], ["Only sentence."], ["Last one.", "Really last."]]


def _write(path, data: bytes):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)
    return str(path)


# ---------------------------------------------------------------- text files


def test_documents_split_on_blank_lines(tmp_path):
    stats = corpus.CorpusStats()
    docs = list(corpus.text_file_documents(_write(tmp_path / "a.txt", TEXT.encode()), stats=stats))
    assert docs == DOCS  # The one-sentence document is kept.
    assert (stats.files, stats.documents, stats.sentences) == (1, 3, 5)
    assert stats.empty_documents == 3  # The leading blank line and two repeats.


def test_gzip_reads_like_plain(tmp_path):
    path = _write(tmp_path / "a.txt.gz", TEXT.encode())
    assert list(corpus.text_file_documents(path)) == DOCS


@pytest.mark.parametrize("name", ["out.txt", "out.txt.gz"])
def test_write_text_corpus_round_trips(tmp_path, name):
    docs = [*DOCS, [], ["  spaced \n out  ", ""]]  # Empty ones are dropped.
    stats = corpus.write_text_corpus(docs, str(tmp_path / name))
    assert (stats.documents, stats.sentences) == (4, 6)
    assert list(corpus.text_file_documents(str(tmp_path / name))) == [*DOCS, ["spaced out"]]


def test_missing_pattern_fails_at_the_call(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path}/nope.txt")):
        corpus.text_documents(f"{tmp_path}/nope.txt")  # Not at the first document.


def test_text_documents_reads_files_in_sorted_order(tmp_path):
    _write(tmp_path / "b.txt", b"Second.\n")
    _write(tmp_path / "a.txt.gz", b"First.\n")
    stats = corpus.CorpusStats()
    docs = list(corpus.text_documents(f"{tmp_path}/*", stats=stats))
    assert docs == [["First."], ["Second."]] and stats.files == 2


def test_non_utf8_line_fails_with_file_and_line(tmp_path):
    path = _write(tmp_path / "bad.txt", b"Good.\n\nAlso good.\nBad \xff byte.\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:4")):
        list(corpus.text_file_documents(path))


def test_non_utf8_line_skipped_and_counted(tmp_path, caplog):
    path = _write(tmp_path / "bad.txt.gz", b"Good.\nBad \xff.\n\n\xc3(\n\nFine.\n\xfe\n")
    stats = corpus.CorpusStats()
    docs = list(corpus.text_file_documents(path, on_bad_input="skip", stats=stats))
    assert docs == [["Good."], ["Fine."]]
    assert stats.skipped_lines == 3
    assert stats.skipped == [f"{path}:2", f"{path}:4", f"{path}:7"]
    assert stats.empty_documents == 1  # The document whose one line was skipped.
    assert "3 non-UTF-8 lines skipped" in stats.summary()
    assert f"{path}: skipped 3 lines that are not UTF-8" in caplog.text


@pytest.mark.parametrize("data", [b"", b"\n \n\t\n"])
def test_empty_file_is_reported(tmp_path, data, caplog):
    path = _write(tmp_path / "empty.txt", data)
    stats = corpus.CorpusStats()
    assert list(corpus.text_file_documents(path, on_bad_input="skip", stats=stats)) == []
    assert stats.empty_files == [path] and path in stats.summary()
    assert any(path in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    with pytest.raises(ValueError, match=re.escape(f"{path}: no documents")):
        list(corpus.text_file_documents(path))  # "fail", the default.


def test_bad_policy_rejected(tmp_path):
    path = _write(tmp_path / "a.txt", b"x\n")
    with pytest.raises(ValueError, match="on_bad_input must be 'fail' or 'skip', got 'ignore'"):
        next(corpus.text_file_documents(path, on_bad_input="ignore"))
    with pytest.raises(ValueError, match="on_bad_input"):
        corpus.text_documents(path, on_bad_input="warn")  # At the call.


@pytest.mark.parametrize("name", ["big.txt", "big.txt.gz"])
def test_streams_lazily(tmp_path, name):
    # The first document comes before the reader reaches a bad line ~4 MB in
    # (far past any read buffer): the file is read as it is consumed.
    filler = b"Filler sentence number one.\n" * 150_000
    path = _write(tmp_path / name, b"First doc.\n\n" + filler + b"\xff\n")
    docs = corpus.text_file_documents(path)
    assert next(docs) == ["First doc."]
    with pytest.raises(ValueError, match=re.escape(f"{path}:150003")):
        next(docs)


# ----------------------------------------------------------- sentence split


@pytest.mark.parametrize(
    "text, sentences",
    [
        (
            "Mr. Smith paid $3.14 at 5 p.m. today. Then he left!",
            ["Mr. Smith paid $3.14 at 5 p.m. today.", "Then he left!"],
        ),
        (
            'He said "Stop." Then he left. "Why?" she asked.',
            ['He said "Stop."', "Then he left.", '"Why?" she asked.'],
        ),
        ("Use e.g. Python or i.e. Jax. Both work.", ["Use e.g. Python or i.e. Jax.", "Both work."]),
        (
            "The U.S. Army won. J. R. R. Tolkien wrote.",
            ["The U.S. Army won.", "J. R. R. Tolkien wrote."],
        ),
        (
            "Wait... What? Yes… No. See Fig. 3 now.",
            ["Wait... What?", "Yes… No.", "See Fig. 3 now."],
        ),
        ("It rose 2.5% in 2019. 2020 was worse.", ["It rose 2.5% in 2019.", "2020 was worse."]),
        ("No. 5 is fine. No. It is not.", ["No. 5 is fine.", "No.", "It is not."]),
        ("Really?! (Yes.) Next one.", ["Really?!", "(Yes.)", "Next one."]),
        ("a line\n  another   line. \n\n", ["a line", "another line."]),
        ("no caps. after this.", ["no caps. after this."]),
        ("Ends with space. ", ["Ends with space."]),
        ("", []),
    ],
)
def test_split_sentences(text, sentences):
    assert corpus.split_sentences(text) == sentences


# --------------------------------------------------------------------- TFDS


def test_tfds_documents_on_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=5):
        docs = list(corpus.tfds_documents("imdb_reviews", split="test"))
        assert list(corpus.tfds_documents("imdb_reviews", split="test")) == docs
    # Random strings: only the plumbing is checked.
    assert 1 <= len(docs) <= 5
    assert all(doc and all(isinstance(s, str) and s for s in doc) for doc in docs)


def _wikipedia(texts):
    """`mock_data` serving these article texts as TFDS wikipedia."""
    import tensorflow as tf

    def as_dataset(self, *args, **kwargs):
        del self, args, kwargs
        return tf.data.Dataset.from_tensor_slices({"text": texts, "title": ["t"] * len(texts)})

    return as_dataset


def test_tfds_documents_split_each_example_and_count():
    import tensorflow_datasets as tfds

    texts = ["First sentence. Second one!\nA new paragraph.", "   ", "Only one here."]
    stats = corpus.CorpusStats()
    with tfds.testing.mock_data(as_dataset_fn=_wikipedia(texts)):
        docs = list(corpus.text_documents("tfds:wikipedia/20230601.en:train", stats=stats))
    # The blank example is dropped and counted.
    assert docs == [["First sentence.", "Second one!", "A new paragraph."], ["Only one here."]]
    assert (stats.documents, stats.sentences, stats.empty_documents) == (2, 4, 1)
    with tfds.testing.mock_data(as_dataset_fn=_wikipedia(["  "])):
        with pytest.raises(ValueError, match=r"TFDS wikipedia/20230601.en split 'train': no doc"):
            list(corpus.source_documents("tfds:wikipedia/20230601.en"))
        assert (
            list(corpus.source_documents("tfds:wikipedia/20230601.en", on_bad_input="skip")) == []
        )


def test_tfds_sources_mix_with_files_and_bad_specs_are_named(tmp_path):
    _write(tmp_path / "a.txt", b"One.\n")
    assert corpus.expand_sources(f"{tmp_path}/*.txt, tfds:c4/en:train[:1%]") == [
        "tfds:c4/en:train[:1%]",
        str(tmp_path / "a.txt"),
    ]
    with pytest.raises(ValueError, match=r"expected tfds:NAME\[:SPLIT\[:FEATURE\]\]"):
        corpus.source_documents("tfds:a:b:c:d")


def test_tfds_unknown_feature_lists_features():
    import tensorflow_datasets as tfds

    with (
        tfds.testing.mock_data(num_examples=1),
        pytest.raises(ValueError, match=re.escape("['label', 'text']")),
    ):
        list(corpus.tfds_documents("imdb_reviews", text_feature="review"))


# ---------------------------------------------------------- embedded corpus


@pytest.fixture(scope="module")
def embedded():
    return list(embedded_corpus.embedded_documents())


def test_embedded_corpus_is_deterministic(embedded):
    assert list(embedded_corpus.embedded_documents(max_documents=30)) == embedded[:30]


def test_embedded_corpus_size(embedded):
    sentences = [s for doc in embedded for s in doc]
    # CPython 3.11.7 gives 464 documents, 16,186 sentences, 1.33 MB.
    assert len(embedded) > 300 and len(sentences) > 10_000
    assert sum(len(s) for s in sentences) > 1_000_000
    assert all(len(doc) >= 2 for doc in embedded)
    assert all(len(s.split()) >= 3 and s == s.strip() and "\n" not in s for s in sentences)
    # No doctests or reST markup (prose may still mention ">>>").
    assert not any(s.startswith(">>>") or "``" in s or ":func:`" in s for s in sentences)


def test_embedded_corpus_min_sentences_and_max_documents():
    docs = list(embedded_corpus.embedded_documents(max_documents=5, min_sentences=20))
    assert len(docs) == 5 and all(len(d) >= 20 for d in docs)


def test_embedded_corpus_is_real_english(embedded, shared_data):
    vocab = set((shared_data / "vocab/bert-base-uncased/vocab.txt").read_text("utf-8").splitlines())
    sentences = [s for doc in embedded for s in doc]
    sample = np.random.default_rng(0).choice(sentences, 2000, replace=False)
    words = [w for s in sample for w in re.findall(r"[a-z]+", s.lower())]
    # 0.91 on the whole corpus; the rest is mostly technical English
    # ("tuple", "widget", "namespace") that BERT keeps only as pieces.
    assert np.mean([w in vocab for w in words]) > 0.9


def test_embedded_corpus_round_trips_through_a_text_file(tmp_path):
    path = str(tmp_path / "embedded.txt")
    stats = corpus.write_text_corpus(embedded_corpus.embedded_documents(max_documents=10), path)
    docs = list(corpus.text_file_documents(path))
    assert docs == list(embedded_corpus.embedded_documents(max_documents=10))
    assert stats.documents == len(docs) == 10
