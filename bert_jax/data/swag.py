"""Multiple-choice data: the SWAG CSV layout, or a TFDS dataset (HellaSwag).

A row is {"context": str, "endings": [str] * num_choices, "label": int or
None (unlabelled test data)}.

* SWAG CSV (Zellers et al. 2018; the `train.csv`/`val.csv` of the release):
  `sent1` is the context, each ending is `sent2` followed by `ending<i>`.
* TFDS (`hellaswag`, SWAG's successor by the same authors, Zellers et al.
  2019; tensorflow_datasets `text/hellaswag.py`): features `context`,
  `endings` and `label` (-1 in the unlabelled test split).

Bad rows (a label outside 0..num_choices-1, an empty context, another number
of endings) follow `on_bad_input` (`bad_input`); a file without the SWAG
columns always fails.
"""

from __future__ import annotations

from absl import logging

from bert_jax.data import bad_input
from bert_jax.data.glue import ReadStats
from bert_jax.data.text_classification import table_rows


def _label(value, num_choices: int) -> tuple[int | None, str | None]:
    """(label or None for an unlabelled row, why it is bad or None)."""
    text = str(value).strip()
    if text in ("", "-1"):
        return None, None
    if text.isdigit() and int(text) < num_choices:
        return int(text), None
    return None, f"label {text!r} is not in 0..{num_choices - 1}"


def _finish(where: str, out: list, n_rows: int, stats: ReadStats, before: int, policy: str):
    stats.rows += n_rows
    stats.examples += len(out)
    if not n_rows:
        stats.empty_file(where, policy, "no rows")
    if stats.skipped > before:
        logging.warning("%s: skipped %d bad rows of %d", where, stats.skipped - before, n_rows)
    return out


def read_swag_csv(
    path: str,
    num_choices: int = 4,
    *,
    on_bad_input: str = "fail",
    stats: ReadStats | None = None,
) -> list[dict]:
    """The rows of a SWAG-format CSV (local or gs://, ".gz" allowed).

    Raises:
      ValueError: naming file and line, a bad row (or no rows) under "fail";
        a header without the SWAG columns (always).
      FileNotFoundError: no file at `path`.
    """
    bad_input.check(on_bad_input)
    stats = ReadStats() if stats is None else stats
    need = ["sent1", "sent2"] + [f"ending{i}" for i in range(num_choices)]
    before, n_rows, out = stats.skipped, 0, []
    for line, row in table_rows(path, ",", need):
        n_rows += 1
        if isinstance(row, str):
            stats.skip(f"{path}:{line}", row, on_bad_input)
            continue
        label, why = _label(row.get("label", ""), num_choices)
        why = why or (None if row["sent1"].strip() else "empty sent1")
        if why:
            stats.skip(f"{path}:{line}", why, on_bad_input)
            continue
        endings = [
            f"{row['sent2'].strip()} {row[f'ending{i}'].strip()}".strip()
            for i in range(num_choices)
        ]
        out.append({"context": row["sent1"].strip(), "endings": endings, "label": label})
    return _finish(path, out, n_rows, stats, before, on_bad_input)


def read_tfds(
    name: str,
    split: str,
    num_choices: int = 4,
    *,
    on_bad_input: str = "fail",
    stats: ReadStats | None = None,
) -> list[dict]:
    """The rows of a TFDS multiple-choice split; TFDS downloads and prepares the
    dataset on first use.

    Raises:
      ValueError: naming dataset, split and record, a bad record (another
        number of endings, a label outside 0..num_choices-1, an empty
        context) under "fail".
    """
    import tensorflow_datasets as tfds  # Imports TF: only when TFDS is asked for.

    bad_input.check(on_bad_input)
    stats = ReadStats() if stats is None else stats
    source = f"TFDS {name} split {split!r}"
    before, n_rows, out = stats.skipped, 0, []
    for i, ex in enumerate(tfds.as_numpy(tfds.load(name, split=split))):
        n_rows += 1
        endings = [e.decode("utf-8").strip() for e in ex["endings"]]
        context = ex["context"].decode("utf-8").strip()
        label, why = _label(int(ex["label"]), num_choices)
        if len(endings) != num_choices:
            why = f"{len(endings)} endings, config num_choices={num_choices}"
        why = why or (None if context else "empty context")
        if why:
            stats.skip(f"{source} record {i}", why, on_bad_input)
            continue
        out.append({"context": context, "endings": endings, "label": label})
    return _finish(source, out, n_rows, stats, before, on_bad_input)
