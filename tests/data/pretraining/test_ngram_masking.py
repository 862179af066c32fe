"""ALBERT's n-gram masking (`RecipeConfig.max_ngram`) on real SST-2 sentences.

Spans of n <= 3 units with p(n) proportional to 1/n (Lan et al. 2020,
section 4.1): at a 4% masking rate spans rarely touch, so the lengths of the
runs of masked positions show the span-length distribution.
"""

import collections
import random

import numpy as np
import pytest

from bert_jax.data.pretraining.instances import RecipeConfig, mask_tokens
from bert_jax.data.pretraining.masking_vocab import MaskingVocab
from bert_jax.tokenizers.wordpiece import BertTokenizer
from tests.numerics import assert_close


@pytest.fixture(scope="module")
def rows(shared_data):
    tok = BertTokenizer(str(shared_data / "vocab" / "bert-base-uncased" / "vocab.txt"))
    lines = (shared_data / "glue" / "SST-2" / "train.tsv").read_text("utf-8").splitlines()[1:]
    ids = tok.convert_tokens_to_ids(tok.tokenize(" ".join(x.split("\t")[0] for x in lines[:12000])))
    # [CLS] a [SEP] b [SEP] rows of 512 from the running text.
    out = []
    for start in range(0, len(ids) - 510, 510):
        a, b = ids[start : start + 300], ids[start + 300 : start + 510]
        out.append([tok.cls_id, *a, tok.sep_id, *b, tok.sep_id])
    return tok, MaskingVocab.from_vocab(tok.vocab), out


def _runs(positions):
    """Lengths of the runs of consecutive positions."""
    runs, length = [], 1
    for prev, cur in zip(positions, positions[1:], strict=False):
        if cur == prev + 1:
            length += 1
        else:
            runs.append(length)
            length = 1
    return runs + [length] if positions else runs


def test_ngram_span_lengths_follow_one_over_n(rows):
    tok, vocab, seqs = rows
    rng = random.Random(0)
    lengths = collections.Counter()
    special = {tok.cls_id, tok.sep_id}
    for ids in seqs * 3:
        masked, positions, labels = mask_tokens(ids, rng, vocab, 0.04, 20, max_ngram=3)
        assert len(positions) <= 20 and positions == sorted(set(positions))
        assert not special.intersection(ids[p] for p in positions)
        assert labels == [ids[p] for p in positions]
        assert sum(m != t for m, t in zip(masked, ids, strict=True)) <= len(positions)
        lengths.update(_runs(positions))
    n = sum(lengths.values())
    assert n > 3000 and max(lengths) <= 6  # touching spans only now and then
    share = np.asarray([lengths[k] / n for k in (1, 2, 3)])
    # p(n) = (1/n) / (1 + 1/2 + 1/3) = 6/11, 3/11, 2/11; merged neighbours shift a little.
    assert_close(share, [6 / 11, 3 / 11, 2 / 11], atol=0.04)


def test_one_gram_is_bert_masking_and_whole_words_stay_whole(rows):
    tok, vocab, seqs = rows
    # max_ngram=1 draws exactly the original's masks (its stream is tested
    # against the original script in test_create_pretraining_data).
    for ids in seqs[:20]:
        a = mask_tokens(ids, random.Random(1), vocab, 0.15, 76)
        b = mask_tokens(ids, random.Random(1), vocab, 0.15, 76, max_ngram=1)
        assert a == b
    rng = random.Random(2)
    for ids in seqs[:50]:
        _, positions, _ = mask_tokens(ids, rng, vocab, 0.15, 76, whole_word=True, max_ngram=3)
        chosen = set(positions)
        for p in positions:  # a word's "##" pieces are masked with it
            q = p + 1
            while q < len(ids) and ids[q] in vocab.continuation_ids:
                assert q in chosen
                q += 1
    with pytest.raises(ValueError, match="max_ngram=0"):
        RecipeConfig(max_ngram=0)
