"""ALBERT's SentencePiece tokenizer over a `spiece.model`, ids as HF's AlbertTokenizer.

HF transformers 5's AlbertTokenizer (Rust `tokenizers`) normalizes the text
before the SentencePiece model's own normalization (the precompiled nmt_nfkc
charsmap): "``" and "''" become '"', then NFKD, then every combining mark
(Unicode category M*) is dropped, then each character is lower-cased on its
own. We do the same in Python, keeping each character's span in the input,
then let the `sentencepiece` library segment the text (unigram Viterbi) and
map its offsets back through those spans.

Where HF 5 departs from the original ALBERT `tokenization.py` (and HF 4's
sentencepiece-based tokenizer) we follow HF 5, whose ids the tests check:
the original drops only marks with a nonzero combining class, lower-cases the
whole string (a word-final "Σ" becomes "ς"), and re-splits a piece ending in
a digit and a comma ("▁1990," -> "▁1990", ","; HF 5, loading a
spiece.model, neither re-splits nor lowers such pieces' scores as its
AlbertConverter would). The normalization
differences change no GLUE SST-2, CoLA or STS-B sentence (measured); the
digit-comma rule matters only for vocabularies holding such pieces, which the
tests' vocabulary does not.

A spiece.model with user-defined pieces is segmented as SentencePiece does;
HF 5 instead matches them in the raw text as added tokens (see
tests/tokenizers/test_family_tokenizers.py). The tests' model has control symbols
[CLS], [SEP], [MASK], which never come from text.

Layout: `[CLS] a [SEP] (b [SEP])`, token types 0 then 1, pad `<pad>`.
"""

from __future__ import annotations

import functools
import os
import unicodedata
from collections.abc import Sequence

import sentencepiece
from etils import epath

from bert_jax.tokenizers import pairs as shared

# A character's span [start, end) in the input text.
_Spans = list[tuple[int, int]]


@functools.cache
def _fold(char: str, do_lower_case: bool) -> str:
    """NFKD, combining marks dropped, lower-cased (HF's normalizers, per character).

    Per character equals HF's whole-string NFKD: canonical reordering only
    moves characters with a nonzero combining class, all of them marks, which
    are dropped.
    """
    nfkd = unicodedata.normalize("NFKD", char)
    out = "".join(c for c in nfkd if not unicodedata.category(c).startswith("M"))
    return out.lower() if do_lower_case else out


def _replace_quotes(chars: list[str], spans: _Spans, pattern: str) -> tuple[list[str], _Spans]:
    """Replaces `pattern` (two characters) by '"', left to right, as `str.replace`."""
    out_chars, out_spans, i = [], [], 0
    while i < len(chars):
        if i + 1 < len(chars) and chars[i] + chars[i + 1] == pattern:
            out_chars.append('"')
            out_spans.append((spans[i][0], spans[i + 1][1]))
            i += 2
        else:
            out_chars.append(chars[i])
            out_spans.append(spans[i])
            i += 1
    return out_chars, out_spans


