"""Pack pretraining examples several to a row, so padding costs (almost) nothing.

    python -m bert_jax.data.pretraining.pack_records --input_file='data/train-*.tfrecord' \\
        --output_file=data/packed-00.tfrecord,data/packed-01.tfrecord \\
        --max_seq_length=128 --max_predictions_per_seq=20 --examples_per_row=3

An example of the original layout (static masking, or dynamic from
`create_pretraining_data --dynamic`; from any source, the original scripts'
and MLPerf's included) fills only its real length l of a row; the rest is
padding the model computes on. Packing puts up to K examples in one row of
length L, as in "Efficient Sequence Packing without Cross-contamination"
(Krell et al. 2021): each example keeps its own positions (restarting at 0),
attends only to its own tokens (`example_ids`, see `BertModel`), and keeps
its [CLS] (`cls_positions`) for NSP; its masked positions move by its offset.
So the model computes per example what it computes unpacked (tested).

Rows are filled best-fit decreasing within blocks of `--block` examples
(deterministic; a block is held in memory): examples in decreasing length,
each into the open row with the least room that fits it and holds fewer
than K and has room for its masked positions: a row holds at most
`--max_predictions_per_row` of them (default max_predictions_per_seq, so a
packed row has the prediction slots of an unpacked one and none is
dropped). Rows are then shuffled (seeded) and written round-robin.
Printed: packing efficiency, real tokens / (rows x L), before and after.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np
from absl import app, flags, logging

from bert_jax.data import files, progress

FLAGS = flags.FLAGS


def pack_lengths(
    lengths: Sequence[int],
    capacity: int,
    max_per_row: int,
    predictions: Sequence[int] | None = None,
    prediction_capacity: int = 0,
) -> list[list[int]]:
    """Best-fit decreasing: indices of the examples of each row, rows in creation order.

    Args:
      lengths: each example's real tokens (1..capacity).
      capacity: tokens per row (max_seq_length).
      max_per_row: examples per row at most (K).
      predictions: each example's masked positions, when a row's are bounded too.
      prediction_capacity: a row's masked positions at most (with `predictions`).
    """
    lengths = np.asarray(lengths, np.int64)
    if lengths.size and (lengths.min() < 1 or lengths.max() > capacity):
        raise ValueError(f"example lengths must be in 1..{capacity}, got {lengths.min()}..")
    preds = np.zeros_like(lengths) if predictions is None else np.asarray(predictions, np.int64)
    room = prediction_capacity if predictions is not None else 0
    if predictions is not None and preds.size and preds.max() > room:
        raise ValueError(f"an example has {preds.max()} predictions, a row {room}")
    # open_rows[r]: rows with r free tokens that can take another example.
    open_rows: list[list[int]] = [[] for _ in range(capacity + 1)]
    has_room = np.zeros(capacity + 1, bool)
    rows: list[list[int]] = []
    free: list[int] = []
    free_preds: list[int] = []
    for i in np.argsort(-lengths, kind="stable"):
        n, p = int(lengths[i]), int(preds[i])
        row = None
        for r in n + np.flatnonzero(has_room[n:]):  # the tightest row that fits
            fitting = [x for x in open_rows[r] if free_preds[x] >= p]
            if fitting:
                row = fitting[-1]
                open_rows[r].remove(row)
                has_room[r] = bool(open_rows[r])
                break
        if row is None:
            row = len(rows)
            rows.append([])
            free.append(capacity)
            free_preds.append(room)
        rows[row].append(int(i))
        free[row] -= n
        free_preds[row] -= p
        if len(rows[row]) < max_per_row and free[row] > 0:
            open_rows[free[row]].append(row)
            has_room[free[row]] = True
    return rows


@dataclasses.dataclass
class PackStats:
    examples: int = 0
    rows: int = 0
    real_tokens: int = 0
    dropped_predictions: int = 0

    def efficiency(self, seq_len: int) -> tuple[float, float]:
        """(before, after): real tokens / (rows x L), one example per row vs packed."""
        return (
            self.real_tokens / max(self.examples * seq_len, 1),
            self.real_tokens / max(self.rows * seq_len, 1),
        )


def pack_arrays(
    ex: dict[str, np.ndarray],
    max_seq_length: int,
    examples_per_row: int,
    max_predictions_per_row: int,
    rng: np.random.Generator,
    stats: PackStats | None = None,
) -> dict[str, np.ndarray]:
    """Examples in the original layout (`read_tfrecords` arrays) -> packed rows.

    Static examples (with `masked_lm_*`) keep their predictions, moved by their
    offset; rows take examples only while their predictions fit in
    `max_predictions_per_row`, so none is dropped. Dynamic examples are packed
    without predictions (the loader draws them per row).
    """
    L, K = max_seq_length, examples_per_row
    lengths = ex["input_mask"].sum(-1)
    static = "masked_lm_positions" in ex
    preds = (ex["masked_lm_weights"] > 0).sum(-1) if static else None
    groups = pack_lengths(lengths, L, K, preds, max_predictions_per_row)
    order = rng.permutation(len(groups))
    n = len(groups)
    out = {
        "input_ids": np.zeros((n, L), np.int32),
        "input_mask": np.zeros((n, L), np.int32),
        "segment_ids": np.zeros((n, L), np.int32),
        "position_ids": np.zeros((n, L), np.int32),
        "example_ids": np.zeros((n, L), np.int32),
        "next_sentence_labels": np.zeros((n, K), np.int32),
        "cls_positions": np.zeros((n, K), np.int32),
        "nsp_weights": np.zeros((n, K), np.float32),
    }
    P = max_predictions_per_row
    if static:
        out |= {
            "masked_lm_positions": np.zeros((n, P), np.int32),
            "masked_lm_ids": np.zeros((n, P), np.int32),
            "masked_lm_weights": np.zeros((n, P), np.float32),
        }
    stats = PackStats() if stats is None else stats
    for r, g in enumerate(order):
        offset, p = 0, 0
        for j, i in enumerate(groups[g]):
            length = int(lengths[i])
            span = slice(offset, offset + length)
            for k in ("input_ids", "input_mask", "segment_ids"):
                out[k][r, span] = ex[k][i, :length]
            out["position_ids"][r, span] = np.arange(length)
            out["example_ids"][r, span] = j + 1
            out["next_sentence_labels"][r, j] = ex["next_sentence_labels"][i]
            out["cls_positions"][r, j] = offset
            out["nsp_weights"][r, j] = 1.0
            if static:
                real = ex["masked_lm_weights"][i] > 0
                pos = ex["masked_lm_positions"][i][real]
                take = min(len(pos), P - p)
                stats.dropped_predictions += len(pos) - take
                out["masked_lm_positions"][r, p : p + take] = pos[:take] + offset
                out["masked_lm_ids"][r, p : p + take] = ex["masked_lm_ids"][i][real][:take]
                out["masked_lm_weights"][r, p : p + take] = 1.0
                p += take
            offset += length
    stats.examples += len(lengths)
    stats.rows += n
    stats.real_tokens += int(lengths.sum())
    return out


def unpack_row(row: dict[str, np.ndarray], r: int) -> list[dict[str, np.ndarray]]:
    """The examples of packed row `r`, unpadded (for checks and inspection)."""
    out = []
    for j in range(int((row["nsp_weights"][r] > 0).sum())):
        tokens = np.flatnonzero(row["example_ids"][r] == j + 1)
        start, stop = int(tokens[0]), int(tokens[-1]) + 1
        ex = {k: row[k][r, start:stop] for k in ("input_ids", "segment_ids", "position_ids")}
        ex["next_sentence_label"] = int(row["next_sentence_labels"][r, j])
        if "masked_lm_positions" in row:
            keep = (row["masked_lm_weights"][r] > 0) & (
                (row["masked_lm_positions"][r] >= start) & (row["masked_lm_positions"][r] < stop)
            )
            ex["masked_lm_positions"] = row["masked_lm_positions"][r][keep] - start
            ex["masked_lm_ids"] = row["masked_lm_ids"][r][keep]
        out.append(ex)
    return out


def write_rows(writers, rows: dict[str, np.ndarray], start: int) -> int:
    """Rows as tf.Examples, round-robin over `writers` from row number `start`."""
    import tensorflow as tf

    n = len(rows["input_ids"])
    for r in range(n):
        feats = {}
        for k, v in rows.items():
            values = v[r].reshape(-1)
            if v.dtype == np.float32:
                feats[k] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
            else:
                feats[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        example = tf.train.Example(features=tf.train.Features(feature=feats))
        writers[(start + r) % len(writers)].write(example.SerializeToString())
    return start + n


def blocks(
    paths: list[str], max_seq_length: int, max_predictions: int, block: int
) -> Iterator[dict[str, np.ndarray]]:
    """The examples of the files, in order, `block` at a time."""
    import tensorflow as tf

    from bert_jax.data.pretraining import records as records  # TensorFlow: only here

    dynamic = records.check_files(paths, max_seq_length, max_predictions)
    spec = records.parse_spec(max_seq_length, max_predictions, dynamic)
    ds = tf.data.TFRecordDataset(paths).batch(block).map(lambda r: tf.io.parse_example(r, spec))
    for raw in ds.as_numpy_iterator():
        out = {
            k: np.asarray(v, np.float32 if v.dtype == np.float32 else np.int32)
            for k, v in raw.items()
        }
        out["next_sentence_labels"] = out["next_sentence_labels"][:, 0]
        yield out


def run(
    input_files: list[str],
    output_files: list[str],
    max_seq_length: int,
    max_predictions_per_seq: int,
    examples_per_row: int,
    max_predictions_per_row: int = 0,
    block: int = 100_000,
    seed: int = 12345,
) -> PackStats:
    """Packs the examples of `input_files` into `output_files`; returns the counts."""
    import tensorflow as tf

    if examples_per_row < 2:
        raise ValueError(f"examples_per_row={examples_per_row}: packing needs at least 2")
    capacity = max_predictions_per_row or max_predictions_per_seq
    stats = PackStats()
    # The record count is unknown until read: examples and their rate, a block at a time.
    bar = progress.bar(desc="packing", unit=" examples", unit_scale=True)
    with bar, files.atomic_paths(output_files) as temps:
        writers = [tf.io.TFRecordWriter(t) for t in temps]
        try:
            written = 0
            for b, ex in enumerate(
                blocks(input_files, max_seq_length, max_predictions_per_seq, block)
            ):
                rng = np.random.default_rng([seed, b])
                rows = pack_arrays(ex, max_seq_length, examples_per_row, capacity, rng, stats)
                written = write_rows(writers, rows, written)
                bar.set_postfix_str(f"{stats.rows:,} rows", refresh=False)
                bar.update(len(ex["input_ids"]))
        finally:
            for w in writers:
                w.close()
    before, after = stats.efficiency(max_seq_length)
    logging.info(
        "packed %d examples into %d rows: efficiency %.1f%% -> %.1f%%; %d predictions dropped",
        stats.examples,
        stats.rows,
        100 * before,
        100 * after,
        stats.dropped_predictions,
    )
    return stats


def _define_flags() -> None:
    flags.DEFINE_string("input_file", None, "Pretraining TFRecords (comma-separated globs).")
    flags.DEFINE_string("output_file", None, "Output TFRecords, comma-separated.")
    flags.DEFINE_integer("max_seq_length", 128, "Row length L (the records' max_seq_length).")
    flags.DEFINE_integer("max_predictions_per_seq", 20, "The input records' predictions.")
    flags.DEFINE_integer("examples_per_row", 3, "K: examples per row at most.")
    flags.DEFINE_integer(
        "max_predictions_per_row", 0, "A row's predictions (0: max_predictions_per_seq)."
    )
    flags.DEFINE_integer("block", 100_000, "Examples packed together (held in memory).")
    flags.DEFINE_integer("seed", 12345, "Row shuffle seed.")
    flags.mark_flags_as_required(["input_file", "output_file"])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    stats = run(
        files.expand_globs(FLAGS.input_file),
        [f.strip() for f in FLAGS.output_file.split(",") if f.strip()],
        FLAGS.max_seq_length,
        FLAGS.max_predictions_per_seq,
        FLAGS.examples_per_row,
        FLAGS.max_predictions_per_row,
        FLAGS.block,
        FLAGS.seed,
    )
    before, after = stats.efficiency(FLAGS.max_seq_length)
    print(
        f"{stats.examples} examples -> {stats.rows} rows of {FLAGS.max_seq_length}; packing "
        f"efficiency {before:.1%} -> {after:.1%}; {stats.dropped_predictions} predictions dropped"
    )


if __name__ == "__main__":
    _define_flags()
    app.run(main)
