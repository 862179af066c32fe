"""Pack a batch of fine-tuning examples several to a row (classification).

Sentence classification data is short: a batch of 32 random SST-2 sentences
is about 20% real tokens at the width of its longest row. Packing puts the
batch's examples into as few rows of `capacity` tokens as fit them (best-fit
decreasing, `pack_records.pack_lengths`, the pretraining packer), each
example keeping its own positions, attending only to its own tokens and
pooled at its own [CLS] (Krell et al. 2021; `BertModel`'s `example_ids`,
`position_ids`, `cls_positions`). The step still trains on exactly the
batch's examples, with the same loss (a mean over them), so the optimisation
is the paper's; only the padding work goes.

Layout of a packed batch of R rows, width W, at most K examples per row:
  input_ids, token_type_ids, attention_mask, position_ids, example_ids: (R, W)
  cls_positions: (R, K); every per-example array (label, valid): (R, K, ...)
  `valid` is 0 on empty slots, so losses and metrics skip them.
"""

from __future__ import annotations

import numpy as np

from bert_jax.data.pretraining.pack_records import pack_lengths

PACKED_KEYS = ("position_ids", "example_ids", "cls_positions")


def pack_batch(
    arrays: dict[str, np.ndarray],
    max_per_row: int,
    row_multiple: int = 1,
    width_bucket: int = 0,
) -> dict[str, np.ndarray]:
    """One batch of examples (N, L) -> packed rows (R, W); rows with `valid` 0 are left out.

    Args:
      arrays: a batch in the unpacked layout; needs `attention_mask` (N, L)
        and `valid` (N,). Arrays shaped like `attention_mask` are token
        arrays; every other array is per example.
      max_per_row: K, examples per row at most.
      row_multiple: R is rounded up to a multiple of this with empty rows
        (the data-parallel shards must divide R; each distinct R compiles once).
      width_bucket: W is the fullest row rounded up to a multiple of this
        (0: L, the capacity).
    """
    mask = arrays["attention_mask"]
    capacity = mask.shape[-1]
    lengths = mask.sum(-1).astype(np.int64)
    keep = np.flatnonzero(arrays["valid"] > 0)
    packed = pack_lengths(lengths[keep], capacity, max_per_row)
    rows = [[int(keep[i]) for i in row] for row in packed]
    n_rows = max(-(-len(rows) // row_multiple) * row_multiple, row_multiple)
    fullest = max([int(lengths[r].sum()) for r in rows], default=1)
    width = min(-(-fullest // width_bucket) * width_bucket, capacity) if width_bucket else capacity
    token_keys = [k for k, v in arrays.items() if v.shape == mask.shape]
    out = {k: np.zeros((n_rows, width), arrays[k].dtype) for k in token_keys}
    out["position_ids"] = np.zeros((n_rows, width), np.int32)
    out["example_ids"] = np.zeros((n_rows, width), np.int32)
    out["cls_positions"] = np.zeros((n_rows, max_per_row), np.int32)
    for k, v in arrays.items():
        if k not in token_keys:
            out[k] = np.zeros((n_rows, max_per_row, *v.shape[1:]), v.dtype)
    for r, members in enumerate(rows):
        start = 0
        for slot, i in enumerate(members):
            n = int(lengths[i])
            span = slice(start, start + n)
            for k in token_keys:
                out[k][r, span] = arrays[k][i, :n]
            out["position_ids"][r, span] = np.arange(n)
            out["example_ids"][r, span] = slot + 1
            out["cls_positions"][r, slot] = start
            for k, v in arrays.items():
                if k not in token_keys:
                    out[k][r, slot] = v[i]
            start += n
    return out
