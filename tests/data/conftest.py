"""Fixtures shared by the data tests: the real bert-base-uncased vocabulary."""

import pytest

from bert_jax.tokenizers.wordpiece import BertTokenizer


@pytest.fixture(scope="module")
def vocab_file(shared_data):
    return str(shared_data / "vocab" / "bert-base-uncased" / "vocab.txt")


@pytest.fixture(scope="module")
def tok(vocab_file):
    return BertTokenizer(vocab_file, do_lower_case=True)
