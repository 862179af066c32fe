"""Bad-input catalogue, data files: every case fails with a message naming the file and line.

Corpora, vocabularies, TFRecords, GLUE TSVs, SQuAD JSON, CoNLL files and
fine-tuning tables, each read through the public function its command calls.
The harness (`tests/bad_input_cases.py`) also checks that nothing is left
behind; docs/bad_input.md lists every case with its message.
"""

from __future__ import annotations

import json
import re

import pytest

from bert_jax.data import conll, glue, squad, text_classification
from bert_jax.data.pretraining import corpus
from bert_jax.tokenizers.wordpiece import BertTokenizer
from tests.bad_input_cases import Case, check, snapshot, vocab_file, write

SST2 = "sentence\tlabel\n"


def _glue(text: str | bytes, task: str = "sst2", split: str = "train"):
    def make(tmp):
        folder = {"sst2": "SST-2", "stsb": "STS-B"}.get(task, task)
        path = write(tmp / folder / f"{split}.tsv", text)
        return lambda: glue.read_tsv(path, task, split), path

    return make


def _table(text: str, name: str = "reviews.csv"):
    def make(tmp):
        path = write(tmp / name, text)
        return lambda: text_classification.read_table(str(path), "text", "label"), path

    return make


def _squad(data: str | bytes | dict):
    def make(tmp):
        raw = json.dumps(data) if isinstance(data, dict) else data
        path = write(tmp / "train-v1.1.json", raw)
        return lambda: squad.parse_squad(squad.load_json(str(path)), str(path)), path

    return make


def _conll(text: str | bytes):
    def make(tmp):
        path = write(tmp / "train.txt", text)
        return lambda: conll.read_conll(str(path)), path

    return make


def _corpus(data: str | bytes):
    def make(tmp):
        path = write(tmp / "corpus.txt", data)
        return lambda: list(corpus.text_file_documents(str(path))), path

    return make


def _vocab(data: str | bytes):
    def make(tmp):
        path = write(tmp / "vocab.txt", data)
        return lambda: BertTokenizer(str(path)), path

    return make


def _squad_json(context: str, text: str, start: int, **qa) -> dict:
    answers = [{"text": text, "answer_start": start}]
    qas = [{"id": "q1", "question": "Who?", "answers": answers, **qa}]
    return {
        "version": "1.1",
        "data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}],
    }


_GOOD_SQUAD = _squad_json("Ann met Bob.", "Bob", 8)

