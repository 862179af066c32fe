"""RoBERTa's byte-level BPE over `vocab.json` + `merges.txt`, ids as HF's RobertaTokenizer.

The same pipeline as HF transformers' RobertaTokenizer, built from the Rust
`tokenizers` library's parts: GPT-2's byte-level pre-tokenizer (its regex
split, no prefix space), BPE with the merges, offsets trimmed of the leading
space a "Ġ" piece stands for. Text is taken as it is: no normalization, no
lower-casing. Unlike HF, "<mask>" or "<s>" written in the text are split as
text, not read as special tokens (BertTokenizer does the same with "[MASK]").

Layout (fairseq's, as HF): `<s> a </s>` and `<s> a </s></s> b </s>`, token
types all 0 (RoBERTa has one token type), pad `<pad>` (id 1 in RoBERTa's
vocabulary).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from etils import epath
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

from bert_jax.tokenizers import pairs as shared

SPECIAL_TOKENS = ("<s>", "</s>", "<pad>", "<unk>", "<mask>")


class RobertaTokenizer(shared.PairEncoder):
    """Byte-level BPE tokenizer with RoBERTa's special tokens.

    Attributes:
      vocab: token -> id (vocab.json).
      inv_vocab: id -> token.
      vocab_size: largest id + 1.
      do_lower_case: always False (byte-level BPE vocabularies are cased).
    """

    do_lower_case = False
    seps_between_pair, second_type_id = 2, 0  # <s> a </s></s> b </s>, one token type
    # HF's `add_prefix_space=True` for pre-split words (NER): each word is
    # tokenized as if a space came before it, so it starts with a "Ġ" piece.
    word_prefix = " "

    def __init__(self, vocab_path: str, merges_path: str):
        for path in (vocab_path, merges_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"BPE file not found: {path}")
        # HF RobertaTokenizer's model: no subword prefix or suffix, no dropout,
        # unknown bytes not fused (byte-level BPE has none with a full alphabet).
        self.files = (vocab_path, merges_path)
        model = models.BPE.from_file(
            vocab_path, merges_path, continuing_subword_prefix="", end_of_word_suffix=""
        )
        self._tk = Tokenizer(model)
        self._tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        self._tk.decoder = decoders.ByteLevel()
        # Only trims offsets (RobertaProcessing's trim_offsets=True); special
        # tokens are added by `encode`.
        self._tk.post_processor = processors.ByteLevel(trim_offsets=True)
        self.vocab = self._tk.get_vocab()
        missing = [t for t in SPECIAL_TOKENS if t not in self.vocab]
        if missing:
            raise ValueError(f"BPE vocabulary {vocab_path} lacks RoBERTa's tokens: {missing}")
        self.inv_vocab = {i: t for t, i in self.vocab.items()}
        self.vocab_size = max(self.vocab.values()) + 1

    cls_id = property(lambda self: self.vocab["<s>"])
    sep_id = property(lambda self: self.vocab["</s>"])
    pad_id = property(lambda self: self.vocab["<pad>"])
    mask_id = property(lambda self: self.vocab["<mask>"])
    unk_id = property(lambda self: self.vocab["<unk>"])

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        # `encode_batch_fast` skips the offsets: a quarter faster.
        return [e.ids for e in self._tk.encode_batch_fast(list(texts), add_special_tokens=False)]

    def tokenize(self, text: str) -> list[str]:
        """Byte-level BPE tokens ("Ġ" marks a preceding space)."""
        return self.convert_ids_to_tokens(self._ids([text])[0])

    def tokenize_with_offsets(self, text: str) -> tuple[list[str], list[tuple[int, int]]]:
        """Tokens and their (start, end) character spans in `text`.

        The pieces of one character split across tokens (bytes of an emoji)
        all get that character's span; a leading "Ġ" is not in the span.
        """
        enc = self._tk.encode(text, add_special_tokens=False)
        return enc.tokens, list(enc.offsets)

    def _encode_ids(
        self, a: list[int], b: list[int] | None, max_length: int | None
    ) -> dict[str, list[int]]:
        if max_length is not None:
            if b is None:
                a = a[: shared.budget(max_length, 2)]
            else:
                a, b = shared.truncate_pair(a, b, shared.budget(max_length, 4))
        ids = [self.cls_id, *a, self.sep_id]
        if b is not None:
            ids += [self.sep_id, *b, self.sep_id]
        return dict(input_ids=ids, token_type_ids=[0] * len(ids), attention_mask=[1] * len(ids))

    def save(self, folder: str | os.PathLike) -> None:
        """Copies vocab.json and merges.txt to `folder` (local or gs://)."""
        for path, name in zip(self.files, ("vocab.json", "merges.txt"), strict=True):
            epath.Path(folder, name).write_bytes(epath.Path(path).read_bytes())

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the tokens (bytes decoded as UTF-8), skipping <pad>."""
        return self._tk.decode([int(i) for i in ids if int(i) != self.pad_id])
