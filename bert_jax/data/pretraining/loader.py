"""Streaming, host-sharded, resumable tf.data loader for pretraining TFRecords.

Reads TFRecords in the original BERT feature layout. Records that carry
`masked_lm_*` features (static masking, as the original
`create_pretraining_data.py` writes) are used as they are; records without
them (`create_pretraining_data --dynamic`) are masked here, freshly for every
batch, so every epoch sees new masks (RoBERTa's dynamic masking).

Determinism and resume. The files are split into `num_shards` data shards
(file i belongs to shard i % num_shards); every shard is an independent
pipeline whose order in epoch e is a function of (seed, shard, e) only:
files permuted, interleaved, a seeded shuffle buffer, batched. The global
batch at a step is the concatenation of every shard's next batch, and a host
runs only the shards it owns (shard s on process s % process_count). So the
global batches are the same whatever the number of hosts, each host reads
only its own files, and the state is two integers per shard. On restore a
shard's pipeline is rebuilt for its epoch and skips the consumed records
before parsing: resume costs one read of that part of the epoch's files
(measured in the README), never a parse or a mask.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from bert_jax.data import files
from bert_jax.data.pretraining import records as records
from bert_jax.data.pretraining.masking_vocab import MaskingVocab


def _shard_seed(seed: int, shard: int, epoch: int) -> int:
    return int(np.random.default_rng([seed, shard, epoch]).integers(2**31 - 1))


def mask_batch(
    ids: np.ndarray,
    vocab: MaskingVocab,
    max_predictions: int,
    rng: np.random.Generator,
    *,
    masked_lm_prob: float = 0.15,
    whole_word: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Dynamic masking of a batch of unmasked sequences, vectorised over rows.

    Per row, as the original recipe: num_to_predict = min(max_predictions,
    max(1, round(n_tokens * masked_lm_prob))) positions (whole words when
    `whole_word`), never a special id, 80% -> [MASK], 10% kept, 10% a random
    replacement. The same distribution as `pretraining_instances.mask_tokens`,
    another random stream.

    Args:
      ids: (B, L) token ids padded with 0, as the records store them.
      vocab: `MaskingVocab.from_vocab(tokenizer.vocab)`.
      max_predictions: predictions per row (max_predictions_per_seq).
      rng: the batch's generator.
      masked_lm_prob: share of tokens to predict (0.15 BERT, 0.3 MosaicBERT).
      whole_word: mask all pieces of a word together.

    Returns:
      (masked ids, positions, label ids, weights), predictions padded to
      `max_predictions` with zeros.
    """
    b, length = ids.shape
    real = ids != 0  # Padding: records pad with 0 whatever the vocabulary.
    candidate = real & ~np.isin(ids, vocab.special_array)
    n_tokens = real.sum(1)
    n_pred = np.minimum(max_predictions, np.maximum(1, np.rint(n_tokens * masked_lm_prob)))
    n_pred = np.minimum(n_pred, candidate.sum(1)).astype(int)
    scores = rng.random((b, length))
    continuation = vocab.continuation_array[ids] & candidate if whole_word else None
    if whole_word:
        # A `##` piece shares the score of its word's first piece, so whole
        # words rank together.
        word_start = np.where(continuation, 0, np.arange(length)[None, :])
        word_start = np.maximum.accumulate(word_start, axis=1)
        scores = np.take_along_axis(scores, word_start, axis=1)
    scores = np.where(candidate, scores, 2.0)  # non-candidates sort last
    order = np.argsort(scores, axis=1, kind="stable")
    positions = np.zeros((b, max_predictions), np.int32)
    weights = np.zeros((b, max_predictions), np.float32)
    for r in range(b):  # rows differ in how many they take; B is small
        chosen = order[r, : n_pred[r]]
        if whole_word:
            chosen = _whole_words(order[r], candidate[r], continuation[r], n_pred[r])
        chosen = np.sort(chosen)
        positions[r, : len(chosen)] = chosen
        weights[r, : len(chosen)] = 1.0
    labels = np.take_along_axis(ids, positions, axis=1) * (weights > 0)
    action = rng.random((b, max_predictions))
    replacements = vocab.replacement_array
    random_ids = replacements[rng.integers(0, len(replacements), (b, max_predictions))]
    new = np.where(action < 0.8, vocab.mask_id, np.where(action < 0.9, labels, random_ids))
    masked = ids.copy()
    rows = np.repeat(np.arange(b), max_predictions)
    keep = weights.reshape(-1) > 0
    masked[rows[keep], positions.reshape(-1)[keep]] = new.reshape(-1)[keep]
    return masked.astype(np.int32), positions, labels.astype(np.int32), weights


