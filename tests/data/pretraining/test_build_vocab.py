"""Tests for bert_jax.data.pretraining.build_vocab: layout, quality, CLI, atomic writes."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bert_jax.data.pretraining import build_vocab, corpus, embedded_corpus
from bert_jax.tokenizers.wordpiece import BertTokenizer

ROOT = Path(__file__).resolve().parents[3]
HELD_OUT = 20  # Embedded-corpus documents kept out of training.


@pytest.fixture(scope="module")
def documents():
    return list(embedded_corpus.embedded_documents(max_documents=220))


@pytest.fixture(scope="module")
def vocab_path(documents, tmp_path_factory):
    sentences = (s for doc in documents[:-HELD_OUT] for s in doc)
    tokens = build_vocab.build_vocab(sentences, vocab_size=2000, num_unused=100)
    path = str(tmp_path_factory.mktemp("vocab") / "vocab.txt")
    assert build_vocab.write_vocab(tokens, path) == 2000
    return path


def _unk_rate(tokenizer, texts):
    tokens = [t for text in texts for t in tokenizer.tokenize(text)]
    return np.mean([t == "[UNK]" for t in tokens])


def test_layout_matches_google_uncased(shared_data):
    lines = (shared_data / "vocab/bert-base-uncased/vocab.txt").read_text("utf-8").splitlines()
    assert build_vocab.bert_layout([], 994) == lines[:999]


@pytest.mark.parametrize("num_unused", [0, 5, 99, 100])
def test_layout(num_unused):
    tokens = build_vocab.bert_layout(["a", "##b"], num_unused)
    assert len(tokens) == num_unused + 7 and len(set(tokens)) == len(tokens)
    unk = min(num_unused, 99) + 1  # 100 as in Google's vocabularies when N >= 99.
    assert tokens[0] == "[PAD]" and tokens[unk : unk + 4] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tokens[-2:] == ["a", "##b"]
    assert sum(t.startswith("[unused") for t in tokens) == num_unused


def test_vocab_layout_and_pieces(vocab_path):
    lines = Path(vocab_path).read_text("utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == 2001  # One token a line, final newline.
    tokens = lines[:-1]
    assert tokens[0] == "[PAD]" and tokens[100:105] == [
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "[unused99]",
    ]
    learned = tokens[105:]
    assert sum(t.startswith("##") for t in learned) > 100
    assert {"the", "a", "##s", "##e"} <= set(learned)
    assert all(t == t.lower() for t in learned)


def test_vocab_tokenizes_held_out_text(vocab_path, documents):
    tokenizer = BertTokenizer(vocab_path, do_lower_case=True)
    assert tokenizer.vocab_size == 2000 and tokenizer.unk_id == 100
    held_out = [s for doc in documents[-HELD_OUT:] for s in doc]
    assert _unk_rate(tokenizer, held_out) < 0.01
    tokens = tokenizer.tokenize("The function returns a list of strings.")
    assert tokens[:2] == ["the", "function"] and "[UNK]" not in tokens


def test_vocab_tokenizes_sst2(vocab_path, shared_data):
    lines = (shared_data / "glue/SST-2/dev.tsv").read_text("utf-8").splitlines()[1:]
    sentences = [line.split("\t")[0] for line in lines]
    tokenizer = BertTokenizer(vocab_path, do_lower_case=True)
    # Movie reviews, unlike the training text: still all in known pieces.
    assert _unk_rate(tokenizer, sentences) < 0.01


def test_cased_vocab_keeps_case_and_accents():
    sentences = ["The Café opened. The café closed. Paris is big."] * 5
    tokens = build_vocab.build_vocab(sentences, 200, do_lower_case=False, num_unused=0)
    assert {"The", "Paris", "é", "##é"} <= set(tokens)
    uncased = build_vocab.build_vocab(sentences, 200, do_lower_case=True, num_unused=0)
    assert "The" not in uncased and "é" not in uncased and "the" in uncased


def test_small_corpus_gives_fewer_tokens():
    tokens = build_vocab.build_vocab(["tiny text here", "tiny text"], 500, num_unused=3)
    assert len(tokens) < 500 and tokens[:5] == [
        "[PAD]",
        "[unused0]",
        "[unused1]",
        "[unused2]",
        "[UNK]",
    ]


def test_vocab_size_too_small():
    with pytest.raises(ValueError, match="no room"):
        build_vocab.build_vocab(["a b c"], vocab_size=105, num_unused=100)


def test_write_vocab_is_atomic(tmp_path):
    path = tmp_path / "vocab.txt"

    def failing():
        yield from ["[PAD]", "[UNK]"]
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        build_vocab.write_vocab(failing(), str(path))
    assert os.listdir(tmp_path) == []  # Neither the file nor a temporary one.
    path.write_text("old\n")
    with pytest.raises(ValueError, match="twice"):
        build_vocab.write_vocab(["[PAD]", "x", "[PAD]"], str(path))
    with pytest.raises(ValueError, match="whitespace"):
        build_vocab.write_vocab(["[PAD]", "a b"], str(path))
    assert os.listdir(tmp_path) == ["vocab.txt"] and path.read_text() == "old\n"
    assert build_vocab.write_vocab(["[PAD]", "x"], str(path)) == 2
    assert path.read_text() == "[PAD]\nx\n"


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "bert_jax.data.pretraining.build_vocab", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_cli(tmp_path, documents):
    corpus.write_text_corpus(documents[:60], str(tmp_path / "part1.txt"))
    corpus.write_text_corpus(documents[60:120], str(tmp_path / "part2.txt.gz"))
    out = tmp_path / "out" / "vocab.txt"
    out.parent.mkdir()
    inputs = f"{tmp_path}/part1.txt,{tmp_path}/part2*"
    result = _cli(f"--input_file={inputs}", f"--output_file={out}", "--vocab_size=1500")
    assert result.returncode == 0, result.stderr
    assert "wrote 1500 tokens" in result.stdout and "2 files, 120 documents" in result.stdout
    tokenizer = BertTokenizer(str(out))
    assert tokenizer.vocab_size == 1500 and tokenizer.vocab["[unused99]"] == 104

    missing = _cli(f"--input_file={tmp_path}/nope*.txt", f"--output_file={tmp_path}/v2.txt")
    assert missing.returncode != 0 and f"{tmp_path}/nope*.txt" in missing.stderr
    assert not (tmp_path / "v2.txt").exists()
