"""Labelled text for classification: local TSV / CSV / JSONL files, or a TFDS dataset.

Intent, spam or sentiment data in the shapes people keep it: a table with a
text column (optionally a second text column for pairs) and a label column.
Rows that cannot be used are reported with file and line.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from bert_jax.data.glue import Example


def read_table(path: str, text_column: str, label_column: str, text_b_column: str = "",
               labels: tuple[str, ...] | None = None) -> list[Example]:  # fmt: skip
    """Rows of a .tsv, .csv (with a header) or .jsonl file as Examples.

    Raises:
      ValueError: naming file and line, for a missing column, empty text, or
        a label outside `labels` (when given).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    suffix = p.suffix.lower()
    if suffix not in (".tsv", ".csv", ".jsonl", ".json"):
        raise ValueError(f"{p}: unsupported file type {suffix!r} (use .tsv, .csv or .jsonl)")
    out = []
    for line, row in _rows(p, suffix):
        where = f"{p}:{line}"
        for col in filter(None, (text_column, label_column, text_b_column)):
            if col not in row:
                raise ValueError(f"{where}: no column {col!r} (has {sorted(row)})")
        text = str(row[text_column]).strip()
        if not text:
            raise ValueError(f"{where}: empty text in column {text_column!r}")
        label = str(row[label_column]).strip()
        if labels is not None and label not in labels:
            raise ValueError(f"{where}: label {label!r} is not one of {list(labels)}")
        text_b = str(row[text_b_column]).strip() if text_b_column else None
        out.append(Example(f"{p.stem}-{line}", text, text_b, label, len(out)))
    if not out:
        raise ValueError(f"{p}: no rows")
    return out


def _rows(p: Path, suffix: str):
    with open(p, encoding="utf-8-sig", newline="") as f:
        if suffix in (".jsonl", ".json"):
            for i, raw in enumerate(f, start=1):
                if raw.strip():
                    try:
                        yield i, json.loads(raw)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{p}:{i}: not valid JSON ({e.msg})") from e
            return
        reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                raise ValueError(f"{p}:{reader.line_num}: wrong number of columns")
            yield reader.line_num, row


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