class AlbertTokenizer(shared.PairEncoder):
    """SentencePiece (unigram) tokenizer with ALBERT's special tokens.

    Attributes:
      vocab: piece -> id.
      inv_vocab: id -> piece.
      vocab_size: number of pieces in the model.
      do_lower_case: lower-case the text (ALBERT's default; HF's too).
    """

    seps_between_pair, second_type_id = 1, 1  # [CLS] a [SEP] b [SEP], as BERT
    word_prefix = ""  # SentencePiece marks a word start itself ("▁")

    def __init__(self, model_path: str, do_lower_case: bool = True):
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"SentencePiece model not found: {model_path}")
        self.model_path = model_path
        self.sp = sentencepiece.SentencePieceProcessor(model_file=model_path)
        self.vocab_size = self.sp.get_piece_size()
        self.inv_vocab = {i: self.sp.id_to_piece(i) for i in range(self.vocab_size)}
        self.vocab = {t: i for i, t in self.inv_vocab.items()}
        missing = [t for t in ("<pad>", "[CLS]", "[SEP]", "[MASK]") if t not in self.vocab]
        if missing:
            raise ValueError(f"SentencePiece model {model_path} lacks ALBERT's tokens: {missing}")
        self.do_lower_case = do_lower_case

    cls_id = property(lambda self: self.vocab["[CLS]"])
    sep_id = property(lambda self: self.vocab["[SEP]"])
    pad_id = property(lambda self: self.vocab["<pad>"])
    mask_id = property(lambda self: self.vocab["[MASK]"])
    unk_id = property(lambda self: self.sp.unk_id())

    def normalize(self, text: str) -> str:
        """HF AlbertTokenizer's normalization before the SentencePiece model's own."""
        text = text.replace("``", '"').replace("''", '"')
        if text.isascii():
            return text.lower() if self.do_lower_case else text
        return "".join(_fold(c, self.do_lower_case) for c in text)

    def _normalize_with_spans(self, text: str) -> tuple[str, _Spans]:
        """`normalize`, and the input span of each output character."""
        chars, spans = list(text), [(i, i + 1) for i in range(len(text))]
        for pattern in ("``", "''"):
            if pattern in text:
                chars, spans = _replace_quotes(chars, spans, pattern)
        out_chars, out_spans = [], []
        for c, span in zip(chars, spans, strict=True):
            folded = _fold(c, self.do_lower_case)
            out_chars.append(folded)
            out_spans.extend([span] * len(folded))
        return "".join(out_chars), out_spans

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        # One thread: on a few cores, SentencePiece's thread pool costs more
        # than it saves (SST-2 train: 0.17 s against 0.96 s on 2 cores).
        return self.sp.encode([self.normalize(t) for t in texts], num_threads=1)

    def _ids_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids and input-text spans of the pieces of `text` (no special tokens).

        A piece's span leaves out the whitespace its "▁" stands for; a bare
        "▁" gets an empty span where the next text starts (HF gives it the
        span of the next character).
        """
        norm, spans = self._normalize_with_spans(text)
        enc = self.sp.encode(norm, return_type="offset_mapping")
        offsets = []
        for piece, (a, b) in zip(enc["pieces"], enc["offsets"], strict=True):
            if piece.startswith("▁"):
                while a < b and norm[a].isspace():
                    a += 1
            if a < b:
                offsets.append((spans[a][0], spans[b - 1][1]))
            else:
                at = spans[a][0] if a < len(spans) else len(text)
                offsets.append((at, at))
        return list(enc["ids"]), offsets

    def tokenize(self, text: str) -> list[str]:
        """SentencePiece pieces; an unknown stretch of text is "<unk>"."""
        return self.convert_ids_to_tokens(self._ids([text])[0])

    def tokenize_with_offsets(self, text: str) -> tuple[list[str], list[tuple[int, int]]]:
        """Pieces and their (start, end) character spans in `text`."""
        ids, offsets = self._ids_with_offsets(text)
        return self.convert_ids_to_tokens(ids), offsets

    def _encode_ids(
        self, a: list[int], b: list[int] | None, max_length: int | None
    ) -> dict[str, list[int]]:
        if max_length is not None:
            if b is None:
                a = a[: shared.budget(max_length, 2)]
            else:
                a, b = shared.truncate_pair(a, b, shared.budget(max_length, 3))
        ids = [self.cls_id, *a, self.sep_id]
        token_type_ids = [0] * len(ids)
        if b is not None:
            ids += [*b, self.sep_id]
            token_type_ids += [1] * (len(b) + 1)
        return dict(input_ids=ids, token_type_ids=token_type_ids, attention_mask=[1] * len(ids))

    def save(self, folder: str | os.PathLike) -> None:
        """Copies the SentencePiece model to `folder`/spiece.model (local or gs://)."""
        epath.Path(folder, "spiece.model").write_bytes(epath.Path(self.model_path).read_bytes())

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the pieces, skipping <pad> ([CLS]/[SEP] are control symbols: empty)."""
        return self.sp.decode([int(i) for i in ids if int(i) != self.pad_id])
