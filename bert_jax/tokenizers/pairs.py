"""What the SentencePiece and byte-level BPE tokenizers share: HF-style pair encoding.

ALBERT and RoBERTa reproduce HF transformers' tokenizers, so their pair
truncation is HF's "longest_first" (`truncate_pair`), not the original BERT
`_truncate_seq_pair` that `wordpiece.BertTokenizer` keeps.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np


def truncate_pair(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """HF's "longest_first" pair truncation (Rust `tokenizers` truncate_encodings).

    If only the longer text must be cut, it keeps `budget - len(shorter)`;
    if both must be cut, the shorter keeps budget // 2 and the longer the
    rest, b counting as the longer on ties. The original BERT's pop-one-at-a-
    time loop differs only when both are cut to an odd budget and a is not
    longer than b (it gives the extra token to a).
    """
    if len(a) + len(b) <= budget:
        return a, b
    short, long_ = sorted((len(a), len(b)))
    keep_short, keep_long = short, max(short, budget - short)
    if short > budget or keep_short + keep_long > budget:
        keep_short, keep_long = budget // 2, budget - budget // 2
    if len(a) > len(b):
        return a[:keep_long], b[:keep_short]
    return a[:keep_short], b[:keep_long]


def budget(max_length: int, num_special: int) -> int:
    """Text tokens left in `max_length` after `num_special` special tokens."""
    if max_length < num_special:
        raise ValueError(f"max_length={max_length} leaves no room for {num_special} special tokens")
    return max_length - num_special


def pad_batch(
    encodings: Sequence[dict[str, list[int]]], max_length: int, pad_to: int | None, pad_id: int
) -> dict[str, np.ndarray]:
    """`encode` results -> int32 arrays (B, pad_to or max_length), as BertTokenizer's."""
    width = max_length if pad_to is None else pad_to
    if width < max_length:
        raise ValueError(f"pad_to={pad_to} is shorter than max_length={max_length}")
    lengths = np.array([len(e["input_ids"]) for e in encodings], np.int64)
    # Row-major boolean indexing fills each row's first `length` slots in order.
    filled = np.arange(width) < lengths[:, None]
    out = {}
    for key, fill in (("input_ids", pad_id), ("token_type_ids", 0)):
        out[key] = np.full((len(encodings), width), fill, np.int32)
        out[key][filled] = np.fromiter(
            itertools.chain.from_iterable(e[key] for e in encodings), np.int32, lengths.sum()
        )
    out["attention_mask"] = filled.astype(np.int32)
    return out


def check_pairs(texts_a: Sequence[str], texts_b: Sequence[str] | None) -> None:
    if texts_b is not None and len(texts_b) != len(texts_a):
        raise ValueError(f"{len(texts_a)} texts_a but {len(texts_b)} texts_b")


class PairEncoder:
    """Token/id conversion, `encode` and `encode_batch` of the family tokenizers, from
    their `vocab`/`inv_vocab`, `_ids(texts)` (pieces per text, no specials) and
    `_encode_ids(a, b, max_length)` (specials, token types and HF's pair truncation,
    which differ per family)."""

    pad_id: int
    vocab: dict[str, int]
    inv_vocab: dict[int, str]

    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]:
        return [self.vocab[t] for t in tokens]

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.inv_vocab[int(i)] for i in ids]

    def encode(
        self, text_a: str, text_b: str | None = None, max_length: int | None = None
    ) -> dict[str, list[int]]:
        """One text or pair with the family's special tokens, cut to `max_length`."""
        texts = [text_a] if text_b is None else [text_a, text_b]
        ids = self._ids(texts)
        return self._encode_ids(ids[0], ids[1] if text_b is not None else None, max_length)

    def encode_batch(
        self,
        texts_a: Sequence[str],
        texts_b: Sequence[str] | None = None,
        max_length: int = 128,
        pad_to: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Encodes and pads a batch to int32 arrays of shape (B, pad_to or max_length)."""
        check_pairs(texts_a, texts_b)
        ids_a = self._ids(texts_a)
        ids_b = [None] * len(ids_a) if texts_b is None else self._ids(texts_b)
        encodings = [self._encode_ids(a, b, max_length) for a, b in zip(ids_a, ids_b, strict=True)]
        return pad_batch(encodings, max_length, pad_to, self.pad_id)