def _whole_words(order, candidate, continuation, n_pred):
    """Take whole words in score order while they fit in n_pred (as the original)."""
    chosen: list[int] = []
    taken = set()
    length = len(candidate)
    for start in order:
        if not candidate[start] or start in taken or (continuation[start] and start - 1 in taken):
            continue
        if continuation[start]:
            continue  # pieces come with their word's first piece
        word = [start]
        j = start + 1
        while j < length and candidate[j] and continuation[j]:
            word.append(j)
            j += 1
        if len(chosen) + len(word) > n_pred:
            continue
        chosen += word
        taken.update(word)
        if len(chosen) >= n_pred:
            break
    return np.asarray(chosen, int)


class PretrainingLoader:
    """Global-batch iterator over pretraining TFRecords for this host's shards.

    Endless (epoch after epoch per shard); yields host-local batches (dict of
    numpy arrays) in the original feature names, with `masked_lm_*` filled by
    dynamic masking when the records have none.

    Dynamic masking (`mask_batch`) takes `masking_vocab` (required for such
    records), `masked_lm_prob` and `whole_word`; static records ignore them.
    Packed records (`examples_per_row` > 0, `bert_jax.data.pretraining.pack_records`)
    carry their packing features through; dynamic masking then draws a row's
    predictions over all its examples (max_predictions is the row's).
    """

    # A stream: epochs are not counted in examples (pretraining counts steps).
    num_examples = None

    def __init__(
        self,
        patterns,
        *,
        max_seq_length: int,
        max_predictions: int,
        global_batch_size: int,
        seed: int = 0,
        num_shards: int = 0,
        process_index: int = 0,
        process_count: int = 1,
        shuffle_buffer: int = 10_000,
        masking_vocab: MaskingVocab | None = None,
        masked_lm_prob: float = 0.15,
        whole_word: bool = False,
        examples_per_row: int = 0,
    ):
        self.files = files.expand_globs(patterns)
        self.examples_per_row = examples_per_row
        self.num_shards = num_shards or process_count
        if self.num_shards % process_count:
            raise ValueError(
                f"data.num_shards={self.num_shards} is not a multiple of the "
                f"{process_count} processes"
            )
        if global_batch_size % self.num_shards:
            raise ValueError(
                f"global batch {global_batch_size} is not divisible by "
                f"data.num_shards={self.num_shards}"
            )
        self.shard_batch = global_batch_size // self.num_shards
        self.my_shards = [s for s in range(self.num_shards) if s % process_count == process_index]
        self.seq_len, self.max_pred = max_seq_length, max_predictions
        self.seed, self.shuffle_buffer = seed, shuffle_buffer
        self.dynamic = records.check_files(
            self.files, max_seq_length, max_predictions, examples_per_row
        )
        if self.dynamic and masking_vocab is None:
            raise ValueError(
                f"{self.files[0]} has no masked_lm_* features (dynamic-masking "
                "records): the loader needs a masking_vocab (the vocabulary's ids)"
            )
        self.masking_vocab = masking_vocab
        self.masked_lm_prob, self.whole_word = masked_lm_prob, whole_word
        self.state = {str(s): {"epoch": 0, "position": 0} for s in self.my_shards}
        self._iters: dict[int, Iterator] = {}

    # --- state ------------------------------------------------------------
    def get_state(self) -> dict:
        return {k: dict(v) for k, v in self.state.items()}

    def set_state(self, state: dict) -> None:
        for s in self.my_shards:
            if str(s) not in state:
                raise ValueError(f"data state has no entry for shard {s}: {sorted(state)}")
            self.state[str(s)] = {k: int(v) for k, v in state[str(s)].items()}
        self._iters = {}

    # --- pipeline ---------------------------------------------------------
    def _shard_files(self, shard: int, epoch: int) -> list[str]:
        mine = self.files[shard :: self.num_shards] or self.files
        order = np.random.default_rng([self.seed, shard, epoch]).permutation(len(mine))
        return [mine[i] for i in order]

    def _dataset(self, shard: int, epoch: int, skip_batches: int) -> tf.data.Dataset:
        paths = self._shard_files(shard, epoch)
        ds = tf.data.Dataset.from_tensor_slices(paths)
        ds = ds.interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(4, len(paths)),
            block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        if len(self.files) < self.num_shards:  # too few files: split records instead
            ds = ds.shard(self.num_shards, shard)
        ds = ds.shuffle(
            self.shuffle_buffer,
            seed=_shard_seed(self.seed, shard, epoch),
            reshuffle_each_iteration=False,
        )
        ds = ds.skip(skip_batches * self.shard_batch)  # raw records: no parsing
        ds = ds.batch(self.shard_batch, drop_remainder=True)
        spec = records.parse_spec(self.seq_len, self.max_pred, self.dynamic, self.examples_per_row)
        ds = ds.map(
            lambda r: tf.io.parse_example(r, spec),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        return ds.prefetch(tf.data.AUTOTUNE)

    def _next_shard_batch(self, shard: int) -> dict[str, np.ndarray]:
        st = self.state[str(shard)]
        while True:
            if shard not in self._iters:
                self._iters[shard] = self._dataset(
                    shard, st["epoch"], st["position"]
                ).as_numpy_iterator()
            try:
                raw = next(self._iters[shard])
            except tf.errors.DataLossError as e:  # TF's message names no file
                paths = self._shard_files(shard, st["epoch"])
                where = f"one of data shard {shard}'s files {paths}"
                raise records.corrupt_file_error(where, e) from None
            except StopIteration:  # end of this shard's epoch
                del self._iters[shard]
                if st["position"] == 0:
                    raise ValueError(
                        f"data shard {shard} has fewer than {self.shard_batch} "
                        f"records (files {self._shard_files(shard, 0)})"
                    ) from None
                st["epoch"], st["position"] = st["epoch"] + 1, 0
                continue
            batch = self._finish(raw, shard, st["epoch"], st["position"])
            st["position"] += 1
            return batch

    def _finish(self, raw, shard, epoch, position) -> dict[str, np.ndarray]:
        out = {
            k: np.asarray(v, np.float32 if v.dtype == np.float32 else np.int32)
            for k, v in raw.items()
        }
        if not self.examples_per_row:
            out["next_sentence_labels"] = out["next_sentence_labels"].reshape(-1)
        if self.dynamic:
            rng = np.random.default_rng([self.seed, shard, epoch, position])
            ids, pos, labels, w = mask_batch(
                out["input_ids"],
                self.masking_vocab,
                self.max_pred,
                rng,
                masked_lm_prob=self.masked_lm_prob,
                whole_word=self.whole_word,
            )
            out |= {
                "input_ids": ids,
                "masked_lm_positions": pos,
                "masked_lm_ids": labels,
                "masked_lm_weights": w,
            }
        return out

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        while True:
            parts = [self._next_shard_batch(s) for s in self.my_shards]
            yield {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
