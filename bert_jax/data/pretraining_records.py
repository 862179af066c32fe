"""Pretraining examples as TFRecords in the original BERT feature layout.

The feature names and types are those written by google-research/bert
`create_pretraining_data.py` (`write_instance_to_example_files`) and read by
its `run_pretraining.py` (`input_fn_builder`), so TFRecords made by the
original scripts (and MLPerf's, which reuse the layout) load unchanged.
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


def _length(kind, max_seq_length: int, max_predictions: int) -> int:
    return {"seq": max_seq_length, "pred": max_predictions}.get(kind, kind)


# Dynamic-masking records (create_pretraining_data --dynamic) carry only these;
# the loader draws the masks.
UNMASKED = ("input_ids", "input_mask", "segment_ids", "next_sentence_labels")


def parse_spec(max_seq_length: int, max_predictions: int, dynamic: bool = False) -> dict:
    """tf.io.parse_example spec for static (all features) or dynamic records."""
    return {
        name: tf.io.FixedLenFeature([_length(kind, max_seq_length, max_predictions)], dtype)
        for name, (dtype, kind) in FEATURES.items()
        if not dynamic or name in UNMASKED
    }


def check_files(files: list[str], max_seq_length: int, max_predictions: int) -> bool:
    """Validate every file's first record; True if the records are dynamic (unmasked).

    Raises a ValueError naming the file for a missing or differently-shaped
    feature, an empty file, or a mix of static and dynamic files.
    """
    kinds = {f: _check_file(f, max_seq_length, max_predictions) for f in files}
    if len(set(kinds.values())) > 1:
        dyn = [f for f, d in kinds.items() if d]
        raise ValueError(
            f"mixed static and dynamic-masking files, e.g. {dyn[0]} has no masked_lm_* features"
        )
    return next(iter(kinds.values()))


def _check_file(path: str, max_seq_length: int, max_predictions: int) -> bool:
    """Validate the first record's features so a mismatch names this file."""
    for raw in tf.data.TFRecordDataset(path).take(1):
        ex = tf.train.Example.FromString(raw.numpy())
        dynamic = "masked_lm_positions" not in ex.features.feature
        for name, (dtype, kind) in FEATURES.items():
            if dynamic and name not in UNMASKED:
                continue
            if name not in ex.features.feature:
                raise ValueError(
                    f"{path}: feature {name!r} is missing (has {sorted(ex.features.feature)})"
                )
            f = ex.features.feature[name]
            values = f.float_list.value if dtype == tf.float32 else f.int64_list.value
            want = _length(kind, max_seq_length, max_predictions)
            if len(values) != want:
                raise ValueError(
                    f"{path}: feature {name!r} has length {len(values)}, "
                    f"expected {want} for max_seq_length={max_seq_length}, "
                    f"max_predictions_per_seq={max_predictions}"
                )
        return dynamic
    raise ValueError(f"{path}: contains no records")


def read_tfrecords(
    patterns: str | Iterable[str], max_seq_length: int, max_predictions: int
) -> dict[str, np.ndarray]:
    """Read every example of the files into aligned int32/float32 arrays."""
    paths = files.expand_globs(patterns)
    spec = parse_spec(
        max_seq_length, max_predictions, check_files(paths, max_seq_length, max_predictions)
    )
    ds = tf.data.TFRecordDataset(paths).batch(4096).map(lambda r: tf.io.parse_example(r, spec))
    cols: dict[str, list[np.ndarray]] = {k: [] for k in spec}
    for batch in ds.as_numpy_iterator():
        for k in spec:
            cols[k].append(batch[k])
    out = {}
    for k in spec:
        arr = np.concatenate(cols[k])
        out[k] = arr.astype(np.float32 if arr.dtype == np.float32 else np.int32)
    out["next_sentence_labels"] = out["next_sentence_labels"][:, 0]
    return out
