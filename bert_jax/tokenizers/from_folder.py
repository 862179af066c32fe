"""The tokenizer a checkpoint folder asks for.

Three families, told apart by their files (HF's file names):

| files                      | family                  | class                                    |
|----------------------------|-------------------------|------------------------------------------|
| `vocab.txt`                | BERT WordPiece          | `wordpiece.BertTokenizer`                |
| `spiece.model`             | ALBERT SentencePiece    | `spm.AlbertTokenizer`                     |
| `vocab.json`, `merges.txt` | RoBERTa byte-level BPE  | `bpe.RobertaTokenizer`                   |

All three have BertTokenizer's interface (`tokenize`, `tokenize_with_offsets`,
`convert_tokens_to_ids`, `convert_ids_to_tokens`, `encode`, `encode_batch`,
`decode`, `vocab`, `vocab_size`, `cls_id`/`sep_id`/`pad_id`/`mask_id`/`unk_id`).
ALBERT and RoBERTa reproduce HF transformers' tokenizers, so their pair
truncation is HF's "longest_first" (`truncate_pair`), not the original BERT
`_truncate_seq_pair` that BertTokenizer keeps.
"""

from __future__ import annotations

from pathlib import Path

from bert_jax.tokenizers.bpe import RobertaTokenizer
from bert_jax.tokenizers.spm import AlbertTokenizer
from bert_jax.tokenizers.wordpiece import BertTokenizer

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
    if kind == "wordpiece":
        lower = True if do_lower_case is None else do_lower_case
        return BertTokenizer(str(folder / "vocab.txt"), do_lower_case=lower)
    if kind == "sentencepiece":
        lower = True if do_lower_case is None else do_lower_case
        return AlbertTokenizer(str(folder / "spiece.model"), do_lower_case=lower)
    return RobertaTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
