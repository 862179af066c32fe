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


def expand_files(patterns: str | Iterable[str]) -> list[str]:
    """Comma-separated globs (the original scripts' `--input_file`) -> sorted files."""
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(",") if p.strip()]
    files = []
    for p in patterns:
        found = sorted(tf.io.gfile.glob(p.strip())) if any(c in p for c in "*?[") else [p.strip()]
        if not found:
            raise FileNotFoundError(f"no files match {p!r}")
        files += found
    for f in files:
        if not tf.io.gfile.exists(f):
            raise FileNotFoundError(f"{f} does not exist")
    return files


def write_tfrecord(path: str, examples: dict[str, np.ndarray]) -> None:
    """Write aligned arrays (one row per example) as original-layout tf.Examples."""
    n = len(examples["input_ids"])
    with tf.io.TFRecordWriter(path) as w:
        for i in range(n):
            feats = {}
            for name, (dtype, _) in FEATURES.items():
                row = np.asarray(examples[name][i]).reshape(-1)
                if dtype == tf.float32:
                    feats[name] = tf.train.Feature(float_list=tf.train.FloatList(value=row))
                else:
                    feats[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=row))
            ex = tf.train.Example(features=tf.train.Features(feature=feats))
            w.write(ex.SerializeToString())


def _check_file(path: str, max_seq_length: int, max_predictions: int) -> None:
    """Validate the first record's features so a mismatch names this file."""
    for raw in tf.data.TFRecordDataset(path).take(1):
        ex = tf.train.Example.FromString(raw.numpy())
        for name, (dtype, kind) in FEATURES.items():
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
        return
    raise ValueError(f"{path}: contains no records")


def read_tfrecords(
    patterns: str | Iterable[str], max_seq_length: int, max_predictions: int
) -> dict[str, np.ndarray]:
    """Read every example of the files into aligned int32/float32 arrays."""
    files = expand_files(patterns)
    for f in files:
        _check_file(f, max_seq_length, max_predictions)
    spec = {
        name: tf.io.FixedLenFeature([_length(kind, max_seq_length, max_predictions)], dtype)
        for name, (dtype, kind) in FEATURES.items()
    }
    ds = tf.data.TFRecordDataset(files).map(lambda r: tf.io.parse_single_example(r, spec))
    cols: dict[str, list[np.ndarray]] = {k: [] for k in FEATURES}
    for batch in ds.batch(4096).as_numpy_iterator():
        for k in FEATURES:
            cols[k].append(batch[k])
    out = {}
    for k, (dtype, _) in FEATURES.items():
        arr = np.concatenate(cols[k])
        out[k] = arr.astype(np.float32 if dtype == tf.float32 else np.int32)
    out["next_sentence_labels"] = out["next_sentence_labels"][:, 0]
    return out
