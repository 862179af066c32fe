"""Labelled text for classification: TSV / CSV / JSONL files, or a TFDS dataset.

Intent, spam or sentiment data in the shapes people keep it: a table with a
text column (optionally a second text column for pairs) and a label column.
Rows that cannot be used are bad input (`bad_input`), reported with file and
line.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator

from absl import logging

from bert_jax.data import bad_input, files
from bert_jax.data.glue import Example, ReadStats

_SUFFIXES = (".tsv", ".csv", ".jsonl", ".json")


def read_table(
    path: str,
    text_column: str,
    label_column: str,
    text_b_column: str = "",
    labels: tuple[str, ...] | None = None,
    *,
    on_bad_input: str = "fail",
    stats: ReadStats | None = None,
) -> list[Example]:
    """Rows of a .tsv, .csv (with a header) or .jsonl file as Examples.

    Args:
      path: the file, local or gs://, gzipped if it ends in ".gz" (after the
        table suffix: "train.tsv.gz").
      text_column, label_column, text_b_column: the columns (JSON keys) of the
        text, the label and, for pairs, the second text ("" for none).
      labels: the allowed labels; None allows any.
      on_bad_input: a row with a missing column, empty text, a label outside
        `labels`, invalid JSON, the wrong number of columns or bytes that are
        not UTF-8, or a file without rows: "fail" raises; "skip" drops it,
        counts it in `stats` and logs a warning (`bad_input`).
      stats: filled in with counts and the skipped rows' locations.

    Returns:
      The examples in file order; guids are "<file stem>-<line>".

    Raises:
      ValueError: naming file and line, a bad row or an empty file under
        "fail"; a header without the columns (always); an unsupported file type.
      FileNotFoundError: no file at `path`.
    """
    bad_input.check(on_bad_input)
    stats = ReadStats() if stats is None else stats
    name = os.path.basename(path).removesuffix(".gz")
    stem, suffix = os.path.splitext(name)
    if suffix.lower() not in _SUFFIXES:
        raise ValueError(f"{path}: unsupported file type {suffix!r} (use .tsv, .csv or .jsonl)")
    columns = [c for c in (text_column, label_column, text_b_column) if c]
    if suffix.lower() in (".jsonl", ".json"):
        rows = _json_rows(path)
    else:
        rows = table_rows(path, "\t" if suffix.lower() == ".tsv" else ",", columns)
    skipped_before, n_rows, out = stats.skipped, 0, []
    for line, row in rows:
        n_rows += 1
        if why := _row_problem(row, columns, text_column, label_column, labels):
            stats.skip(f"{path}:{line}", why, on_bad_input)
            continue
        text_b = str(row[text_b_column]).strip() if text_b_column else None
        text, label = str(row[text_column]).strip(), str(row[label_column]).strip()
        out.append(Example(f"{stem}-{line}", text, text_b, label, len(out)))
    stats.rows += n_rows
    if not n_rows:
        stats.empty_file(path, on_bad_input, "no rows")
    stats.examples += len(out)
    if stats.skipped > skipped_before:
        logging.warning(
            "%s: skipped %d bad rows of %d", path, stats.skipped - skipped_before, n_rows
        )
    return out


def _row_problem(
    row: dict | str,
    columns: list[str],
    text_column: str,
    label_column: str,
    labels: tuple[str, ...] | None,
) -> str | None:
    """Why `row` (a row, or why it could not be read) cannot be an example, or None."""
    if isinstance(row, str):
        return row
    if missing := [c for c in columns if c not in row]:
        return f"no column {missing[0]!r} (has {sorted(row)})"
    if not str(row[text_column]).strip():
        return f"empty text in column {text_column!r}"
    label = str(row[label_column]).strip()
    if labels is not None and label not in labels:
        return f"label {label!r} is not one of {list(labels)}"
    return None


def _json_rows(path: str) -> Iterator[tuple[int, dict | str]]:
    """(line, parsed object or why it is bad) for every non-blank line."""
    for number, line in files.numbered_lines(path):
        if isinstance(line, UnicodeDecodeError):
            yield number, f"not UTF-8: {line}"
        elif line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield number, f"not valid JSON ({e.msg})"
                continue
            yield number, row if isinstance(row, dict) else "not a JSON object"


def table_rows(path: str, delimiter: str, columns: list[str]) -> Iterator[tuple[int, dict | str]]:
    """(last line, {header: value} or why it is bad) for every data row.

    Lines are decoded one at a time so that bytes that are not UTF-8 are
    reported by line; a row holding such a line is bad. A quoted field may
    span lines (csv quoting).

    Raises:
      ValueError: the header lacks one of `columns` or is not UTF-8.
    """
    undecodable: dict[int, str] = {}

    def decoded() -> Iterator[str]:
        for number, line in files.numbered_lines(path):
            if isinstance(line, UnicodeDecodeError):
                undecodable[number] = f"not UTF-8: {line}"
                # Still a line to csv, so that the rows around it stay as they are.
                line = line.object.decode("utf-8", errors="replace")
            yield line + "\n"  # csv keeps newlines inside quoted fields.

    reader = csv.DictReader(decoded(), delimiter=delimiter)
    if reader.fieldnames is None:  # Reads the header: None for an empty file.
        return
    if 1 in undecodable:
        raise ValueError(f"{path}:1: header is {undecodable[1]}")
    if missing := [c for c in columns if c not in reader.fieldnames]:
        raise ValueError(f"{path}:1: no column {missing[0]!r} (has {sorted(reader.fieldnames)})")
    first = reader.line_num + 1  # The first line of the next row.
    for row in reader:
        bad = [undecodable[n] for n in range(first, reader.line_num + 1) if n in undecodable]
        if bad:
            yield reader.line_num, bad[0]
        elif None in row or any(v is None for v in row.values()):
            yield reader.line_num, "wrong number of columns"
        else:
            yield reader.line_num, row
        first = reader.line_num + 1


def load_tfds(name: str, split: str, text_feature: str = "text", label_feature: str = "label",
              data_dir: str | None = None) -> tuple[list[Example], tuple[str, ...]]:  # fmt: skip
    """A TFDS text-classification split (e.g. `imdb_reviews`) and its label names.

    TFDS downloads and prepares the dataset on first use (into `data_dir`, or
    its default folder when None).
    """
    import tensorflow_datasets as tfds  # Imports TF: only when TFDS is asked for.

    ds, info = tfds.load(name, split=split, data_dir=data_dir, with_info=True)
    feats = info.features
    for f in (text_feature, label_feature):
        if f not in feats:
            raise ValueError(f"TFDS {name} has no feature {f!r}; features: {sorted(feats)}")
    names = tuple(feats[label_feature].names)
    out = []
    for i, ex in enumerate(tfds.as_numpy(ds)):
        text = ex[text_feature].decode("utf-8")
        out.append(Example(f"{split}-{i}", text, None, names[int(ex[label_feature])], i))
    return out, names
