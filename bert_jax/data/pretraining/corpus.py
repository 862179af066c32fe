"""Pretraining corpora as streams of documents, each a list of sentences.

The on-disk format is the one google-research/bert `create_pretraining_data.py`
reads: one sentence per line, a blank line between documents (its
`create_training_instances`). Text files, gzipped or not, local or gs://,
and TFDS text datasets (`tfds:wikipedia/20230601.en` in an input list)
become an `Iterator[list[str]]`, read lazily so memory stays bounded whatever
the corpus size.

    stats = CorpusStats()
    for doc in text_documents("wiki_*.txt.gz,books.txt", on_bad_input="skip", stats=stats):
        ...
    print(stats.summary())
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator

from absl import logging

from bert_jax.data import bad_input, files

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
      skipped_lines: lines dropped as not UTF-8 (on_bad_input="skip").
      empty_documents: documents with no sentence, dropped as in the original:
        one per leading or repeated blank line, and one per document whose
        every line was skipped.
      skipped: "path:line" of skipped lines (the first `bad_input.MAX_PROBLEMS`).
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


def text_file_documents(
    path: str, *, on_bad_input: str = "fail", stats: CorpusStats | None = None
) -> Iterator[list[str]]:
    """Streams the documents of one file in the original BERT format.

    One sentence per line, a blank line between documents; lines are
    stripped, and a document ends at a blank line or the end of the file.
    Documents with a single sentence are kept: the pretraining data creator
    decides what to do with them. Files ending in `.gz` are un-gzipped. Lines
    are read one at a time, so memory holds one document.

    Args:
      path: a local or gs:// file.
      on_bad_input: a line that is not UTF-8, or a file with no document
        (empty or blank): "fail" raises; "skip" drops the line, or passes
        over the file, counts it in `stats` and logs a warning
        (`bad_input`). Empty files are listed in `stats.empty_files` either way.
      stats: updated as documents are produced.

    Yields:
      Each document's sentences.

    Raises:
      ValueError: a non-UTF-8 line (names the file and line number) or an
        empty file, under "fail"; a bad `on_bad_input`.
      FileNotFoundError: no file at `path`.
    """
    bad_input.check(on_bad_input)
    stats = CorpusStats() if stats is None else stats
    stats.files += 1
    documents, skipped_here, doc, skipped = 0, 0, [], False  # `skipped`: in this document.
    for lineno, line in files.numbered_lines(path):
        if isinstance(line, UnicodeDecodeError):
            if on_bad_input == bad_input.FAIL:
                raise ValueError(f"{path}:{lineno}: not UTF-8 ({line.reason})") from line
            stats.skipped_lines += 1
            skipped_here += 1
            if len(stats.skipped) < bad_input.MAX_PROBLEMS:
                stats.skipped.append(f"{path}:{lineno}")
            skipped = True
            continue
        line = line.strip()
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
    if skipped_here:
        logging.warning("%s: skipped %d lines that are not UTF-8", path, skipped_here)
    if not documents:
        stats.empty_files.append(path)
        if on_bad_input == bad_input.FAIL:
            raise ValueError(f"{path}: no documents (the file is empty or blank)")
        logging.warning("%s: no documents (the file is empty or blank), skipped", path)


# An input that names a TFDS text dataset instead of files.
TFDS_SCHEME = "tfds:"


def tfds_documents(
    name: str,
    split: str = "train",
    text_feature: str = "text",
    data_dir: str | None = None,
    *,
    on_bad_input: str = "fail",
    stats: CorpusStats | None = None,
) -> Iterator[list[str]]:
    """Streams a TFDS text dataset: each example's text is one document.

    The dataset and feature are checked at once; examples are then read
    lazily, in the dataset's stored order (files not shuffled), so two runs
    give the same documents. Text is split into sentences with
    `split_sentences`; examples without a sentence are dropped and counted
    as empty documents. The dataset must be prepared (`tfds build NAME`;
    Wikipedia and C4 take Apache Beam and hours): nothing is downloaded here.

    Args:
      name: a TFDS name with optional config and version, e.g.
        "wikipedia/20230601.en", "c4/en", "imdb_reviews".
      split: TFDS split, slicing allowed ("train[:1%]").
      text_feature: the top-level string feature holding the text.
      data_dir: TFDS data directory (local or gs://); TFDS's default if None.
      on_bad_input: a split without any document: "fail" raises, "skip"
        warns (`bad_input`).
      stats: updated as documents are produced.

    Raises:
      ValueError: `text_feature` is not a feature of the dataset (the message
        lists the features); an empty split under "fail".
    """
    import tensorflow_datasets as tfds  # Takes seconds to import: only for TFDS inputs.

    builder = tfds.builder(name, data_dir=data_dir)
    features = builder.info.features
    if text_feature not in features:
        raise ValueError(
            f"TFDS {name} has no feature {text_feature!r}; its features are "
            f"{sorted(features.keys())}"
        )
    bad_input.check(on_bad_input)
    stats = CorpusStats() if stats is None else stats
    stats.files += 1
    documents = 0
    for ex in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
        text = ex[text_feature]
        doc = split_sentences(text.decode("utf-8") if isinstance(text, bytes) else str(text))
        if not doc:
            stats.empty_documents += 1
            continue
        documents += 1
        stats.documents += 1
        stats.sentences += len(doc)
        yield doc
    if not documents:
        where = f"TFDS {name} split {split!r}"
        stats.empty_files.append(where)
        if on_bad_input == bad_input.FAIL:
            raise ValueError(f"{where}: no documents")
        logging.warning("%s: no documents, skipped", where)


def expand_sources(patterns: str) -> list[str]:
    """The inputs of an `--input_file` flag: comma-separated globs, expanded to files
    (`files.expand_globs`), and "tfds:NAME[:SPLIT[:FEATURE]]" datasets, kept as they are.
    """
    entries = [p.strip() for p in patterns.split(",") if p.strip()]
    datasets = [e for e in entries if e.startswith(TFDS_SCHEME)]
    globs = [e for e in entries if not e.startswith(TFDS_SCHEME)]
    return datasets + (files.expand_globs(globs) if globs else [])


def source_documents(
    source: str, *, on_bad_input: str = "fail", stats: CorpusStats | None = None
) -> Iterator[list[str]]:
    """The documents of one input: a text file (`text_file_documents`) or a
    "tfds:NAME[:SPLIT[:FEATURE]]" dataset (`tfds_documents`; default split
    "train", feature "text")."""
    if not source.startswith(TFDS_SCHEME):
        return text_file_documents(source, on_bad_input=on_bad_input, stats=stats)
    parts = source.removeprefix(TFDS_SCHEME).split(":")
    if not parts[0] or len(parts) > 3:
        raise ValueError(f"{source!r}: expected tfds:NAME[:SPLIT[:FEATURE]]")
    name, split, feature = (parts + ["", ""])[:3]
    return tfds_documents(
        name, split or "train", feature or "text", on_bad_input=on_bad_input, stats=stats
    )


def text_documents(
    patterns: str, *, on_bad_input: str = "fail", stats: CorpusStats | None = None
) -> Iterator[list[str]]:
    """Streams the documents of every input `expand_sources(patterns)` names.

    Globs are expanded at once, so a bad pattern fails here rather than at
    the first document; files are read in sorted order, after any TFDS
    datasets. Arguments are those of `text_file_documents`.
    """
    bad_input.check(on_bad_input)
    sources = expand_sources(patterns)
    stats = CorpusStats() if stats is None else stats
    return (
        doc
        for source in sources
        for doc in source_documents(source, on_bad_input=on_bad_input, stats=stats)
    )


def write_text_corpus(documents: Iterable[list[str]], path: str) -> CorpusStats:
    """Writes documents in the BERT format, atomically; `.gz` paths are gzipped.

    Whitespace inside a sentence (line breaks included) becomes one space so
    each sentence stays on its line; empty sentences and documents are
    dropped, so the file reads back as written. The file appears at `path`
    only once complete (`files.atomic_write`).

    Returns:
      Counts of the documents and sentences written.
    """
    stats = CorpusStats(files=1)
    with files.atomic_write(path) as f:
        for doc in documents:
            lines = [s for s in (" ".join(s.split()) for s in doc) if s]
            if not lines:
                continue
            if stats.documents:
                f.write(b"\n")
            f.write(("\n".join(lines) + "\n").encode("utf-8"))
            stats.documents += 1
            stats.sentences += len(lines)
    return stats
