"""One MaskingVocab for static (recipe) and dynamic (loader) masking."""

import random

import numpy as np
import pytest

from bert_jax.data.pretraining.instances import mask_tokens
from bert_jax.data.pretraining.loader import mask_batch
from bert_jax.data.pretraining.masking_vocab import MaskingVocab


@pytest.fixture(scope="module")
def vocab(tok):
    return MaskingVocab.from_vocab(tok.vocab)


def test_ids_from_the_real_vocab(vocab, tok):
    assert vocab.mask_id == tok.mask_id == 103
    assert vocab.special_ids == {tok.cls_id, tok.sep_id, tok.pad_id} == {101, 102, 0}
    assert (
        tok.vocab["##s"] in vocab.continuation_ids and tok.vocab["s"] not in vocab.continuation_ids
    )
    # The original draws replacements from `list(tokenizer.vocab.keys())`, in order.
    assert vocab.replacements == tuple(range(tok.vocab_size))
    assert vocab.continuation_array.shape == (tok.vocab_size,)
    assert vocab.continuation_array.sum() == len(vocab.continuation_ids)
    assert vocab.special_array.tolist() == [0, 101, 102]


def test_missing_special_token_is_named():
    with pytest.raises(KeyError, match="MASK"):
        MaskingVocab.from_vocab({"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "a": 3})


def _ids(tok, a, b):
    pieces = [tok.convert_tokens_to_ids(tok.tokenize(t)) for t in (a, b)]
    return [tok.cls_id, *pieces[0], tok.sep_id, *pieces[1], tok.sep_id]


@pytest.mark.parametrize("whole_word", [False, True])
def test_static_never_masks_special_ids(vocab, tok, whole_word):
    ids = _ids(tok, "the unbelievably magnificent tokenization", "of a sentence pair")
    special = [i for i, t in enumerate(ids) if t in vocab.special_ids]
    # Everything may be masked: only the special positions stay out.
    masked, positions, labels = mask_tokens(
        ids, random.Random(0), vocab, 1.0, len(ids), whole_word=whole_word
    )
    assert positions == [i for i in range(len(ids)) if i not in special]
    assert labels == [ids[p] for p in positions]
    assert [masked[i] for i in special] == [ids[i] for i in special]


@pytest.mark.parametrize("whole_word", [False, True])
def test_dynamic_never_masks_special_ids_or_padding(vocab, tok, whole_word):
    rows = [
        _ids(tok, "the unbelievably magnificent tokenization", "of a pair"),
        _ids(tok, "short", "one"),
    ]
    length = 24
    ids = np.zeros((len(rows), length), np.int32)  # Padded with 0 = [PAD], as the records are.
    for r, row in enumerate(rows):
        ids[r, : len(row)] = row
    masked, positions, labels, weights = mask_batch(
        ids, vocab, length, np.random.default_rng(0), masked_lm_prob=1.0, whole_word=whole_word
    )
    for r, row in enumerate(rows):
        chosen = positions[r][weights[r] > 0].tolist()
        # Every real non-special token is predicted, nothing else.
        assert chosen == [i for i, t in enumerate(row) if t not in vocab.special_ids]
        assert (labels[r][weights[r] > 0] == ids[r, chosen]).all()
        untouched = np.setdiff1d(np.arange(length), chosen)
        assert (masked[r, untouched] == ids[r, untouched]).all()  # [CLS], [SEP], padding.
