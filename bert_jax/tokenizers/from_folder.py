"""The tokenizer a checkpoint folder asks for, and what the non-BERT families share.

Three families, told apart by their files (HF's file names):

| files                      | family                  | class                                    |
|----------------------------|-------------------------|------------------------------------------|
| `vocab.txt`                | BERT WordPiece          | `tokenizer.BertTokenizer`                |
| `spiece.model`             | ALBERT SentencePiece    | `sentencepiece_tokenizer.AlbertTokenizer` |
| `vocab.json`, `merges.txt` | RoBERTa byte-level BPE  | `bpe_tokenizer.RobertaTokenizer`         |

All three have BertTokenizer's interface (`tokenize`, `tokenize_with_offsets`,
`convert_tokens_to_ids`, `convert_ids_to_tokens`, `encode`, `encode_batch`,
`decode`, `vocab`, `vocab_size`, `cls_id`/`sep_id`/`pad_id`/`mask_id`/`unk_id`).
ALBERT and RoBERTa reproduce HF transformers' tokenizers, so their pair
truncation is HF's "longest_first" (`truncate_pair`), not the original BERT
`_truncate_seq_pair` that BertTokenizer keeps.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Family -> the files that identify it, in the order they are looked for.
FAMILY_FILES = {
    "wordpiece": ("vocab.txt",),
    "sentencepiece": ("spiece.model",),
    "bpe": ("vocab.json", "merges.txt"),
}


def family(path: str | Path) -> str:
    """The tokenizer family of a checkpoint folder, from the files it holds.

    Raises:
      FileNotFoundError: `path` is not a folder.
      ValueError: no family's files are all there (the message names the
        folder and every file looked for), or several families' are.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"tokenizer folder {folder} does not exist")
    found = [f for f, names in FAMILY_FILES.items() if all((folder / n).is_file() for n in names)]
    if not found:
        wanted = "; ".join(f"{f}: {' + '.join(names)}" for f, names in FAMILY_FILES.items())
        raise ValueError(f"no tokenizer files in {folder}: looked for {wanted}")
    if len(found) > 1:
        # E.g. a folder with both vocab.txt and spiece.model: guessing would
        # silently tokenize with the wrong vocabulary.
        raise ValueError(f"{folder} holds the files of several tokenizers ({found}); keep one")
    return found[0]


def from_folder(path: str | Path, do_lower_case: bool | None = None):
    """The tokenizer of a checkpoint folder, chosen by the files in it.

    Args:
      path: a folder with `vocab.txt`, `spiece.model`, or `vocab.json` and
        `merges.txt` (see `FAMILY_FILES`).
      do_lower_case: WordPiece and SentencePiece; None is the family's
        default (True for both, as the uncased BERT and ALBERT checkpoints
        and HF's AlbertTokenizer). Byte-level BPE vocabularies are cased and
        take the text as it is, so it does not apply to them (the fine-tuning
        configs' default `data.do_lower_case=True` is BERT's).

    Returns:
      A `BertTokenizer`, `AlbertTokenizer` or `RobertaTokenizer`.
    """
    folder = Path(path)
    kind = family(folder)
    # Imported here: the family modules import the helpers below.
    if kind == "wordpiece":
        from bert_jax.tokenizers.wordpiece import BertTokenizer

        lower = True if do_lower_case is None else do_lower_case
        return BertTokenizer(str(folder / "vocab.txt"), do_lower_case=lower)
    if kind == "sentencepiece":
        from bert_jax.tokenizers.spm import AlbertTokenizer

        lower = True if do_lower_case is None else do_lower_case
        return AlbertTokenizer(str(folder / "spiece.model"), do_lower_case=lower)
    from bert_jax.tokenizers.bpe import RobertaTokenizer

    return RobertaTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


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
    """`encode` and `encode_batch` of the family tokenizers, from their `_ids(texts)`
    (pieces per text, no specials) and `_encode_ids(a, b, max_length)` (specials,
    token types and HF's pair truncation, which differ per family)."""

    pad_id: int

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
