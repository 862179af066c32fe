"""The in-memory batch sources a fine-tuning config asks for.

Keys (configs/finetune.py): `train_batch_size`, `eval_batch_size`, `seed`,
`data.length_bucket` (cut batches to their longest row, rounded up to a
multiple of this; 0: always `max_seq_length` wide) and `data.group_by_length`
(rows of similar length share a training batch). See `ArraySource`.
"""

from __future__ import annotations

import numpy as np

from bert_jax.data.array_source import ArraySource


def train_source(
    config, arrays: dict[str, np.ndarray], process_index: int, process_count: int
) -> ArraySource:
    return ArraySource(
        arrays,
        config.train_batch_size,
        seed=config.seed,
        process_index=process_index,
        process_count=process_count,
        length_bucket=config.data.get("length_bucket", 0),
        group_by_length=config.data.get("group_by_length", False),
    )


def eval_source(
    config,
    arrays: dict[str, np.ndarray],
    process_index: int,
    process_count: int,
    per_token_stats: bool = False,
) -> ArraySource:
    """Every row once, in order. Tasks whose eval stats are per token (NER tags,
    SQuAD logits) keep the full width, so their batches concatenate."""
    bucket = 0 if per_token_stats else config.data.get("length_bucket", 0)
    return ArraySource.for_eval(
        arrays, config.eval_batch_size, process_index, process_count, length_bucket=bucket
    )
