"""BERT WordPiece tokenizer, token for token identical to Google's original.

Reproduces google-research/bert `tokenization.py` (FullTokenizer) in its
November 2018 revision, the one that added CJK handling and that HF follows:
controls are Unicode category C* (but not \\t\\n\\r) and words over 100
characters become [UNK] (later revisions use Cc/Cf and 200). It runs in Python
so that `str.lower()` and `unicodedata` act exactly as there; HF's Rust
`BertNormalizer` does not in corner cases (see tests/tokenizers/test_wordpiece.py):
Python lowercases a word-final Σ to ς ("ΟΔΟΣ" -> "οδος"), Rust to σ; the
original drops unassigned code points (Cn), Rust keeps them; Rust's CJK table
starts Extension E at U+2B920, not U+2B820; Rust's Unicode tables are older.

Each wordpiece also gets its (start, end) character span in the input text,
for span tasks such as SQuAD.

Speed: the 67,349 SST-2 training sentences take ~0.7 s (`tokenize`) and ~1.4 s
(`tokenize_with_offsets`) on a 2-core CPU, thanks to an ASCII fast path and a
per-word WordPiece cache.
"""

import functools
import os
import re
import unicodedata
from collections.abc import Sequence

import numpy as np
from etils import epath

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_CHARS_PER_WORD = 100  # WordpieceTokenizer.max_input_chars_per_word.

# The original's `_is_chinese_char` ranges: CJK Unified Ideographs, Extensions
# A-E and the compatibility blocks; not Hangul, Hiragana or Katakana.
_CJK = (
    "\u4e00-\u9fff\u3400-\u4dbf\U00020000-\U0002a6df\U0002a700-\U0002b73f"
    "\U0002b740-\U0002b81f\U0002b820-\U0002ceaf\uf900-\ufaff\U0002f800-\U0002fa1f"
)
_CJK_RE = re.compile(f"[{_CJK}]")
_CJK_OR_RUN_RE = re.compile(f"[{_CJK}]|[^{_CJK}]+")
# `\S+` splits exactly like `str.split()`: both use str.isspace().
_WS_TOKEN_RE = re.compile(r"\S+")
# In ASCII, the C* characters other than \t\n\r are these.
_ASCII_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# In ASCII, everything printable that is not alphanumeric is punctuation.
_ASCII_WORD_RE = re.compile(r"[A-Za-z0-9]+|[!-/:-@\[-`{-~]")

_DROP, _SPACE, _PUNCT, _OTHER = range(4)

# A word and, per character, its span [start, end) in the input text.
_Word = tuple[str, Sequence[int], Sequence[int]]


@functools.cache
def _kind(char: str) -> int:
    """Classifies a character as the original's `_clean_text`/`_run_split_on_punc` do."""
    cp = ord(char)
    cat = unicodedata.category(char)
    if cp == 0 or cp == 0xFFFD or (cat.startswith("C") and char not in "\t\n\r"):
        return _DROP
    # Zs and \t\n\r become " " in `_clean_text`; `str.split()` also splits on
    # the few remaining isspace() characters (U+2028, U+2029). Zs is a subset.
    if char.isspace():
        return _SPACE
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return _PUNCT  # All non-alphanumeric ASCII counts, e.g. "^", "$", "`".
    return _PUNCT if cat.startswith("P") else _OTHER


def _strip_accents(text: str) -> str:
    """NFD, then drops nonspacing marks (the original's `_run_strip_accents`)."""
    nfd = unicodedata.normalize("NFD", text)
    return "".join(c for c in nfd if unicodedata.category(c) != "Mn")


# Cached per character, for `_lower_strip`.
_nfd = functools.cache(functools.partial(unicodedata.normalize, "NFD"))
_not_mn = functools.cache(lambda char: unicodedata.category(char) != "Mn")


