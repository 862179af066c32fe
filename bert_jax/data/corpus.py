"""Pretraining corpora as streams of documents, each a list of sentences.

The on-disk format is the one google-research/bert `create_pretraining_data.py`
reads: one sentence per line, a blank line between documents (its
`create_training_instances`). Text files, gzipped or not, local or gs://, and
any TFDS text dataset (`wikipedia/20230601.en`, `c4/en`, `imdb_reviews`, ...)
become the same `Iterator[list[str]]`, read lazily so memory stays bounded
whatever the corpus size.

    stats = CorpusStats()
    for doc in text_documents("wiki_*.txt.gz,books.txt", errors="skip", stats=stats):
        ...
    print(stats.summary())
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import re
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

import tensorflow as tf
from absl import logging

# Problem locations kept for the report; counts stay exact beyond this.
_MAX_PROBLEMS = 100

# ------------------------------------------------------------ sentence split

# Words ending in "." that rarely end a sentence (titles, Latin and
# bibliographic abbreviations, months). Single letters and dotted acronyms
# ("J.", "e.g.", "U.S.") are caught by `_INITIALS` instead. "etc." is left out
# on purpose: it ends sentences as often as not.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt ft vs cf al approx ca viz resp inc ltd co corp dept "  # noqa: SIM905
    "est gen gov lt col capt sgt rev hon jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
# Abbreviations only before a number ("No. 5", "Fig. 3"; but "No. See").
_NUMBER_ABBREVIATIONS = frozenset(
    "no nos fig figs vol vols ed eds ch sec eq eqs ref refs pp".split()  # noqa: SIM905
)
_INITIALS = re.compile(r"(?:[^\W\d_]\.)+")
# A candidate boundary: terminal punctuation, closing quotes or brackets, then
# whitespace. Whether it is one depends on the characters around it.
_BOUNDARY = re.compile(r"([.!?]+)[\"'”’)\]]*\s+")
_OPENERS = "\"'“‘(["


def _ends_sentence(text: str, match: re.Match) -> bool:
    """Whether `match` (a `_BOUNDARY`) ends a sentence of `text`."""
    nxt = text[match.end() : match.end() + 1]
    if not nxt or not (nxt.isupper() or nxt.isdigit() or nxt in _OPENERS):
        return False
    punct = match.group(1)
    if punct == ".":
        word = text[: match.start(1) + 1].rsplit(None, 1)[-1].lstrip(_OPENERS)
        stem = word[:-1].lower()
        if stem in _ABBREVIATIONS or (stem in _NUMBER_ABBREVIATIONS and nxt.isdigit()):
            return False
        return not _INITIALS.fullmatch(word)
    return not punct.startswith("..")  # An ellipsis trails off; it does not end.


def split_sentences(text: str) -> list[str]:
    """Splits text into sentences with a small deterministic rule set.

    Every line break ends a sentence (paragraphs and list items stay apart).
    Within a line, a sentence ends after ".", "!" or "?" (and any closing
    quotes or brackets) followed by whitespace and then an uppercase letter, a
    digit or an opening quote or bracket. Not ends: abbreviations such as
    "Mr." (`_ABBREVIATIONS`), "Fig." before a number ("Fig. 3";
    `_NUMBER_ABBREVIATIONS`), single-letter initials and dotted
    acronyms ("J.", "e.g.", "U.S."), and ellipses ("...", "…"). Decimals
    ("3.14") have no whitespace after the dot. Runs of whitespace become one
    space; empty sentences are dropped.

    Args:
      text: any text.

    Returns:
      The sentences, in order, stripped.
    """
    sentences = []
    for line in text.splitlines():
        start = 0
        for m in _BOUNDARY.finditer(line):
            if _ends_sentence(line, m):
                sentences.append(line[start : m.end()])
                start = m.end()
        sentences.append(line[start:])
    return [s for s in (" ".join(s.split()) for s in sentences) if s]


# --------------------------------------------------------------- text files


@dataclasses.dataclass
class CorpusStats:
    """What reading a corpus found; pass one in, print `summary()` after.

    Attributes:
      files: files opened.
      documents: documents produced.
      sentences: sentences in those documents.
      skipped_lines: lines dropped as not UTF-8 (errors="skip").
      empty_documents: documents with no sentence, dropped as in the original:
        one per leading or repeated blank line, and one per document whose
        every line was skipped.
      skipped: "path:line" of skipped lines (the first `_MAX_PROBLEMS`).
      empty_files: files that held no document.
    """

    files: int = 0
    documents: int = 0
    sentences: int = 0
    skipped_lines: int = 0
    empty_documents: int = 0
    skipped: list[str] = dataclasses.field(default_factory=list)
    empty_files: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"{self.files} files, {self.documents} documents, {self.sentences} sentences, "
            f"{self.skipped_lines} non-UTF-8 lines skipped, {self.empty_documents} empty "
            f"documents dropped, {len(self.empty_files)} empty files"
        )
        if self.skipped:
            text += f"\n  skipped lines: {', '.join(self.skipped)}"
        if self.empty_files:
            text += f"\n  empty files: {', '.join(self.empty_files)}"
        return text


@contextlib.contextmanager
def _open_binary(path: str) -> Iterator[BinaryIO]:
    """Opens a local or remote file for reading bytes, un-gzipping `.gz`."""
    with tf.io.gfile.GFile(path, "rb") as f:
        if not path.endswith(".gz"):
            yield f
            return
        with gzip.GzipFile(fileobj=f, mode="rb") as g:  # Leaves `f` open: closed above.
            yield g


def text_file_documents(
    path: str,
    errors: str = "fail",
    on_empty: str = "warn",
    stats: CorpusStats | None = None,
) -> Iterator[list[str]]:
    """Streams the documents of one file in the original BERT format.

    One sentence per line, a blank line between documents; lines are
    stripped, and a document ends at a blank line or the end of the file.
    Documents with a single sentence are kept: the pretraining data creator
    decides what to do with them. Files ending in `.gz` are un-gzipped. Lines
    are read one at a time, so memory holds one document.

    Args:
      path: a local or gs:// file.
      errors: on a line that is not UTF-8, "fail" raises and "skip" drops the
        line and counts it in `stats`.
      on_empty: on a file with no document, "warn" logs a warning and "fail"
        raises. Either way it is listed in `stats.empty_files`.
      stats: updated as documents are produced.

    Yields:
      Each document's sentences.

    Raises:
      ValueError: a non-UTF-8 line (errors="fail"; names the file and line
        number), an empty file (on_empty="fail"), or a bad `errors`/`on_empty`.
    """
    if errors not in ("fail", "skip"):
        raise ValueError(f'errors must be "fail" or "skip", got {errors!r}')
    if on_empty not in ("warn", "fail"):
        raise ValueError(f'on_empty must be "warn" or "fail", got {on_empty!r}')
    stats = CorpusStats() if stats is None else stats
    stats.files += 1
    documents, doc, skipped = 0, [], False  # `skipped`: in this document.
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as e:
                if errors == "fail":
                    raise ValueError(f"{path}:{lineno}: not UTF-8 ({e.reason})") from e
                stats.skipped_lines += 1
                if len(stats.skipped) < _MAX_PROBLEMS:
                    stats.skipped.append(f"{path}:{lineno}")
                skipped = True
                continue
            if line:
                doc.append(line)
                continue
            if doc:
                documents += 1
                stats.documents += 1
                stats.sentences += len(doc)
                yield doc
            else:
                stats.empty_documents += 1
            doc, skipped = [], False
    if doc:
        documents += 1
        stats.documents += 1
        stats.sentences += len(doc)
        yield doc
    elif skipped:
        stats.empty_documents += 1
    if not documents:
        stats.empty_files.append(path)
        if on_empty == "fail":
            raise ValueError(f"{path}: no documents (the file is empty or blank)")
        logging.warning("%s: no documents (the file is empty or blank)", path)


def expand_inputs(patterns: str) -> list[str]:
    """Comma-separated globs (the original `--input_file`) -> sorted files.

    Args:
      patterns: e.g. "data/wiki_*.txt.gz,gs://bucket/books/*.txt".

    Returns:
      The matching files (not directories), sorted, each once.

    Raises:
      FileNotFoundError: a pattern matches no file; names the pattern.
    """
    files = set()
    for pattern in (p.strip() for p in patterns.split(",")):
        if not pattern:
            continue
        found = [f for f in tf.io.gfile.glob(pattern) if not tf.io.gfile.isdir(f)]
        if not found:
            raise FileNotFoundError(f"no files match {pattern!r}")
        files.update(found)
    if not files:
        raise FileNotFoundError(f"no input patterns in {patterns!r}")
    return sorted(files)


def text_documents(
    patterns: str,
    errors: str = "fail",
    on_empty: str = "warn",
    stats: CorpusStats | None = None,
) -> Iterator[list[str]]:
    """Streams the documents of every file `expand_inputs(patterns)` names.

    The files are globbed at once, so a bad pattern fails here rather than at
    the first document; they are read in sorted order. Arguments are those of
    `text_file_documents`.
    """
    files = expand_inputs(patterns)
    stats = CorpusStats() if stats is None else stats
    return (
        doc
        for path in files
        for doc in text_file_documents(path, errors=errors, on_empty=on_empty, stats=stats)
    )


def write_text_corpus(documents: Iterable[list[str]], path: str) -> CorpusStats:
    """Writes documents in the BERT format; `.gz` paths are gzipped.

    Whitespace inside a sentence (line breaks included) becomes one space so
    each sentence stays on its line; empty sentences and documents are
    dropped, so the file reads back as written.

    Returns:
      Counts of the documents and sentences written.
    """
    stats = CorpusStats(files=1)
    with tf.io.gfile.GFile(path, "wb") as raw:
        f = gzip.GzipFile(fileobj=raw, mode="wb") if path.endswith(".gz") else raw
        for doc in documents:
            lines = [s for s in (" ".join(s.split()) for s in doc) if s]
            if not lines:
                continue
            if stats.documents:
                f.write(b"\n")
            f.write(("\n".join(lines) + "\n").encode("utf-8"))
            stats.documents += 1
            stats.sentences += len(lines)
        if f is not raw:
            f.close()
    return stats


# --------------------------------------------------------------------- TFDS


def tfds_documents(
    name: str,
    split: str = "train",
    text_feature: str = "text",
    data_dir: str | None = None,
    sentence_split: Callable[[str], list[str]] = split_sentences,
    download: bool = False,
) -> Iterator[list[str]]:
    """Streams a TFDS text dataset: each example's text is one document.

    The dataset and feature are checked at once; examples are then read
    lazily, in the dataset's stored order (files not shuffled), so two runs
    give the same documents. Examples whose text holds no sentence are
    dropped.

    Args:
      name: a TFDS name with optional config and version, e.g.
        "wikipedia/20230601.en", "c4/en", "imdb_reviews".
      split: TFDS split, slicing allowed ("train[:1%]").
      text_feature: the top-level string feature holding the text.
      data_dir: TFDS data directory (local or gs://); TFDS's default if None.
      sentence_split: text -> sentences; `split_sentences` by default.
      download: download and prepare the dataset if it is not there yet.
        Off by default: Wikipedia and C4 take hours and Apache Beam to
        prepare (`tfds build` them first, or point `data_dir` at a copy).

    Returns:
      An iterator over each example's sentences.

    Raises:
      ValueError: `text_feature` is not a feature of the dataset; the message
        lists the features.
    """
    # Imported here: TFDS takes seconds to import and only this function needs it.
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    features = builder.info.features
    if text_feature not in features:
        raise ValueError(
            f"{name} has no feature {text_feature!r}; its features are {sorted(features.keys())}"
        )
    if download:
        builder.download_and_prepare()
    examples = tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))
    texts = (ex[text_feature] for ex in examples)
    docs = (sentence_split(t.decode("utf-8") if isinstance(t, bytes) else str(t)) for t in texts)
    return (doc for doc in docs if doc)