CASES = {
    # --- GLUE TSVs (glue.read_tsv, as the glue task's input pipeline calls it)
    "glue_latin1_bytes": Case(
        _glue(b"sentence\tlabel\nfine .\t1\ncaf\xe9 .\t0\n"),
        ValueError,
        r"{path}:3: not UTF-8",
    ),
    "glue_wrong_column_count": Case(
        _glue(SST2 + "fine .\t1\nbad\t.\t0\n"),
        ValueError,
        r"{path}:3: expected 2 tab-separated columns, found 3",
    ),
    "glue_label_outside_label_set": Case(
        _glue(SST2 + "fine .\t1\nodd .\t7\n"),
        ValueError,
        r"{path}:3: label '7' is not one of \['0', '1'\]",
    ),
    "glue_truncated_file": Case(
        _glue(SST2 + "fine .\t1\nthe last line was cut"),
        ValueError,
        r"{path}:3: expected 2 tab-separated columns, found 1",
    ),
    "glue_header_without_needed_column": Case(
        _glue("text\tlabel\nfine .\t1\n"), ValueError, r"{path}:1: .*'sentence'"
    ),
    "glue_empty_file": Case(_glue(""), ValueError, r"{path}: empty file"),
    "glue_stsb_score_outside_range": Case(
        _glue("sentence1\tsentence2\tscore\na .\tb .\t7.5\n", task="stsb"),
        ValueError,
        r"{path}:2: score '7.5' is outside \[0, 5\]",
    ),
    # --- fine-tuning tables (text_classification.read_table: configs/classify.py)
    "table_wrong_column_count": Case(
        _table("text,label\nfine,pos\njust text\n"),
        ValueError,
        r"{path}:3: wrong number of columns",
    ),
    # --- SQuAD JSON (squad.load_json + parse_squad, as the squad task reads it)
    "squad_truncated_json": Case(
        _squad(json.dumps(_GOOD_SQUAD)[:-20]),
        ValueError,
        r"{path}: not valid JSON \(.*line 1 column",
    ),
    "squad_latin1_bytes": Case(
        _squad(
            json.dumps(_GOOD_SQUAD)
            .replace("Ann", "Ren\\u00e9")
            .encode()
            .replace(b"Ren\\u00e9", b"Ren\xe9")
        ),
        ValueError,
        r"{path}:1: not UTF-8",
    ),
    "squad_answer_outside_context": Case(
        _squad(_squad_json("Ann met Bob.", "Bob", 40)),
        ValueError,
        r"{path}: 1 answers do not match the context at their answer_start \(questions q1\)",
    ),
    "squad_answer_text_not_at_start": Case(
        _squad(_squad_json("Ann met Bob.", "Bob", 0)),
        ValueError,
        r"{path}: 1 answers do not match .*q1",
    ),
    "squad_missing_context_key": Case(
        _squad({"version": "1.1", "data": [{"title": "t", "paragraphs": [{"qas": []}]}]}),
        ValueError,
        r"{path}: data\[0\].paragraphs\[0\]: not the SQuAD structure \(no key 'context'\)",
    ),
    "squad_no_questions": Case(
        _squad({"version": "1.1", "data": []}), ValueError, r"{path}: no questions"
    ),
    # --- CoNLL-2003 (conll.read_conll)
    "conll_wrong_column_count": Case(
        _conll("EU NNP B-NP B-ORG\nrejects VBZ B-VP\n"),
        ValueError,
        r"{path}:2: 3 columns, but the first word line has 4",
    ),
    "conll_tag_outside_scheme": Case(
        _conll("EU NNP B-NP B-ORG\nPeter NNP B-NP X-PER\n"),
        ValueError,
        r"{path}:2: invalid NER tag 'X-PER'",
    ),
    "conll_latin1_bytes": Case(
        _conll(b"EU NNP B-NP B-ORG\nM\xfcller NNP B-NP B-PER\n"),
        ValueError,
        r"{path}:2: not valid UTF-8",
    ),
    "conll_only_docstart": Case(
        _conll("-DOCSTART- -X- -X- O\n\n"), ValueError, r"{path}: no sentences"
    ),
    # --- pretraining corpora (corpus.text_file_documents: build_vocab, create_pretraining_data)
    "corpus_latin1_bytes": Case(
        _corpus(b"First sentence.\n\nSecond caf\xe9.\n"), ValueError, r"{path}:3: not UTF-8"
    ),
    "corpus_empty_documents_only": Case(
        _corpus("\n\n   \n\n"), ValueError, r"{path}: no documents \(the file is empty or blank\)"
    ),
    # --- vocabularies (BertTokenizer: every command that tokenizes)
    "vocab_latin1_bytes": Case(
        _vocab(b"[PAD]\n[UNK]\ncaf\xe9\n"), ValueError, r"{path}:3: not valid UTF-8"
    ),
    "vocab_1mb_line": Case(
        _vocab("[PAD]\n[UNK]\n[CLS]\n" + "x" * 1_000_000 + "\n[SEP]\n[MASK]\n"),
        ValueError,
        r"{path}:4: a token of 1,000,000 characters .*is this a vocab.txt\?",
    ),
    "vocab_missing_special_tokens": Case(
        _vocab("the\na\nfilm\n"), ValueError, r"{path} lacks special tokens: \['\[PAD\]'"
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_naming_file_and_line(case, tmp_path):
    check(CASES[case], tmp_path)


def test_a_1mb_line_of_text_is_not_bad_input(tmp_path):
    """A 1 MB sentence in a GLUE TSV or a corpus is valid: read whole, then cut by the
    tokenizer ([UNK] for a word over 100 characters, max_length wordpieces)."""
    long = "good " * 200_000  # 1 MB of words
    path = write(tmp_path / "train.tsv", f"{SST2}{long}\t1\n")
    (example,) = glue.read_tsv(path, "sst2", "train")
    assert example.text_a == long
    tok = BertTokenizer(str(vocab_file(tmp_path)))
    ids = tok.encode(example.text_a[:5000], max_length=16)
    assert len(ids["input_ids"]) == 16
    docs = list(corpus.text_file_documents(str(write(tmp_path / "c.txt", "x" * 1_000_000))))
    assert [len(d[0]) for d in docs] == [1_000_000]
    assert tok.tokenize("x" * 1_000_000) == ["[UNK]"]


# ----------------------------------------------------------------------------
# TFRecords (pretraining_records.read_tfrecords: evaluation sets; the loader checks
# the same first record of every file).
# ----------------------------------------------------------------------------

L, P = 16, 4


def _records(path, n=8, seq=L, drop=None):
    import tensorflow as tf

    from bert_jax.data.pretraining import records as pr

    feats = {}
    for name, (dtype, kind) in pr.FEATURES.items():
        if name == drop:
            continue
        length = {"seq": seq, "pred": P}.get(kind, kind)
        if dtype == tf.float32:
            feats[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[1.0] * length))
        else:
            feats[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[1] * length))
    ex = tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as w:
        for _ in range(n):
            w.write(ex)
    return path


def _tfrecord(mutate):
    def make(tmp):
        from bert_jax.data.pretraining import records as pr

        path = tmp / "data" / "eval.tfrecord"
        mutate(path)
        return lambda: pr.read_tfrecords(str(path), L, P), path

    return make


