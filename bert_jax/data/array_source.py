"""An in-memory, host-sharded, resumable batch source over aligned numpy arrays.

Fine-tuning sets (GLUE, SQuAD features, CoNLL) and held-out evaluation sets
fit in host memory; for them the simplest exact-resume loader is a seeded
permutation per epoch and a position counter. The state is two integers, so
a restored run continues with exactly the next batch.

Every host computes the same global permutation and takes its own contiguous
slice of each global batch (`process_index`), so the global batch assembled
by `jax.make_array_from_process_local_data` is identical for any number of
hosts.

Two options cut the padding work of short-text tasks without changing what
is computed (padded positions are masked out):

* `length_bucket`: each batch is cut to its longest row, rounded up to a
  multiple of the bucket (every distinct width compiles once). Arrays shaped
  like `attention_mask` (same rank, same last dim) are cut on their last axis.
* `group_by_length`: rows of similar length share a batch, as HF Trainer's
  `group_by_length` does: the epoch's permutation is cut into mega-batches
  of 50 batches, each sorted by length, and the batches are then shuffled.
  This changes which rows meet in a batch (not the rows seen per epoch); on
  SST-2 it makes the average batch 3x narrower.
* `pack_examples` = K: each global batch's examples are packed up to K to a
  row (`bert_jax.data.pack_examples`): the same examples per step, a few
  full rows instead of many padded ones.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from bert_jax.data import pack_examples as packing


class ArraySource:
    """Batches of rows of `arrays` (a dict of arrays with the same first dim).

    Args:
      arrays: name -> array (N, ...).
      global_batch_size: rows per global batch (all hosts together).
      seed: the shuffle seed; epoch e uses permutation(seed, e).
      shuffle: False for evaluation (rows in order).
      process_index, process_count: this host's share of every batch.
      drop_remainder: training drops the last partial batch; evaluation
        pads it with row 0 and marks the padding `valid` = 0, so every row
        is counted exactly once.
      length_bucket: cut batches to the longest row rounded up to a multiple
        of this (0: full width); needs `attention_mask` in `arrays`.
      group_by_length: batch rows of similar length together (shuffling only).
      pack_examples: pack each batch's examples up to this many to a row (0: off).
      pack_row_multiple: packed batches have a multiple of this many rows
        (all hosts together; the batch shards must divide it).
    """

    MEGA_BATCHES = 50  # batches sorted together by group_by_length (HF Trainer's default)

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        global_batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        process_index: int = 0,
        process_count: int = 1,
        drop_remainder: bool = True,
        length_bucket: int = 0,
        group_by_length: bool = False,
        pack_examples: int = 0,
        pack_row_multiple: int = 1,
    ):
        sizes = {k: len(v) for k, v in arrays.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"arrays must have the same number of rows, got {sizes}")
        if global_batch_size % process_count:
            raise ValueError(
                f"global batch {global_batch_size} is not divisible by {process_count} hosts"
            )
        self.arrays = arrays
        self.num_rows = next(iter(sizes.values()))
        if drop_remainder and self.num_rows < global_batch_size:
            raise ValueError(
                f"{self.num_rows} examples are fewer than one global batch of {global_batch_size}"
            )
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // process_count
        self.seed, self.shuffle, self.drop_remainder = seed, shuffle, drop_remainder
        self.process_index, self.process_count = process_index, process_count
        self.epoch, self.position = 0, 0  # position: batches already served this epoch
        if length_bucket < 0:
            raise ValueError(f"length_bucket must be >= 0, got {length_bucket}")
        self.length_bucket, self.group_by_length = length_bucket, group_by_length
        self.lengths = None
        self.pack_examples, self.pack_row_multiple = pack_examples, pack_row_multiple
        if pack_examples and pack_row_multiple % process_count:
            raise ValueError(
                f"pack_row_multiple {pack_row_multiple} is not divisible by {process_count} hosts"
            )
        if length_bucket or group_by_length or pack_examples:
            if "attention_mask" not in arrays:
                raise ValueError(
                    "length_bucket/group_by_length/pack_examples need an attention_mask array"
                )
            mask = arrays["attention_mask"]
            # Real tokens per row; a multiple-choice row is as long as its longest choice.
            self.lengths = mask.sum(-1).reshape(self.num_rows, -1).max(-1)
            self.seq_keys = [
                k
                for k, v in arrays.items()
                if v.ndim == mask.ndim and v.shape[-1] == mask.shape[-1]
            ]

    @classmethod
    def for_eval(
        cls,
        arrays,
        global_batch_size: int,
        process_index: int = 0,
        process_count: int = 1,
        length_bucket: int = 0,
        pack_examples: int = 0,
        pack_row_multiple: int = 1,
    ) -> ArraySource:
        """In order, every row once; the last batch padded and marked `valid` = 0."""
        return cls(
            arrays,
            global_batch_size,
            shuffle=False,
            drop_remainder=False,
            process_index=process_index,
            process_count=process_count,
            length_bucket=length_bucket,
            pack_examples=pack_examples,
            pack_row_multiple=pack_row_multiple,
        )

    @property
    def num_examples(self) -> int:
        """Rows per epoch (all hosts): what num_train_epochs counts."""
        return self.num_rows

    @property
    def batches_per_epoch(self) -> int:
        full, rest = divmod(self.num_rows, self.global_batch_size)
        return full if self.drop_remainder or rest == 0 else full + 1

    def get_state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def set_state(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_rows)
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.num_rows)
        return self._grouped(order, rng) if self.group_by_length else order

    def _grouped(self, order: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """`order` with each mega-batch sorted by length, then whole batches shuffled."""
        b = self.global_batch_size
        mega = b * self.MEGA_BATCHES
        order = np.concatenate(
            [
                chunk[np.argsort(-self.lengths[chunk], kind="stable")]
                for chunk in np.split(order, range(mega, len(order), mega))
            ]
        )
        full = len(order) // b
        batches = order[: full * b].reshape(full, b)[rng.permutation(full)]
        return np.concatenate([batches.reshape(-1), order[full * b :]])

    def _width(self, rows: np.ndarray) -> int | None:
        """The batch's cut width, or None to keep the full width."""
        if not self.length_bucket:
            return None
        longest = max(int(self.lengths[rows].max()), 1)
        full = self.arrays["attention_mask"].shape[-1]
        return min(-(-longest // self.length_bucket) * self.length_bucket, full)

    def _batch(self, order: np.ndarray, i: int) -> dict[str, np.ndarray]:
        rows = order[i * self.global_batch_size : (i + 1) * self.global_batch_size]
        valid = np.ones(self.global_batch_size, np.int32)
        if len(rows) < self.global_batch_size:  # final partial eval batch
            valid[len(rows) :] = 0
            rows = np.concatenate([rows, np.zeros(self.global_batch_size - len(rows), rows.dtype)])
        if self.pack_examples:  # every host packs the global batch alike, then takes its rows
            full = {k: v[rows] for k, v in self.arrays.items()} | {"valid": valid}
            packed = packing.pack_batch(
                full, self.pack_examples, self.pack_row_multiple, self.length_bucket
            )
            per_host = len(packed["valid"]) // self.process_count
            lo = self.process_index * per_host
            return {k: v[lo : lo + per_host] for k, v in packed.items()}
        lo = self.process_index * self.local_batch_size
        mine = slice(lo, lo + self.local_batch_size)
        out = {k: v[rows[mine]] for k, v in self.arrays.items()}
        width = self._width(rows)  # from the global batch: every host cuts alike
        if width is not None:
            out.update({k: out[k][..., :width] for k in self.seq_keys})
        out["valid"] = valid[mine]
        return out

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        """Endless training iteration from the current state, epoch after epoch."""
        while True:
            order = self._order()
            while self.position < self.batches_per_epoch:
                batch = self._batch(order, self.position)
                self.position += 1
                yield batch
            self.epoch, self.position = self.epoch + 1, 0

    def one_epoch(self) -> Iterator[dict[str, np.ndarray]]:
        """One pass in order-of-state, not touching the state (for evaluation)."""
        order = self._order()
        for i in range(self.batches_per_epoch):
            yield self._batch(order, i)