def load_vocab(path: str) -> dict[str, int]:
    """Reads a BERT vocab.txt: one token per line, id = line number.

    Like the original `load_vocab`, lines are split on "\\n" only and stripped.

    Raises:
      FileNotFoundError: `path` is not a file.
      ValueError: a line is not UTF-8, or holds a token longer than any word
        WordPiece matches (`MAX_CHARS_PER_WORD`: not a vocabulary, e.g. a
        corpus passed by mistake); names the file and line.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"BERT vocab file not found: {path}")
    vocab = {}
    with open(path, "rb") as f:
        for i, raw in enumerate(f):
            try:
                token = raw.decode("utf-8").strip()
            except UnicodeDecodeError as e:
                raise ValueError(f"BERT vocab file {path}:{i + 1}: not valid UTF-8 ({e})") from None
            if len(token) > MAX_CHARS_PER_WORD:
                raise ValueError(
                    f"BERT vocab file {path}:{i + 1}: a token of {len(token):,} characters "
                    f"(WordPiece matches none over {MAX_CHARS_PER_WORD}): is this a vocab.txt?"
                )
            vocab[token] = i
    return vocab


class BertTokenizer:
    """WordPiece tokenizer over a BERT vocab.txt (uncased or cased).

    Attributes:
      vocab: token -> id.
      inv_vocab: id -> token.
      vocab_size: number of ids (lines in vocab.txt).
      do_lower_case: lowercase and strip accents (uncased models).
    """

    # The pair layout the windowed tasks (SQuAD) build by hand, shared by the
    # family tokenizers (`tokenizers_from_folder`): separators between the
    # two texts and the second text's token type ([CLS] a [SEP] b [SEP]).
    seps_between_pair = 1
    second_type_id = 1
    # Put before a word tokenized alone (NER's pre-split words): none for
    # WordPiece, whose words carry no boundary marker.
    word_prefix = ""

    def __init__(self, vocab_path: str, do_lower_case: bool = True):
        self.vocab = load_vocab(vocab_path)
        missing = [t for t in SPECIAL_TOKENS if t not in self.vocab]
        if missing:
            raise ValueError(f"BERT vocab file {vocab_path} lacks special tokens: {missing}")
        self.inv_vocab = {i: t for t, i in self.vocab.items()}
        self.vocab_size = max(self.vocab.values()) + 1  # Line count, as ids are line numbers.
        self.do_lower_case = do_lower_case
        # No vocab entry is longer, so longer candidate substrings can be skipped.
        self._max_piece_len = max(len(t) for t in self.vocab)
        self._cache: dict[str, list[tuple[str, int, int]]] = {}

    cls_id = property(lambda self: self.vocab["[CLS]"])
    sep_id = property(lambda self: self.vocab["[SEP]"])
    pad_id = property(lambda self: self.vocab["[PAD]"])
    mask_id = property(lambda self: self.vocab["[MASK]"])
    unk_id = property(lambda self: self.vocab["[UNK]"])

    def _words(self, text: str) -> list[_Word]:
        """Runs the original's BasicTokenizer, keeping each character's span."""
        words: list[_Word] = []
        if text.isascii() and not _ASCII_CONTROL_RE.search(text):
            # Fast path: ASCII has no accents, CJK or context-dependent case.
            for m in _ASCII_WORD_RE.finditer(text.lower() if self.do_lower_case else text):
                s, e = m.span()
                words.append((m.group(), range(s, e), range(s + 1, e + 1)))
            return words
        index: Sequence[int] = range(len(text))
        if text.isascii() or any(_kind(c) == _DROP for c in set(text)):
            # Dropped characters join their neighbours ("a\x00b" -> "ab").
            index = [i for i, c in enumerate(text) if _kind(c) != _DROP]
            text = "".join(text[i] for i in index)
        for m in _WS_TOKEN_RE.finditer(text):
            self._split_token(m.group(), index[m.start() : m.end()], words)
        return words

    def _split_token(self, token: str, index: Sequence[int], words: list[_Word]) -> None:
        """Splits one whitespace token at CJK characters, then normalizes each part."""
        if token.isascii() or not _CJK_RE.search(token):
            return self._split_part(token, index, words)
        for m in _CJK_OR_RUN_RE.finditer(token):
            self._split_part(m.group(), index[m.start() : m.end()], words)

    def _split_part(self, part: str, index: Sequence[int], words: list[_Word]) -> None:
        """Lowercases and strips accents (if uncased), then splits punctuation."""
        if self.do_lower_case:
            part, starts, ends = _lower_strip(part, index)
        else:
            starts, ends = index, [i + 1 for i in index]
        begin = None
        for j, c in enumerate(part):
            kind = _kind(c)
            if kind in (_PUNCT, _SPACE):
                if begin is not None:
                    words.append((part[begin:j], starts[begin:j], ends[begin:j]))
                    begin = None
                if kind == _PUNCT:
                    words.append((c, starts[j : j + 1], ends[j : j + 1]))
            elif begin is None:
                begin = j
        if begin is not None:
            words.append((part[begin:], starts[begin:], ends[begin:]))

    def _wordpiece(self, word: str) -> list[tuple[str, int, int]]:
        """Greedy longest-match-first split into (piece, start, end) char ranges."""
        pieces = self._cache.get(word)
        if pieces is not None:
            return pieces
        pieces, start = [], 0
        while start < len(word) and len(word) <= MAX_CHARS_PER_WORD:
            end = min(len(word), start + self._max_piece_len)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            if end == start:
                break
            pieces.append((piece, start, end))
            start = end
        if start < len(word):  # Too long, or no full segmentation: one [UNK].
            pieces = [("[UNK]", 0, len(word))]
        if len(self._cache) > 1_000_000:
            self._cache.clear()
        self._cache[word] = pieces
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """Splits text into wordpieces, exactly as the original FullTokenizer."""
        return [p for w, _, _ in self._words(text) for p, _, _ in self._wordpiece(w)]

    def tokenize_with_offsets(self, text: str) -> tuple[list[str], list[tuple[int, int]]]:
        """Wordpieces and their (start, end) character spans in `text`.

        A "##" piece covers its part of the word; [UNK] covers the whole word.
        """
        tokens, offsets = [], []
        for word, starts, ends in self._words(text):
            for piece, a, b in self._wordpiece(word):
                tokens.append(piece)
                offsets.append((starts[a], ends[b - 1]))
        return tokens, offsets

    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]:
        return [self.vocab[t] for t in tokens]

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.inv_vocab[int(i)] for i in ids]

    def encode(
        self, text_a: str, text_b: str | None = None, max_length: int | None = None
    ) -> dict[str, list[int]]:
        """[CLS] a [SEP] (b [SEP]), truncated to `max_length` tokens in total.

        Truncation is the original run_classifier.py's: a single text is cut at
        the end; a pair loses tokens from the end of the longer text, from b on
        ties (`_truncate_seq_pair`). HF's "longest_first" differs when both
        texts are cut to an odd total: it gives the extra token to b.
        """
        a = self.convert_tokens_to_ids(self.tokenize(text_a))
        b = None if text_b is None else self.convert_tokens_to_ids(self.tokenize(text_b))
        if max_length is not None:
            budget = max_length - (2 if b is None else 3)
            if budget < 0:
                raise ValueError(f"max_length={max_length} leaves no room for [CLS]/[SEP]")
            if b is None:
                del a[budget:]
            else:
                while len(a) + len(b) > budget:
                    (a if len(a) > len(b) else b).pop()
        ids = [self.cls_id, *a, self.sep_id]
        token_type_ids = [0] * len(ids)
        if b is not None:
            ids += [*b, self.sep_id]
            token_type_ids += [1] * (len(b) + 1)
        return dict(input_ids=ids, token_type_ids=token_type_ids, attention_mask=[1] * len(ids))

    def encode_batch(
        self,
        texts_a: Sequence[str],
        texts_b: Sequence[str] | None = None,
        max_length: int = 128,
        pad_to: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Encodes and pads a batch to int32 arrays of shape (B, pad_to or max_length)."""
        width = max_length if pad_to is None else pad_to
        if width < max_length:
            raise ValueError(f"pad_to={pad_to} is shorter than max_length={max_length}")
        if texts_b is not None and len(texts_b) != len(texts_a):
            raise ValueError(f"{len(texts_a)} texts_a but {len(texts_b)} texts_b")
        keys = ("input_ids", "token_type_ids", "attention_mask")
        out = {k: np.zeros((len(texts_a), width), np.int32) for k in keys}
        out["input_ids"][:] = self.pad_id
        for i, text_a in enumerate(texts_a):
            enc = self.encode(text_a, None if texts_b is None else texts_b[i], max_length)
            for k in keys:
                out[k][i, : len(enc[k])] = enc[k]
        return out

    def save(self, folder: str | os.PathLike) -> None:
        """Writes `folder`/vocab.txt (local or gs://) (one token per line, id = line number)."""
        tokens = self.convert_ids_to_tokens(range(self.vocab_size))
        epath.Path(folder, "vocab.txt").write_text("".join(t + "\n" for t in tokens))

    def decode(self, ids: Sequence[int]) -> str:
        """Joins wordpieces into text ("##" pieces glued on), skipping [PAD]."""
        tokens = [t for t in self.convert_ids_to_tokens(ids) if t != "[PAD]"]
        return " ".join(tokens).replace(" ##", "")


