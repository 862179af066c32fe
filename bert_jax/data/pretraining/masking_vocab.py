"""The ids masked-LM masking needs from a vocabulary, for static and dynamic masking.

One `MaskingVocab` serves both places a mask is drawn: the original recipe
when examples are written (`pretraining_instances.mask_tokens`, one unpadded
sequence at a time) and the loader at training time
(`pretraining_loader.mask_batch`, padded batches). How much to mask and
whether whole words go together are options of those two, not of the vocabulary.

    vocab = MaskingVocab.from_vocab(tokenizer.vocab)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class MaskingVocab:
    """What masking needs to know about a vocabulary, in ids.

    Attributes:
      mask_id: the id of [MASK].
      special_ids: never masked: [CLS], [SEP] and [PAD] (`from_vocab` says why).
      continuation_ids: the "##" pieces, which whole-word masking joins to the
        token before them.
      replacements: the random-replacement candidates, drawn uniformly: the id
        of each vocab.txt entry in the original's `list(tokenizer.vocab.keys())`
        order (for a vocab.txt without repeated lines, 0 .. vocab size - 1).
    """

    mask_id: int
    special_ids: frozenset[int]
    continuation_ids: frozenset[int]
    replacements: tuple[int, ...]

    @classmethod
    def from_vocab(cls, vocab: Mapping[str, int]) -> MaskingVocab:
        """From token -> id, as `BertTokenizer.vocab` (vocab.txt order) holds it.

        Raises:
          KeyError: the vocabulary lacks [MASK], [CLS], [SEP] or [PAD].
        """
        # The original never masks [CLS] and [SEP]. [PAD] is special too, for
        # dynamic masking, whose rows are padded (with id 0, which is [PAD] in
        # BERT's vocabularies). Static masking sees unpadded sequences, in which
        # [PAD] never occurs (the tokenizer splits "[PAD]" in text into "[",
        # "pad", "]"), so adding it leaves the original's candidates, random
        # draws and examples exactly as they were.
        special = frozenset(vocab[t] for t in ("[CLS]", "[SEP]", "[PAD]"))
        return cls(
            mask_id=vocab["[MASK]"],
            special_ids=special,
            continuation_ids=frozenset(i for t, i in vocab.items() if t.startswith("##")),
            replacements=tuple(vocab.values()),
        )

    # Arrays for batch masking, built on first use (frozen dataclasses allow
    # cached_property: it writes the instance dict directly).
    @functools.cached_property
    def special_array(self) -> np.ndarray:
        """The special ids, sorted, for `np.isin`."""
        return np.asarray(sorted(self.special_ids), np.int64)

    @functools.cached_property
    def continuation_array(self) -> np.ndarray:
        """Shape (max id + 1,) bool: True at the "##" pieces' ids."""
        out = np.zeros(max(self.replacements) + 1, bool)
        out[list(self.continuation_ids)] = True
        return out

    @functools.cached_property
    def replacement_array(self) -> np.ndarray:
        """`replacements` as an array, to index with drawn positions."""
        return np.asarray(self.replacements, np.int64)