def _truncate(path):
    data = _records(path).read_bytes()
    path.write_bytes(data[:-10])


TFRECORD_CASES = {
    "tfrecord_truncated": Case(
        _tfrecord(_truncate), ValueError, r"{path}: not a complete TFRecord file \(truncated record"
    ),
    "tfrecord_not_a_tfrecord": Case(
        _tfrecord(lambda p: write(p, "one sentence per line\n" * 20)),
        ValueError,
        r"{path}: not a complete TFRecord file \(corrupted record at 0",
    ),
    "tfrecord_wrong_feature_shape": Case(
        _tfrecord(lambda p: _records(p, seq=2 * L)),
        ValueError,
        r"{path}: feature 'input_ids' has length 32, expected 16 for max_seq_length=16",
    ),
    "tfrecord_missing_feature": Case(
        _tfrecord(lambda p: _records(p, drop="segment_ids")),
        ValueError,
        r"{path}: feature 'segment_ids' is missing",
    ),
    "tfrecord_empty_file": Case(
        _tfrecord(lambda p: _records(p, n=0)), ValueError, r"{path}: contains no records"
    ),
}


@pytest.mark.parametrize("case", list(TFRECORD_CASES))
def test_bad_tfrecords_fail_naming_the_file(case, tmp_path):
    check(TFRECORD_CASES[case], tmp_path)


def test_a_truncated_tfrecord_in_the_training_stream_names_its_shard_files(tmp_path):
    """The loader validates only each file's first record; a record cut off later is
    found while streaming, and the error names the shard's files."""
    from bert_jax.data.pretraining import loader as pretraining_loader

    path = tmp_path / "train.tfrecord"
    _truncate(path)
    loader = pretraining_loader.PretrainingLoader(
        str(path), max_seq_length=L, max_predictions=P, global_batch_size=4, shuffle_buffer=1
    )
    batches = iter(loader)
    with pytest.raises(ValueError, match=r"one of data shard 0's files \[.*train.tfrecord'\]: "):
        for _ in range(3):
            next(batches)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.tfrecord"]


@pytest.mark.parametrize("bad", ["data", "predictions"])
def test_squad_evaluation_names_a_truncated_file(bad, tmp_path, capsys):
    """`python -m bert_jax.metrics.squad DATA PREDICTIONS -o OUT` (its `main`, in process):
    a truncated JSON file ends it with exit status 2 and the file's name; no OUT."""
    from bert_jax.metrics import squad as squad_eval

    data = write(tmp_path / "dev-v1.1.json", json.dumps(_GOOD_SQUAD))
    preds = write(tmp_path / "predictions.json", json.dumps({"q1": "Bob"}))
    path = {"data": data, "predictions": preds}[bad]
    path.write_bytes(path.read_bytes()[:-5])
    out = tmp_path / "eval.json"
    with pytest.raises(SystemExit) as info:
        squad_eval.main([str(data), str(preds), "-o", str(out)])
    assert info.value.code == 2
    assert f"error: {path}: not valid JSON (" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev-v1.1.json", "predictions.json"]


def test_create_pretraining_data_failing_midway_leaves_no_temporary_shard(tmp_path, monkeypatch):
    """`create_pretraining_data.run` stopped by an error on a later input (its first
    block already in the temporary shard): no temporary file, no output, no output
    folder left. The command stopped by SIGTERM: tests/test_bad_input_cli.py."""
    import contextlib
    import os

    from bert_jax.data import files
    from bert_jax.data.pretraining import create_pretraining_data as cpd
    from bert_jax.data.pretraining import instances

    good = write(tmp_path / "a.txt", "The film is good .\nIt was bad .\n\n" * 4)
    bad = write(tmp_path / "b.txt", b"The film .\n\nIt was caf\xe9 .\n")
    vocab = vocab_file(tmp_path)
    before = snapshot(tmp_path)
    open_temps = []  # the temporary shards that exist when the error comes
    real = files.atomic_paths

    @contextlib.contextmanager
    def spy(paths):
        with real(paths) as temps:
            try:
                yield temps
            finally:
                open_temps.extend(t for t in temps if os.path.getsize(t))

    monkeypatch.setattr(cpd.files, "atomic_paths", spy)
    recipe = instances.RecipeConfig(max_seq_length=16, max_predictions_per_seq=2, dupe_factor=1)
    with pytest.raises(ValueError, match=rf"{re.escape(str(bad))}:3: not UTF-8"):
        cpd.run(
            [str(good), str(bad)],
            [str(tmp_path / "out" / "train.tfrecord")],
            str(vocab),
            recipe,
            num_workers=1,
            docs_per_block=1,
        )
    assert open_temps, "the error came before any record was written: nothing to clean"
    assert snapshot(tmp_path) == before
