"""CoNLL-2003 NER: reader, first-subword features, predictions back to words.

Files hold one word per line, `token POS chunk NER` (the NER tag is the last
column, columns split on whitespace), a blank line after each sentence and a
`-DOCSTART- -X- -X- O` line before each document (Tjong Kim Sang and De
Meulder, 2003). The original distribution tags entities in IOB1 (a chunk starts
with I-, B- only separates two adjacent chunks of one type); most copies,
ours included, use IOB2 (every chunk starts with B-). Both are read, and tags
always come out in IOB2.

    sentences, stats = read_conll("train.txt")
    features, meta = make_features(sentences, tokenizer, NER_LABELS, max_seq_length=128)
    ... predicted label ids, shape (N, max_seq_length) ...
    tags = predictions_to_tags(pred_ids, meta)  # per sentence, per word

What is an error and what a warning:
  * A malformed line is bad input (`bad_input`): another column count than
    the file's first word line, a tag other than "O", "B-type" or "I-type"
    ("X-PER", "PER", "E-LOC"), bytes that are not UTF-8. `on_bad_input="fail"`
    raises ValueError naming file and line; "skip" drops the whole sentence
    holding it and counts it (a sentence missing a word would misalign
    everything else). So is a file without a single sentence.
  * A tag sequence that breaks the file's scheme is a warning, logged and
    counted: in IOB2 an I-X that starts a chunk (after O, at the start of a
    sentence, after B-Y/I-Y of another type); in IOB1 a B-X that does not
    follow a chunk of type X. Such tags are read exactly as conlleval reads
    them (an I-X that starts a chunk becomes B-X), so the gold chunks are the
    ones conlleval scores.

Features label the first wordpiece of each word, as in the BERT paper
(Devlin et al., 2019, section 5.3: "we use the representation of the first
sub-token as the input to the token-level classifier over the NER label set").
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np
from absl import logging

from bert_jax.data import bad_input, files
from bert_jax.data.tags import get_entities
from bert_jax.tokenizers.wordpiece import BertTokenizer

# The CoNLL-2003 label set, outside first, then each type's B- and I- in the
# order persons, organizations, locations, miscellaneous. Label ids are indices
# into this tuple, so changing the order changes every trained head.
NER_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
IGNORE_LABEL = -1  # Label of pieces that are not a word's first (and of padding).
DOCSTART = "-DOCSTART-"
_TAG_RE = re.compile(r"O|[BI]-\S+")


@dataclasses.dataclass(frozen=True)
class Sentence:
    """One sentence: its words and, per word, NER tag (IOB2), POS and chunk tag."""

    tokens: tuple[str, ...]
    tags: tuple[str, ...]
    pos: tuple[str, ...] | None = None  # None: the file has no such column.
    chunk: tuple[str, ...] | None = None
    doc_index: int = 0  # Documents count from 0 in file order.
    line: int = 0  # Line number (from 1) of the first word in the file.


@dataclasses.dataclass
class ConllStats:
    """What `read_conll` read, and what it skipped or repaired."""

    path: str = ""
    scheme: str = ""  # "iob1" or "iob2": the scheme the tags were read in.
    documents: int = 0  # -DOCSTART- lines, plus 1 if sentences come before the first.
    sentences: int = 0
    tokens: int = 0
    malformed_lines: int = 0
    skipped_sentences: int = 0  # Sentences dropped for a malformed line (on_bad_input="skip").
    scheme_violations: int = 0  # Tags that break `scheme` (see the module docstring).
    converted_tags: int = 0  # Tags changed to make IOB2: I-X -> B-X.
    # (line, message) of the first problems.
    problems: list[tuple[int, str]] = dataclasses.field(default_factory=list)

    def note(self, line: int, message: str) -> None:
        if len(self.problems) < bad_input.MAX_PROBLEMS:
            self.problems.append((line, message))


# ------------------------------------------------------------------ schemes


def _type(tag: str) -> str:
    return "" if tag == "O" else tag[2:]


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """IOB1 (or IOB2 with errors) to IOB2: an I-X that starts a chunk becomes B-X.

    An I-X starts a chunk when it follows O, starts the sentence or follows a
    tag of another type, the same rule conlleval uses, so the chunks do not
    change. Valid IOB2 comes back unchanged.
    """
    out, prev = [], "O"
    for tag in tags:
        if tag.startswith("I-") and _type(prev) != tag[2:]:
            tag = "B-" + tag[2:]
        out.append(tag)
        prev = tag
    return out


def _violations(tags: Sequence[str], scheme: str) -> list[int]:
    """Positions of the tags that break `scheme` ("iob1" or "iob2")."""
    bad, prev = [], "O"
    prefix = "I-" if scheme == "iob2" else "B-"
    for i, tag in enumerate(tags):
        if tag.startswith(prefix) and _type(prev) != tag[2:]:
            bad.append(i)
        prev = tag
    return bad


# ------------------------------------------------------------------- reader


def read_conll(
    path: str, *, on_bad_input: str = "fail", scheme: str = "auto"
) -> tuple[list[Sentence], ConllStats]:
    """Reads a CoNLL NER file into sentences with IOB2 tags.

    Args:
      path: a CoNLL file (local or gs://, gzipped if ".gz"), UTF-8.
      on_bad_input: a malformed line (see the module docstring), or a file
        without a sentence: "fail" raises; "skip" drops the line's sentence (or
        reads nothing), counts it in the stats and logs a warning (`bad_input`).
      scheme: the tagging scheme of the file: "iob1", "iob2" or "auto", which
        takes the scheme the tags break less often (IOB2 on a tie, as for a
        file whose tags fit both), so valid files of either are read right.

    Returns:
      The sentences in file order (`-DOCSTART-` lines start a new document and
      are not sentences), and a `ConllStats`.

    Raises:
      ValueError: under "fail", a malformed line, as `path:line: why`, or a
        file without a sentence; bad arguments.
    """
    bad_input.check(on_bad_input)
    if scheme not in ("auto", "iob1", "iob2"):
        raise ValueError(f"scheme must be 'auto', 'iob1' or 'iob2', got {scheme!r}")
    stats = ConllStats(path=path)
    # Each sentence as (doc, first line, rows of columns, per-word line numbers).
    raw: list[tuple[int, int, list[list[str]], list[int]]] = []
    rows: list[list[str]] = []
    numbers: list[int] = []
    bad_sentence = False
    width = 0  # Columns per word line, from the file's first one.
    valid_tags: set[str] = set()  # Tags seen to match _TAG_RE (matching is slow).
    doc = 0  # Index of the current document.

    def end_sentence() -> None:
        nonlocal bad_sentence
        if bad_sentence:
            stats.skipped_sentences += 1
        elif rows:
            raw.append((doc, numbers[0], rows.copy(), numbers.copy()))
        rows.clear()
        numbers.clear()
        bad_sentence = False

    def malformed(number: int, why: str) -> None:
        nonlocal bad_sentence
        if on_bad_input == bad_input.FAIL:
            raise ValueError(f"{path}:{number}: {why}")
        stats.malformed_lines += 1
        stats.note(number, why)
        bad_sentence = True

    for number, line in files.numbered_lines(path):
        if isinstance(line, UnicodeDecodeError):  # A word line we cannot read.
            malformed(number, f"not valid UTF-8: {line.reason}")
            continue
        cols = line.split()
        if not cols:
            end_sentence()
            continue
        if cols[0] == DOCSTART:
            end_sentence()
            if raw and not stats.documents:  # Sentences before the first -DOCSTART-.
                stats.documents = 1
            stats.documents += 1
            doc = stats.documents - 1
            continue
        if not width:
            width = len(cols)
            if width < 2:  # The whole file's layout: not a line to skip.
                raise ValueError(f"{path}:{number}: one column; a word line needs a word and a tag")
        if len(cols) != width:
            malformed(number, f"{len(cols)} columns, but the first word line has {width}: {line!r}")
        elif cols[-1] not in valid_tags and not _TAG_RE.fullmatch(cols[-1]):
            tag = cols[-1]
            malformed(number, f"invalid NER tag {tag!r} (expected O, B-type or I-type): {line!r}")
        else:
            valid_tags.add(cols[-1])
            rows.append(cols)
            numbers.append(number)
    end_sentence()
    if raw and not stats.documents:
        stats.documents = 1
    if not raw and not stats.skipped_sentences:
        if on_bad_input == bad_input.FAIL:
            raise ValueError(f"{path}: no sentences (the file is empty or holds only -DOCSTART-)")
        logging.warning("%s: no sentences, skipped", path)

    # Scheme: detect, count the tags that break it, convert to IOB2.
    tag_seqs = [tuple(r[-1] for r in rs) for _, _, rs, _ in raw]
    bad = {
        name: [n[i] for t, (*_, n) in zip(tag_seqs, raw, strict=True) for i in _violations(t, name)]
        for name in ("iob1", "iob2")
    }
    if scheme == "auto":
        scheme = "iob2" if len(bad["iob2"]) <= len(bad["iob1"]) else "iob1"
    stats.scheme, bad_lines = scheme, bad[scheme]
    stats.scheme_violations = len(bad_lines)
    for number in bad_lines:
        stats.note(number, f"tag breaks {stats.scheme.upper()}")

    sentences = []
    for (doc_index, first, rs, _), tags in zip(raw, tag_seqs, strict=True):
        iob2 = tuple(iob1_to_iob2(tags))
        stats.converted_tags += sum(a != b for a, b in zip(tags, iob2, strict=True))
        n = len(rs[0])
        sentences.append(
            Sentence(
                tokens=tuple(r[0] for r in rs),
                tags=iob2,
                pos=tuple(r[1] for r in rs) if n >= 3 else None,
                chunk=tuple(r[2] for r in rs) if n >= 4 else None,
                doc_index=doc_index,
                line=first,
            )
        )
    stats.sentences = len(sentences)
    stats.tokens = sum(len(s.tokens) for s in sentences)

    if stats.skipped_sentences:
        logging.warning(
            "%s: skipped %d sentences for %d malformed lines (first: line %d: %s)",
            path,
            stats.skipped_sentences,
            stats.malformed_lines,
            *stats.problems[0],
        )
    if stats.scheme_violations:
        logging.warning(
            "%s: %d tags break %s (first on line %d), read as conlleval reads them",
            path,
            stats.scheme_violations,
            stats.scheme.upper(),
            bad_lines[0],
        )
    return sentences, stats


# ----------------------------------------------------------------- features


@dataclasses.dataclass(frozen=True)
class FeatureMeta:
    """How to map per-piece predictions of `make_features` back to words."""

    labels: tuple[str, ...]
    # Per sentence, shape (words,): the row position of each word's first
    # piece, -1 for a word truncated away (it is predicted "O").
    word_starts: list[np.ndarray]
    num_pieces: np.ndarray  # (N,) [CLS] + all pieces + [SEP], before truncation.
    num_truncated: np.ndarray  # (N,) words whose first piece did not fit.


def make_features(
    sentences: Sequence[Sentence | Sequence[str]],
    tokenizer: BertTokenizer,
    labels: Sequence[str] = NER_LABELS,
    max_seq_length: int = 128,
) -> tuple[dict[str, np.ndarray], FeatureMeta]:
    """Tokenizes each word separately and labels its first piece.

    A row is [CLS] pieces [SEP] [PAD]...: each word's first wordpiece carries
    the word's label id, its other pieces -1 (`IGNORE_LABEL`, left out of loss
    and metrics), as do [CLS], [SEP] and padding. The basic tokenizer splits
    punctuation inside a word ("U.S." -> U . S .); those are pieces of the
    same word too. A word that tokenizes to nothing (only characters the
    tokenizer drops) becomes [UNK], so every word keeps a piece.

    Rows longer than `max_seq_length` lose their last pieces. A word whose
    first piece still fits keeps its label even if later pieces are cut; a
    word whose first piece does not fit is counted in `num_truncated` and
    predicted "O" by `predictions_to_tags` (it is left out of the input).

    Args:
      sentences: `Sentence`s, or plain word lists (for prediction: all labels
        are then -1).
      tokenizer: the model's tokenizer (WordPiece, or a family one from
        `tokenizers_from_folder`; RoBERTa's BPE gets `word_prefix` before each word).
      labels: the label list; label id = index (default `NER_LABELS`).
      max_seq_length: row length, [CLS] and [SEP] included.

    Returns:
      int32 arrays of shape (N, max_seq_length): input_ids, token_type_ids (all
      0), attention_mask, labels; and the `FeatureMeta`.

    Raises:
      ValueError: a tag outside `labels`, or max_seq_length < 3.
    """
    if max_seq_length < 3:
        raise ValueError(f"max_seq_length={max_seq_length} leaves no room for a word")
    label_ids = {label: i for i, label in enumerate(labels)}
    n, budget = len(sentences), max_seq_length - 2
    arrays = {
        "input_ids": np.full((n, max_seq_length), tokenizer.pad_id, np.int32),
        "token_type_ids": np.zeros((n, max_seq_length), np.int32),
        "attention_mask": np.zeros((n, max_seq_length), np.int32),
        "labels": np.full((n, max_seq_length), IGNORE_LABEL, np.int32),
    }
    word_starts, num_pieces, num_truncated = [], np.zeros(n, np.int32), np.zeros(n, np.int32)
    cache: dict[str, list[int]] = {}
    for i, sentence in enumerate(sentences):
        words, tags = (
            (sentence.tokens, sentence.tags) if isinstance(sentence, Sentence) else (sentence, None)
        )
        ids, starts = [tokenizer.cls_id], np.full(len(words), -1, np.int32)
        for j, word in enumerate(words):
            pieces = cache.get(word)
            if pieces is None:
                # RoBERTa's BPE marks word starts ("Ġ"): HF tokenizes pre-split
                # words as if a space came before each (add_prefix_space).
                text = tokenizer.word_prefix + word
                pieces = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))
                cache[word] = pieces = pieces or [tokenizer.unk_id]
            if tags is not None and tags[j] not in label_ids:
                where = f"line {sentence.line}" if sentence.line else f"sentence {i}"
                raise ValueError(f"{where}: tag {tags[j]!r} is not in labels {labels}")
            if len(ids) <= budget:
                starts[j] = len(ids)
                if tags is not None:
                    arrays["labels"][i, len(ids)] = label_ids[tags[j]]
            ids.extend(pieces)
        num_pieces[i] = len(ids) + 1
        num_truncated[i] = np.sum(starts < 0)
        ids = [*ids[: budget + 1], tokenizer.sep_id]
        arrays["input_ids"][i, : len(ids)] = ids
        arrays["attention_mask"][i, : len(ids)] = 1
        word_starts.append(starts)
    meta = FeatureMeta(tuple(labels), word_starts, num_pieces, num_truncated)
    return arrays, meta


def predictions_to_tags(pred_label_ids: np.ndarray, meta: FeatureMeta) -> list[list[str]]:
    """Per-piece label ids, shape (N, max_seq_length), to per-word tags.

    Each word takes the label predicted at its first piece; words truncated
    away get "O". Tags are returned as predicted (an illegal I- start is left
    for the metrics to read the conlleval way).
    """
    pred_label_ids = np.asarray(pred_label_ids)
    if len(pred_label_ids) != len(meta.word_starts):
        raise ValueError(f"{len(pred_label_ids)} rows, but {len(meta.word_starts)} sentences")
    out = []
    for row, starts in zip(pred_label_ids, meta.word_starts, strict=True):
        out.append([meta.labels[row[s]] if s >= 0 else "O" for s in starts])
    return out


# ------------------------------------------------------------------- output


def format_predictions(
    sentences: Sequence[Sentence], predicted_tags: Sequence[Sequence[str]]
) -> str:
    """`token POS chunk gold predicted` lines: conlleval's input, in the CoNLL layout.

    A `-DOCSTART- -X- -X- O O` line and a blank line open each document (each
    change of `doc_index`), a blank line ends each sentence; missing POS or
    chunk columns are written as "-". `perl conlleval < predictions.txt`
    scores it as `bert_jax.metrics.ner` does.

    Raises:
      ValueError: the counts of sentences or words differ, or a column is
        empty or holds whitespace (the columns would shift).
    """
    if len(sentences) != len(predicted_tags):
        raise ValueError(f"{len(sentences)} sentences but {len(predicted_tags)} predictions")
    out, doc = [], None
    for i, (sentence, pred) in enumerate(zip(sentences, predicted_tags, strict=True)):
        if len(pred) != len(sentence.tokens):
            raise ValueError(f"sentence {i}: {len(sentence.tokens)} words, {len(pred)} predictions")
        if sentence.doc_index != doc:
            out.append(f"{DOCSTART} -X- -X- O O\n\n")
            doc = sentence.doc_index
        missing = ("-",) * len(pred)
        for cols in zip(
            sentence.tokens,
            sentence.pos or missing,
            sentence.chunk or missing,
            sentence.tags,
            pred,
            strict=True,
        ):
            if any(not c or any(ch.isspace() for ch in c) for c in cols):
                raise ValueError(f"sentence {i}: empty or whitespace column in {cols}")
            out.append(" ".join(cols) + "\n")
        out.append("\n")
    return "".join(out)


# -------------------------------------------------------------- raw text


_WORD_RE = re.compile(r"(?:\w\.){2,}(?!\w)|\w+(?:[-'’.]\w+)*|\S")


def split_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Splits raw text into words and their [start, end) character spans.

    Close to CoNLL-2003's tokenization: dotted initials ("U.S.", "e.g."), runs
    of letters and digits joined across "-", "'" and "." between them
    ("1996-08-22", "O'Neill", "3.5"), and every other non-space character
    alone.
    """
    matches = list(_WORD_RE.finditer(text))
    return [m.group() for m in matches], [m.span() for m in matches]


def entities_with_offsets(
    text: str, spans: Sequence[tuple[int, int]], tags: Sequence[str]
) -> list[dict[str, object]]:
    """Entities of tagged words as {"type", "text", "start", "end"} in `text`.

    Args:
      text: the raw text.
      spans: each word's [start, end) character span in `text`.
      tags: each word's predicted tag; chunks are read the conlleval way.

    Returns:
      One dict per entity, in order: `text[start:end]` runs from the first
      character of its first word to the last of its last word.
    """
    if len(spans) != len(tags):
        raise ValueError(f"{len(spans)} word spans but {len(tags)} tags")
    entities = []
    for type_, first, stop in get_entities(tags):
        start, end = spans[first][0], spans[stop - 1][1]
        entities.append({"type": type_, "text": text[start:end], "start": start, "end": end})
    return entities
