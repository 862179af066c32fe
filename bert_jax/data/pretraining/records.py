"""Pretraining examples as TFRecords in the original BERT feature layout.

The feature names and types are those written by google-research/bert
`create_pretraining_data.py` (`write_instance_to_example_files`) and read by
its `run_pretraining.py` (`input_fn_builder`), so TFRecords made by the
original scripts (and MLPerf's, which reuse the layout) load unchanged.

Packed records (`bert_jax.data.pretraining.pack_records`: several examples per row, K at
most) add `PACKED` features and carry K next-sentence labels; their
`masked_lm_*` hold the row's predictions. `examples_per_row` = K says which
layout to read (0: the original).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from bert_jax.data import files

# name -> (dtype, length key): "seq" = max_seq_length, "pred" =
# max_predictions_per_seq, 1 = a scalar stored as a length-1 list.
FEATURES = {
    "input_ids": (tf.int64, "seq"),
    "input_mask": (tf.int64, "seq"),
    "segment_ids": (tf.int64, "seq"),
    "masked_lm_positions": (tf.int64, "pred"),
    "masked_lm_ids": (tf.int64, "pred"),
    "masked_lm_weights": (tf.float32, "pred"),
    "next_sentence_labels": (tf.int64, 1),
}


# Added by packing: per token, the position within its example and the example's
# number in the row (1..K, 0 on padding); per example, its [CLS] position and a
# weight (0 for the empty example slots of a row).
PACKED = {
    "position_ids": (tf.int64, "seq"),
    "example_ids": (tf.int64, "seq"),
    "cls_positions": (tf.int64, "rows"),
    "nsp_weights": (tf.float32, "rows"),
}


def layout(examples_per_row: int = 0) -> dict:
    """name -> (dtype, length key) of the original layout, or the packed one (K > 0)."""
    if not examples_per_row:
        return dict(FEATURES)
    return FEATURES | {"next_sentence_labels": (tf.int64, "rows")} | PACKED


def _length(kind, max_seq_length: int, max_predictions: int, examples_per_row: int = 0) -> int:
    lengths = {"seq": max_seq_length, "pred": max_predictions, "rows": examples_per_row}
    return lengths.get(kind, kind)


# Dynamic-masking records (create_pretraining_data --dynamic) carry only these
# (packed ones add the PACKED features); the loader draws the masks.
UNMASKED = ("input_ids", "input_mask", "segment_ids", "next_sentence_labels")
MASKED = ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights")


def parse_spec(
    max_seq_length: int, max_predictions: int, dynamic: bool = False, examples_per_row: int = 0
) -> dict:
    """tf.io.parse_example spec for static (all features) or dynamic records."""
    return {
        name: tf.io.FixedLenFeature(
            [_length(kind, max_seq_length, max_predictions, examples_per_row)], dtype
        )
        for name, (dtype, kind) in layout(examples_per_row).items()
        if not dynamic or name not in MASKED
    }


def check_files(
    files: list[str], max_seq_length: int, max_predictions: int, examples_per_row: int = 0
) -> bool:
    """Validate every file's first record; True if the records are dynamic (unmasked).

    Raises a ValueError naming the file for a missing or differently-shaped
    feature, an empty file, or a mix of static and dynamic files.
    """
    kinds = {f: _check_file(f, max_seq_length, max_predictions, examples_per_row) for f in files}
    if len(set(kinds.values())) > 1:
        dyn = [f for f, d in kinds.items() if d]
        raise ValueError(
            f"mixed static and dynamic-masking files, e.g. {dyn[0]} has no masked_lm_* features"
        )
    return next(iter(kinds.values()))


def corrupt_file_error(path: str, e: Exception) -> ValueError:
    """A ValueError naming `path` for TF's DataLossError (whose message names no file)."""
    why = getattr(e, "message", str(e)).split("}}")[-1].split(" [Op:")[0].strip()
    return ValueError(f"{path}: not a complete TFRecord file ({why})")


def _check_file(
    path: str, max_seq_length: int, max_predictions: int, examples_per_row: int = 0
) -> bool:
    """Validate the first record's features so a mismatch names this file."""
    try:
        first = list(tf.data.TFRecordDataset(path).take(1))
    except tf.errors.DataLossError as e:
        raise corrupt_file_error(path, e) from None
    for raw in first:
        try:
            ex = tf.train.Example.FromString(raw.numpy())
        except Exception as e:  # protobuf's DecodeError
            raise ValueError(f"{path}: record 1 is not a tf.train.Example ({e})") from None
        feats = ex.features.feature
        if ("example_ids" in feats) != bool(examples_per_row):
            found = len(feats["cls_positions"].int64_list.value) if "cls_positions" in feats else 0
            raise ValueError(
                f"{path}: the records are {'packed' if found else 'not packed'}"
                + (f" with {found} examples per row" if found else "")
                + f"; data.examples_per_row is {examples_per_row}"
            )
        dynamic = "masked_lm_positions" not in feats
        for name, (dtype, kind) in layout(examples_per_row).items():
            if dynamic and name in MASKED:
                continue
            if name not in ex.features.feature:
                raise ValueError(
                    f"{path}: feature {name!r} is missing (has {sorted(ex.features.feature)})"
                )
            f = ex.features.feature[name]
            values = f.float_list.value if dtype == tf.float32 else f.int64_list.value
            want = _length(kind, max_seq_length, max_predictions, examples_per_row)
            if len(values) != want:
                raise ValueError(
                    f"{path}: feature {name!r} has length {len(values)}, "
                    f"expected {want} for max_seq_length={max_seq_length}, "
                    f"max_predictions_per_seq={max_predictions}, "
                    f"examples_per_row={examples_per_row}"
                )
        return dynamic
    raise ValueError(f"{path}: contains no records")


def read_tfrecords(
    patterns: str | Iterable[str],
    max_seq_length: int,
    max_predictions: int,
    examples_per_row: int = 0,
) -> dict[str, np.ndarray]:
    """Read every example (or packed row) of the files into aligned int32/float32 arrays."""
    paths = files.expand_globs(patterns)
    dynamic = check_files(paths, max_seq_length, max_predictions, examples_per_row)
    spec = parse_spec(max_seq_length, max_predictions, dynamic, examples_per_row)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in spec}
    for path in paths:  # One file at a time: a corrupt record is reported with its file.
        ds = tf.data.TFRecordDataset(path).batch(4096)
        ds = ds.map(lambda r: tf.io.parse_example(r, spec))
        try:
            for batch in ds.as_numpy_iterator():
                for k in spec:
                    cols[k].append(batch[k])
        except tf.errors.DataLossError as e:
            raise corrupt_file_error(path, e) from None
        except tf.errors.InvalidArgumentError as e:  # a record that does not parse
            raise ValueError(
                f"{path}: a record does not match the features ({e.message})"
            ) from None
    out = {}
    for k in spec:
        arr = np.concatenate(cols[k])
        out[k] = arr.astype(np.float32 if arr.dtype == np.float32 else np.int32)
    if not examples_per_row:
        out["next_sentence_labels"] = out["next_sentence_labels"][:, 0]
    return out
