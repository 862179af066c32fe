"""An in-memory, host-sharded, resumable batch source over aligned numpy arrays.

Fine-tuning sets (GLUE, SQuAD features, CoNLL) and held-out evaluation sets
fit in host memory; for them the simplest exact-resume loader is a seeded
permutation per epoch and a position counter. The state is two integers, so
a restored run continues with exactly the next batch.

Every host computes the same global permutation and takes its own contiguous
slice of each global batch (`process_index`), so the global batch assembled
by `jax.make_array_from_process_local_data` is identical for any number of
hosts.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


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
    """

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
        self.process_index = process_index
        self.epoch, self.position = 0, 0  # position: batches already served this epoch

    @classmethod
    def for_eval(
        cls, arrays, global_batch_size: int, process_index: int = 0, process_count: int = 1
    ) -> ArraySource:
        """In order, every row once; the last batch padded and marked `valid` = 0."""
        return cls(
            arrays,
            global_batch_size,
            shuffle=False,
            drop_remainder=False,
            process_index=process_index,
            process_count=process_count,
        )

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
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.num_rows)

    def _batch(self, order: np.ndarray, i: int) -> dict[str, np.ndarray]:
        rows = order[i * self.global_batch_size : (i + 1) * self.global_batch_size]
        valid = np.ones(self.global_batch_size, np.int32)
        if len(rows) < self.global_batch_size:  # final partial eval batch
            valid[len(rows) :] = 0
            rows = np.concatenate([rows, np.zeros(self.global_batch_size - len(rows), rows.dtype)])
        lo = self.process_index * self.local_batch_size
        mine = slice(lo, lo + self.local_batch_size)
        out = {k: v[rows[mine]] for k, v in self.arrays.items()}
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