def _lower_strip(part: str, index: Sequence[int]) -> tuple[str, list[int], list[int]]:
    """`str.lower()` then `_strip_accents` on a whole token, keeping char spans.

    Lowering the whole token applies Python's final-sigma rule; a character may
    lower to several ("İ" -> "i̇") and decompose to several or none.
    """
    lowered = part.lower()
    if part.isascii():
        return lowered, list(index), [i + 1 for i in index]
    chars, origin, keys, group, pos = [], [], [], 0, 0
    for c, i in zip(part, index, strict=True):
        # Final sigma keeps the length, so per-char lengths locate each
        # character's share of the context-aware `lowered`.
        n = len(c.lower())
        for d in _nfd(lowered[pos : pos + n]):
            ccc = unicodedata.combining(d)
            group += ccc == 0
            chars.append(d)
            origin.append(i)
            keys.append((group, ccc))
        pos += n
    # NFD's canonical ordering: marks after each starter sorted (stably) by
    # combining class, possibly across input characters.
    kept = [j for j in sorted(range(len(chars)), key=keys.__getitem__) if _not_mn(chars[j])]
    text, whole = "".join(chars[j] for j in kept), _strip_accents(lowered)
    if pos != len(lowered) or text != whole:  # Not expected; keeps tokens exact.
        return whole, [index[0]] * len(whole), [index[-1] + 1] * len(whole)
    starts = [origin[j] for j in kept]
    if starts == sorted(starts):
        return text, starts, [i + 1 for i in starts]
    # Marks moved across input characters: give each character the span of
    # its whole group (a starter and its marks), which keeps spans ordered.
    span: dict[int, tuple[int, int]] = {}
    for (g, _), i in zip(keys, origin, strict=True):
        lo, hi = span.get(g, (i, i + 1))
        span[g] = (min(lo, i), max(hi, i + 1))
    return text, [span[keys[j][0]][0] for j in kept], [span[keys[j][0]][1] for j in kept]
