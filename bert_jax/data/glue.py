"""GLUE tasks: one table, a reader for the original TSV files, and TFDS loading.

Every task (the nine GLUE tasks and the AX diagnostic set) is one `GlueTask`
row in `TASKS`: where its files are, which columns hold the text and the
label, its labels in the order GLUE submissions and the original BERT code
use, its metric and its TFDS name. Sources for the file layouts:

- google-research/bert `run_classifier.py`: `MnliProcessor`, `MrpcProcessor`
  and `ColaProcessor` (column positions, label lists; MNLI labels are
  ["contradiction", "entailment", "neutral"]).
- HF transformers `data/processors/glue.py` for the tasks the original file
  has no processor for (SST-2, QQP, STS-B, QNLI, RTE, WNLI).
- nyu-mll/GLUE-baselines `download_glue_data.py`: the folder names (CoLA,
  SST-2, ..., diagnostic/diagnostic.tsv) and the MRPC files it writes itself
  (train/dev copy the header of `msr_paraphrase_train.txt`, byte-order mark
  included; test gets `index\t#1 ID\t#2 ID\t#1 String\t#2 String`).
- tensorflow_datasets `text/glue.py`: TFDS feature names, split names and
  class orders (which differ from ours for MNLI, AX and WNLI).

    examples = load_split("sst2", "dev", data_dir="/data/glue")  # or TFDS
    stats = ReadStats()
    examples = read_tsv("QQP/train.tsv", "qqp", "train", on_bad_input="skip", stats=stats)
    print(stats.skipped, stats.problems)
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping

from absl import logging

from bert_jax.data import bad_input, files

# ------------------------------------------------------------------ the table


@dataclasses.dataclass(frozen=True)
class Columns:
    """Where the fields of a row are: header names, or 0-based positions.

    Attributes:
      text_a: the first (or only) sentence.
      text_b: the second sentence of a pair task.
      label: the label; absent from test files.
      index: the example id GLUE submissions refer to, where the file has one.
      width: columns per row, for a file without a header (with a header, the
        header's width).
    """

    text_a: str | int
    text_b: str | int | None = None
    label: str | int | None = None
    index: str | int | None = None
    width: int | None = None


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """One GLUE task: files, columns, labels, metric, TFDS and submission names.

    Attributes:
      name: our name, also the TFDS config name ("cola", "sst2", ...).
      dir_name: folder the GLUE download script writes ("CoLA", "SST-2", ...).
      files: split -> file name in `dir_name`.
      columns: header names of the fields.
      labels: label strings in the order class ids refer to (the order of the
        original processors and of GLUE submissions); None for regression.
      metrics: the keys `bert_jax.metrics.glue.glue_metrics` returns.
      tfds_name: `tfds.load` name.
      tfds_splits: split -> TFDS split name.
      tfds_text: TFDS features of text_a and text_b.
      tfds_labels: our label string for each TFDS class id (TFDS orders
        classes its own way); None for regression.
      submissions: test split -> leaderboard file name.
      headerless: split -> positions, for files without a header.
    """

    name: str
    dir_name: str
    files: Mapping[str, str]
    columns: Columns
    labels: tuple[str, ...] | None
    metrics: tuple[str, ...]
    tfds_name: str
    tfds_splits: Mapping[str, str]
    tfds_text: tuple[str, str | None]
    tfds_labels: tuple[str, ...] | None
    submissions: Mapping[str, str]
    headerless: Mapping[str, Columns] = dataclasses.field(default_factory=dict)

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.files)


_FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
_TFDS_SPLITS = {"train": "train", "dev": "validation", "test": "test"}
_BINARY = ("0", "1")
# run_classifier.py MnliProcessor.get_labels; GLUE scores AX with MNLI models.
_NLI3 = ("contradiction", "entailment", "neutral")
_TFDS_NLI3 = ("entailment", "neutral", "contradiction")  # tfds text/glue.py
_NLI2 = ("entailment", "not_entailment")


def _task(name: str, dir_name: str, **kwargs) -> GlueTask:
    # Leaderboard files are named after the folders, except MNLI's and AX's.
    defaults = dict(
        files=_FILES,
        labels=_BINARY,
        metrics=("accuracy",),
        tfds_name=f"glue/{name}",
        tfds_splits=_TFDS_SPLITS,
        tfds_labels=_BINARY,
        submissions={"test": f"{dir_name}.tsv"},
    )
    return GlueTask(name=name, dir_name=dir_name, **(defaults | kwargs))


TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in [
        # CoLA train/dev: no header; (source, label, original star, sentence)
        # (ColaProcessor: text_a = line[3], label = line[1]). Test: index, sentence.
        _task(
            "cola",
            "CoLA",
            columns=Columns("sentence", index="index"),
            headerless={s: Columns(3, label=1, width=4) for s in ("train", "dev")},
            metrics=("mcc",),  # GLUE paper, Table 1: Matthews corr.
            tfds_text=("sentence", None),
        ),
        # sentence, label; test: index, sentence.
        _task(
            "sst2",
            "SST-2",
            columns=Columns("sentence", label="label", index="index"),
            tfds_text=("sentence", None),
        ),
        # Quality, #1 ID, #2 ID, #1 String, #2 String (MrpcProcessor: line[3],
        # line[4], label line[0]); test starts with index instead of Quality.
        _task(
            "mrpc",
            "MRPC",
            columns=Columns("#1 String", "#2 String", label="Quality", index="index"),
            metrics=("f1", "accuracy"),
            tfds_text=("sentence1", "sentence2"),
        ),
        # id, qid1, qid2, question1, question2, is_duplicate; test: id, question1,
        # question2. A few train/dev rows are broken by newlines inside a question
        # (QqpProcessor skips them on IndexError): read with on_bad_input="skip".
        _task(
            "qqp",
            "QQP",
            columns=Columns("question1", "question2", label="is_duplicate", index="id"),
            metrics=("f1", "accuracy"),
            tfds_text=("question1", "question2"),
        ),
        # index, genre, filename, year, old_index, source1, source2, sentence1,
        # sentence2, score (0-5, last column); test has no score.
        _task(
            "stsb",
            "STS-B",
            columns=Columns("sentence1", "sentence2", label="score", index="index"),
            labels=None,
            metrics=("pearson", "spearman"),
            tfds_text=("sentence1", "sentence2"),
            tfds_labels=None,
        ),
        # index, promptID, pairID, genre, 4 parse columns, sentence1, sentence2,
        # annotator labels, gold_label (last); MnliProcessor: line[8], line[9], line[-1].
        _task(
            "mnli",
            "MNLI",
            files={
                "train": "train.tsv",
                "dev_matched": "dev_matched.tsv",
                "dev_mismatched": "dev_mismatched.tsv",
                "test_matched": "test_matched.tsv",
                "test_mismatched": "test_mismatched.tsv",
            },
            columns=Columns("sentence1", "sentence2", label="gold_label", index="index"),
            labels=_NLI3,
            tfds_splits={
                "train": "train",
                "dev_matched": "validation_matched",
                "dev_mismatched": "validation_mismatched",
                "test_matched": "test_matched",
                "test_mismatched": "test_mismatched",
            },
            tfds_text=("premise", "hypothesis"),
            tfds_labels=_TFDS_NLI3,
            submissions={"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"},
        ),
        # index, question, sentence, label.
        _task(
            "qnli",
            "QNLI",
            columns=Columns("question", "sentence", label="label", index="index"),
            labels=_NLI2,
            tfds_text=("question", "sentence"),
            tfds_labels=_NLI2,
        ),
        # index, sentence1, sentence2, label.
        _task(
            "rte",
            "RTE",
            columns=Columns("sentence1", "sentence2", label="label", index="index"),
            labels=_NLI2,
            tfds_text=("sentence1", "sentence2"),
            tfds_labels=_NLI2,
        ),
        # index, sentence1, sentence2, label (1 = entailment). TFDS names its
        # classes ["not_entailment", "entailment"]: the same ids as the file.
        _task(
            "wnli",
            "WNLI",
            columns=Columns("sentence1", "sentence2", label="label", index="index"),
            tfds_text=("sentence1", "sentence2"),
        ),
        # index, sentence1, sentence2; test only, predicted by an MNLI model and
        # scored with R3, the 3-class Matthews corr. (GLUE paper, Section 4).
        _task(
            "ax",
            "diagnostic",
            files={"test": "diagnostic.tsv"},
            columns=Columns("sentence1", "sentence2", label="label", index="index"),
            labels=_NLI3,
            metrics=("mcc",),
            tfds_splits={"test": "test"},
            tfds_text=("premise", "hypothesis"),
            tfds_labels=_TFDS_NLI3,
            submissions={"test": "AX.tsv"},
        ),
    ]
}


def get_task(name: str) -> GlueTask:
    """Looks a task up by name, forgiving case and "-"/"_" ("SST-2", "sts_b").

    Raises:
      ValueError: an unknown task; the message lists the known ones.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in TASKS:
        raise ValueError(f"unknown GLUE task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[key]


def _check_split(task: GlueTask, split: str) -> None:
    if split not in task.files:
        raise ValueError(
            f"unknown split {split!r} for {task.name}; known: {', '.join(task.splits)}"
        )


# ---------------------------------------------------------------- examples


@dataclasses.dataclass(frozen=True)
class Example:
    """One GLUE example.

    Attributes:
      guid: "<split>-<row>", the 0-based data row in the file (TFDS: its idx).
      text_a: first sentence, verbatim (SST-2 sentences keep their trailing space).
      text_b: second sentence of a pair task, else None.
      label: a string of `task.labels`, a float for STS-B, None for test data.
      index: the id submissions refer to, where the source has one.
    """

    guid: str
    text_a: str
    text_b: str | None
    label: str | float | None
    index: int | None


@dataclasses.dataclass
class ReadStats:
    """What reading found; pass one in, look at it after.

    Attributes:
      rows: data rows seen (lines after the header).
      examples: examples returned.
      skipped: malformed rows dropped (on_bad_input="skip").
      problems: "path:line: why" of skipped rows (the first
        `bad_input.MAX_PROBLEMS`).
      empty_files: files without a single row, passed over (on_bad_input="skip").
    """

    rows: int = 0
    examples: int = 0
    skipped: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)
    empty_files: list[str] = dataclasses.field(default_factory=list)

    def skip(self, where: str, why: str, on_bad_input: str) -> None:
        """Raises ValueError("where: why") under "fail"; counts the row under "skip"."""
        if on_bad_input == bad_input.FAIL:
            raise ValueError(f"{where}: {why}")
        self.skipped += 1
        if len(self.problems) < bad_input.MAX_PROBLEMS:
            self.problems.append(f"{where}: {why}")

    def empty_file(self, path: str, on_bad_input: str, why: str = "empty file") -> None:
        """Raises ValueError("path: why") under "fail"; counts `path` and warns under "skip"."""
        if on_bad_input == bad_input.FAIL:
            raise ValueError(f"{path}: {why}")
        self.empty_files.append(path)
        logging.warning("%s: %s, skipped", path, why)


class _Malformed(Exception):
    """A row that cannot become an example; the message says why."""


def _layout(task: GlueTask, split: str, header: list[str], where: str) -> Columns:
    """Turns header names into positions; checks the header has what we need."""
    positions = {name: i for i, name in enumerate(header)}

    def find(name: str | int | None, required: bool) -> int | None:
        if name is None or (name not in positions and not required):
            return None
        if name not in positions:
            raise ValueError(
                f"{where}: header has no {name!r} column for {task.name} {split} (header: {header})"
            )
        return positions[name]

    cols = task.columns
    return Columns(
        text_a=find(cols.text_a, True),
        text_b=find(cols.text_b, True),
        # Test files carry no label: GLUE keeps test labels private.
        label=find(cols.label, not split.startswith("test")),
        index=find(cols.index, False),
        width=len(header),
    )


def _parse_row(task: GlueTask, split: str, cols: Columns, fields: list[str], row: int) -> Example:
    """One data row -> Example; raises _Malformed with the reason."""
    if len(fields) != cols.width:
        raise _Malformed(f"expected {cols.width} tab-separated columns, found {len(fields)}")
    text_a = fields[cols.text_a]
    text_b = None if cols.text_b is None else fields[cols.text_b]
    for name, text in (("text_a", text_a), ("text_b", text_b)):
        if text is not None and not text.strip():
            raise _Malformed(f"empty {name}")
    label = None
    if cols.label is not None:
        value = fields[cols.label]
        if task.labels is not None:
            if value not in task.labels:
                raise _Malformed(f"label {value!r} is not one of {list(task.labels)}")
            label = value
        else:
            try:
                label = float(value)
            except ValueError:
                raise _Malformed(f"score {value!r} is not a number") from None
            if not (math.isfinite(label) and 0.0 <= label <= 5.0):
                raise _Malformed(f"score {value!r} is outside [0, 5]")
    index = None
    if cols.index is not None:
        try:
            index = int(fields[cols.index])
        except ValueError:
            raise _Malformed(f"index {fields[cols.index]!r} is not an integer") from None
    return Example(f"{split}-{row}", text_a, text_b, label, index)


def read_tsv(
    path: str | os.PathLike,
    task: str,
    split: str,
    *,
    on_bad_input: str = "fail",
    stats: ReadStats | None = None,
) -> list[Example]:
    """Reads one GLUE TSV file as the download script writes it.

    Lines are split on tabs and nothing else: quote characters are text (STS-B
    and CoLA sentences hold unbalanced `"`, which CSV quoting would swallow
    across lines). A header is required except where the table says the file
    has none (CoLA train/dev); text and label are then found by name, so extra
    or reordered columns are fine.

    Args:
      path: the file, local or gs://.
      task: a task name (see `get_task`).
      split: one of the task's splits ("train", "dev", "test"; MNLI
        "dev_matched", ...); decides the header and whether a label is needed.
      on_bad_input: a malformed row (wrong column count, a label outside the
        label set, an STS-B score that is not a number in [0, 5], empty text,
        a non-integer index, bytes that are not UTF-8) or an empty file:
        "fail" raises; "skip" drops it, counts it in `stats` and logs a
        warning (`bad_input`).
      stats: filled in with counts and the skipped rows' locations.

    Returns:
      The examples in file order.

    Raises:
      ValueError: a malformed row or an empty file under "fail" (names the
        file and the 1-based line number, the header being line 1); a header
        without the needed columns (always); an unknown task, split or
        on_bad_input.
    """
    path = os.fspath(path)
    glue_task = get_task(task)
    _check_split(glue_task, split)
    bad_input.check(on_bad_input)
    stats = ReadStats() if stats is None else stats
    skipped_before = stats.skipped
    cols = glue_task.headerless.get(split)  # None: the first line is a header.
    has_header = cols is None
    examples: list[Example] = []
    number = 0
    for number, line in files.numbered_lines(path):
        where = f"{path}:{number}"
        if has_header and number == 1:
            if isinstance(line, UnicodeDecodeError):
                raise ValueError(f"{where}: header is not UTF-8: {line}")
            cols = _layout(glue_task, split, line.split("\t"), where)
            continue
        row = number - 1 - has_header  # 0-based data row, skipped rows included.
        stats.rows += 1
        try:
            if isinstance(line, UnicodeDecodeError):
                raise _Malformed(f"not UTF-8: {line}")
            examples.append(_parse_row(glue_task, split, cols, line.split("\t"), row))
        except _Malformed as e:
            stats.skip(where, str(e), on_bad_input)
    if number == 0:
        stats.empty_file(path, on_bad_input)
    stats.examples += len(examples)
    if stats.skipped > skipped_before:
        logging.warning(
            "%s: skipped %d malformed rows of %d",
            path,
            stats.skipped - skipped_before,
            number - has_header,
        )
    return examples


# ------------------------------------------------------------------- splits


def load_split(
    task: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    *,
    on_bad_input: str = "fail",
    stats: ReadStats | None = None,
) -> list[Example]:
    """Loads one split from the GLUE files, or from TFDS when `data_dir` is None.

    Args:
      task: a task name (see `get_task`).
      split: one of the task's splits (`get_task(task).splits`).
      data_dir: the folder the GLUE download script filled (holding CoLA/,
        SST-2/, ..., diagnostic/); None reads TFDS `glue/<task>` instead, which
        downloads and prepares it on first use.
      on_bad_input: as in `read_tsv`; files only (TFDS drops broken rows when
        it prepares the data).
      stats: as in `read_tsv`; files only.

    Returns:
      The examples; from TFDS sorted by idx (the file order), with labels as
      the same strings the files hold and None for test data.

    Raises:
      ValueError: an unknown task, split or on_bad_input, or what `read_tsv` raises.
    """
    glue_task = get_task(task)
    _check_split(glue_task, split)
    bad_input.check(on_bad_input)
    if data_dir is not None:
        path = os.path.join(data_dir, glue_task.dir_name, glue_task.files[split])
        return read_tsv(path, glue_task.name, split, on_bad_input=on_bad_input, stats=stats)
    return _load_tfds(glue_task, split)


def _load_tfds(task: GlueTask, split: str) -> list[Example]:
    import tensorflow_datasets as tfds  # Imports TF: only when TFDS is asked for.

    ds = tfds.load(task.tfds_name, split=task.tfds_splits[split])
    feature_a, feature_b = task.tfds_text
    examples = []
    for ex in tfds.as_numpy(ds):
        idx = int(ex["idx"])
        # GLUE keeps test labels private; TFDS fills in -1.
        value = ex["label"]
        if split.startswith("test") or value < 0:
            label = None
        elif task.tfds_labels is None:
            # float32 in TFDS; its shortest repr gives back the file's "3.8".
            label = float(str(value))
        else:
            label = task.tfds_labels[int(value)]
        examples.append(
            Example(
                guid=f"{split}-{idx}",
                text_a=ex[feature_a].decode("utf-8"),
                text_b=None if feature_b is None else ex[feature_b].decode("utf-8"),
                label=label,
                index=idx,
            )
        )
    # TFDS stores examples in hashed-key order; idx restores the file order.
    examples.sort(key=lambda e: e.index)
    return examples
