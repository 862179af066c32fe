"""One bad-input policy for every reader: the same keyword, values and behaviour."""

import json
import re

import pytest

from bert_jax.data import bad_input, conll, glue, squad, text_classification
from bert_jax.data.pretraining import corpus


def test_check_names_the_argument_and_the_values():
    assert bad_input.check("fail") == "fail" and bad_input.check("skip") == "skip"
    with pytest.raises(ValueError, match=re.escape("on_bad_input must be 'fail' or 'skip'")):
        bad_input.check("raise")
    message = "data.on_bad_input must be 'fail' or 'skip', got 'warn'"
    with pytest.raises(ValueError, match=re.escape(message)):
        bad_input.check("warn", "data.on_bad_input")


# One file per reader: a good item, a bad one on line 3, a good one.
_CONLL = "EU NNP B-NP B-ORG\n\nPeter NNP B-NP X-PER\n\nBonn NNP B-NP B-LOC\n"
_SQUAD_QAS = [
    {"id": "a", "question": "Who?", "answers": [{"text": "Ann", "answer_start": 0}]},
    {"id": "b", "question": "Who?", "answers": [{"text": "Ann", "answer_start": 3}]},
    {"id": "c", "question": "Who?", "answers": [{"text": "Bob", "answer_start": 8}]},
]
_SQUAD_PARAGRAPHS = [{"context": "Ann and Bob.", "qas": _SQUAD_QAS}]
_SQUAD = {"version": "1.1", "data": [{"title": "t", "paragraphs": _SQUAD_PARAGRAPHS}]}


def _glue(path, **kw):
    path.write_text("sentence\tlabel\nfine .\t1\nbad .\t7\nalso fine .\t0\n")
    stats = glue.ReadStats()
    examples = glue.read_tsv(path, "sst2", "train", stats=stats, **kw)
    return [e.text_a for e in examples], stats.skipped


def _table(path, **kw):
    path = path.with_suffix(".tsv")
    path.write_text("text\tlabel\nfine .\tpos\n \tneg\nalso fine .\tneg\n")
    stats = glue.ReadStats()
    examples = text_classification.read_table(str(path), "text", "label", stats=stats, **kw)
    return [e.text_a for e in examples], stats.skipped


def _conll(path, **kw):
    path.write_text(_CONLL)
    sentences, stats = conll.read_conll(str(path), **kw)
    return [s.tokens[0] for s in sentences], stats.skipped_sentences


def _squad(path, **kw):
    path.write_text(json.dumps(_SQUAD))
    examples, stats = squad.parse_squad(squad.load_json(str(path)), str(path), **kw)
    return [e.qas_id for e in examples], stats["skipped"]


def _corpus(path, **kw):
    path.write_bytes(b"First.\n\n\xff\n\nLast.\n")
    stats = corpus.CorpusStats()
    docs = list(corpus.text_documents(str(path), stats=stats, **kw))
    return [d[0] for d in docs], stats.skipped_lines


READERS = {
    "glue": (_glue, ["fine .", "also fine ."], ":3: label '7'"),
    "table": (_table, ["fine .", "also fine ."], ":3: empty text"),
    "conll": (_conll, ["EU", "Bonn"], ":3: invalid NER tag 'X-PER'"),
    "squad": (_squad, ["a", "c"], ": 1 answers do not match"),
    "corpus": (_corpus, ["First.", "Last."], ":3: not UTF-8"),
}


@pytest.mark.parametrize("reader", list(READERS))
def test_fail_raises_and_skip_counts_with_the_same_keyword(reader, tmp_path, caplog):
    read, kept, message = READERS[reader]
    path = tmp_path / "data.txt"
    with pytest.raises(ValueError, match=re.escape(message)):
        read(path)  # "fail" is the default.
    with pytest.raises(ValueError, match=re.escape(message)):
        read(path, on_bad_input="fail")
    with caplog.at_level("WARNING"):
        assert read(path, on_bad_input="skip") == (kept, 1)
    assert "skipped 1 " in caplog.text
    with pytest.raises(ValueError, match="on_bad_input must be 'fail' or 'skip', got 'raise'"):
        read(path, on_bad_input="raise")


@pytest.mark.parametrize("reader", ["glue", "table", "conll", "corpus"])
def test_empty_file_fails_or_is_skipped(reader, tmp_path, caplog):
    path = tmp_path / "empty.tsv"
    path.write_bytes(b"")
    read = {
        "glue": lambda **kw: glue.read_tsv(path, "sst2", "dev", **kw),
        "table": lambda **kw: text_classification.read_table(str(path), "t", "l", **kw),
        "conll": lambda **kw: conll.read_conll(str(path), **kw)[0],
        "corpus": lambda **kw: list(corpus.text_file_documents(str(path), **kw)),
    }[reader]
    with pytest.raises(ValueError, match=re.escape(str(path))):
        read()
    with caplog.at_level("WARNING"):
        assert read(on_bad_input="skip") == []
    assert str(path) in caplog.text and "skipped" in caplog.text


def test_table_rows_around_bad_bytes_stay(tmp_path):
    # A quoted field over two lines, then a line that is not UTF-8: only its row goes.
    path = tmp_path / "t.csv"
    path.write_bytes(b'text,label\n"two\nlines",pos\nbad \xff,neg\nok,neg\n')
    stats = glue.ReadStats()
    examples = text_classification.read_table(
        str(path), "text", "label", on_bad_input="skip", stats=stats
    )
    assert [(e.guid, e.text_a) for e in examples] == [("t-3", "two\nlines"), ("t-5", "ok")]
    assert stats.skipped == 1 and stats.problems[0].startswith(f"{path}:4: not UTF-8")
