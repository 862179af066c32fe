"""The in-memory batch sources a fine-tuning config asks for.

Keys (configs/finetune.py): `train_batch_size`, `eval_batch_size`, `seed`,
`data.length_bucket` (cut batches to their longest row, rounded up to a
multiple of this; 0: always `max_seq_length` wide), `data.group_by_length`
(rows of similar length share a training batch) and, for sentence
classification, `data.pack_examples` / `data.pack_row_multiple` (each
batch's examples packed several to a row). See `ArraySource`.
"""

from __future__ import annotations

import numpy as np

from bert_jax.data.array_source import ArraySource


def _packing(config, packable: bool) -> dict:
    """The ArraySource packing options of config.data, checked against the task."""
    k = int(config.data.get("pack_examples", 0) or 0)
    if k < 0:
        raise ValueError(f"data.pack_examples must be >= 0, got {k}")
    if k and not packable:
        raise ValueError(
            f"data.pack_examples={k}: only sentence classification (task glue or classify) "
            f"packs examples; task {config.task!r} has per-token or per-choice outputs"
        )
    return {"pack_examples": k, "pack_row_multiple": config.data.get("pack_row_multiple", 1)}


def train_source(
    config,
    arrays: dict[str, np.ndarray],
    process_index: int,
    process_count: int,
    packable: bool = False,
) -> ArraySource:
    return ArraySource(
        arrays,
        config.train_batch_size,
        seed=config.seed,
        process_index=process_index,
        process_count=process_count,
        length_bucket=config.data.get("length_bucket", 0),
        group_by_length=config.data.get("group_by_length", False),
        **_packing(config, packable),
    )


def eval_source(
    config,
    arrays: dict[str, np.ndarray],
    process_index: int,
    process_count: int,
    per_token_stats: bool = False,
    packable: bool = False,
) -> ArraySource:
    """Every row once, in order (packed: every example once). Tasks whose eval
    stats are per token (NER tags, SQuAD logits) keep the full width, so their
    batches concatenate."""
    bucket = 0 if per_token_stats else config.data.get("length_bucket", 0)
    return ArraySource.for_eval(
        arrays,
        config.eval_batch_size,
        process_index,
        process_count,
        length_bucket=bucket,
        **_packing(config, packable),
    )
