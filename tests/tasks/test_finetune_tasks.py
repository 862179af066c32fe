"""Fine-tuning tasks end to end through the trainer, small: GLUE, classify, NER.

Tiny random models on real data (a few steps): these check the plumbing
(readers -> features -> head -> loss -> official metrics -> results.json).
The accuracy checks with a real pretrained checkpoint are in
test_finetune_real.py.
"""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bert_jax import train
from bert_jax.tools.predict import Predictor, glue_submission
from configs import classify, glue, ner
from tests.numerics import assert_close
from tests.tasks.tiny_runs import run as _run
from tests.tasks.tiny_runs import tiny as _tiny

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "task, keys",
    [
        ("sst2", {"eval/accuracy"}),
        ("stsb", {"eval/pearson", "eval/spearman"}),
        ("cola", {"eval/mcc"}),
    ],
)
def test_glue_tasks_train_and_report_official_metrics(task, keys, shared_data, tmp_path):
    c = _tiny(glue.get_config(f"task={task},tiny"), shared_data)
    c.data.data_dir = str(shared_data / "glue")
    metrics = _run(c, tmp_path)
    assert set(metrics) == keys
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [2, 4]
    # The workdir alone serves predictions on new text.
    out = Predictor(str(tmp_path))(["a gorgeous, witty film", "dull and far too long\tyes"])
    for row in out:
        if task == "stsb":
            assert isinstance(row["score"], float)
        else:
            assert row["label"] in ("0", "1")
            assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    if task != "stsb":  # the test files of SST-2 and CoLA are here: leaderboard files
        (path,) = glue_submission(Predictor(str(tmp_path)), str(tmp_path / "submit"))
        lines = Path(path).read_text().splitlines()
        assert lines[0] == "index\tprediction" and len(lines) == {"sst2": 1822, "cola": 1064}[task]
        assert {x.split("\t")[1] for x in lines[1:]} <= {"0", "1"}


def test_cut_batches_train_like_full_width_ones(shared_data, tmp_path):
    # Padded positions are masked out, so cutting batches to their longest row
    # changes no number beyond float rounding. Dropout is off: its random
    # masks are drawn per shape, so with dropout the runs differ (equally good).
    losses = {}
    for bucket in (0, 8):
        c = _tiny(glue.get_config("task=stsb,tiny"), shared_data)
        c.data.data_dir = str(shared_data / "glue")
        c.model.hidden_dropout = c.model.attention_dropout = 0.0
        c.num_train_steps, c.log_every = 3, 1
        c.data.length_bucket = bucket
        _run(c, tmp_path / str(bucket))
        rows = (tmp_path / str(bucket) / "metrics.jsonl").read_text().splitlines()
        losses[bucket] = [json.loads(r)["train/loss"] for r in rows if "train/loss" in r]
    assert_close(losses[8], losses[0], rtol=1e-5)


def test_packed_batches_train_and_evaluate_like_padded_ones(shared_data, tmp_path):
    # Packing changes where an example sits, not what is computed for it: with
    # dropout off, the per-step losses and the dev metrics match the padded run.
    losses, metrics = {}, {}
    for pack in (0, 16):
        c = _tiny(glue.get_config("task=sst2,tiny"), shared_data)
        c.data.data_dir = str(shared_data / "glue")
        c.model.hidden_dropout = c.model.attention_dropout = 0.0
        c.num_train_steps, c.log_every = 3, 1
        c.data.pack_examples = pack
        metrics[pack] = _run(c, tmp_path / str(pack))
        rows = (tmp_path / str(pack) / "metrics.jsonl").read_text().splitlines()
        losses[pack] = [json.loads(r)["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses[16]) == 3
    assert_close(losses[16], losses[0], rtol=1e-5)
    assert metrics[16] == pytest.approx(metrics[0], abs=1e-9)


def test_packing_is_refused_where_it_cannot_apply(shared_data, tmp_path):
    c = _tiny(ner.get_config("tiny"), shared_data, vocab="bert-base-cased")
    c.data.data_dir = str(shared_data / "conll2003")
    c.data.pack_examples = 8
    with pytest.raises(ValueError, match="data.pack_examples=8: only sentence classification"):
        _run(c, tmp_path / "ner")
    # Packed rows are split like a batch: accumulation must divide their count.
    c = _tiny(glue.get_config("task=sst2,tiny"), shared_data)
    c.data.data_dir = str(shared_data / "glue")
    c.data.pack_examples, c.optimizer.grad_accum_steps = 8, 2
    with pytest.raises(ValueError, match=r"data.pack_row_multiple=1 must be a multiple"):
        _run(c, tmp_path / "sst2")
    assert not (tmp_path / "sst2" / "checkpoints").exists()


def test_classify_local_csv_from_real_imdb_reviews(shared_data, tmp_path):
    reviews = shared_data / "imdb" / "aclImdb" / "test"
    rows = [
        (p.read_text(encoding="utf-8"), label)
        for label in ("pos", "neg")
        for p in sorted((reviews / label).glob("*.txt"))[:60]
    ]
    for name, part in (("train.csv", rows[::2]), ("dev.csv", rows[1::2])):
        with open(tmp_path / name, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["review", "sentiment"])
            w.writerows(part)
    c = _tiny(classify.get_config("tiny"), shared_data)
    c.data.train_file, c.data.eval_file = str(tmp_path / "train.csv"), str(tmp_path / "dev.csv")
    c.data.text_column, c.data.label_column = "review", "sentiment"
    metrics = _run(c, tmp_path / "run")
    assert set(metrics) == {"eval/accuracy", "eval/f1"}


def test_ner_conll_entity_f1(shared_data, tmp_path):
    c = _tiny(ner.get_config("tiny"), shared_data, vocab="bert-base-cased")
    c.data.data_dir = str(shared_data / "conll2003")
    metrics = _run(c, tmp_path)
    assert {"eval/f1", "eval/precision", "eval/recall", "eval/f1_PER"} <= set(metrics)
    # predictions.txt (conlleval's input) holds the dev set, gold and predicted
    # tags, and scores what eval/ reports.
    from seqeval.metrics import f1_score

    blocks = (tmp_path / "predictions.txt").read_text().split("\n\n")
    sentences = [[line.split() for line in b.splitlines()] for b in blocks if b.strip()]
    sentences = [s for s in sentences if s[0][0] != "-DOCSTART-"]
    assert len(sentences) == 3250  # CoNLL-2003 valid
    gold = [[w[3] for w in s] for s in sentences]
    pred = [[w[4] for w in s] for s in sentences]
    assert_close(f1_score(gold, pred), metrics["eval/f1"], atol=1e-9)
    text = "Angela Merkel met Emmanuel Macron in Paris on Tuesday."
    out = subprocess.run(
        [sys.executable, "-m", "bert_jax.tools.predict", f"--workdir={tmp_path}", f"--text={text}"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    (row,) = [json.loads(x) for x in out.stdout.splitlines()]
    assert row["text"] == text
    for ent in row["entities"]:  # a 4-step model tags little; the offsets must be exact
        assert text[ent["start"] : ent["end"]] == ent["text"]
        assert ent["type"] in ("PER", "ORG", "LOC", "MISC")


def test_checkpoint_architecture_conflicts_are_named(minilm_dir, shared_data, tmp_path):
    c = glue.get_config("task=sst2,model=base")
    c.init_checkpoint = str(minilm_dir)
    c.data.data_dir = str(shared_data / "glue")
    with pytest.raises(ValueError, match=r"model.size='base' conflicts with init_checkpoint"):
        train.run(c, str(tmp_path))
    c = glue.get_config("task=sst2")
    c.init_checkpoint, c.model.num_layers = str(minilm_dir), 12
    c.data.data_dir = str(shared_data / "glue")
    with pytest.raises(ValueError, match=r"model.num_layers=12 conflicts"):
        train.run(c, str(tmp_path))


def test_unknown_glue_task_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown GLUE task 'sst3'.*'sst2'"):
        glue.get_config("task=sst3")


def test_squad_predictions_match_the_official_evaluation(shared_data, tmp_path):
    """Train briefly on real dev questions, write predictions.json, score it with the CLI."""
    from configs import squad

    c = _tiny(squad.get_config("version=1.1,tiny"), shared_data)
    squad_dir = shared_data / "squad" / "v1.1"
    c.data.data_dir = str(squad_dir)
    c.data.train_file = c.data.eval_file = "dev-v1.1.json"  # the only SQuAD file here
    c.data.max_eval_examples = 150
    metrics = _run(c, tmp_path)
    assert set(metrics) == {"eval/exact_match", "eval/f1"}
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    assert len(predictions) == 150
    # The CLI scores every dev question; unanswered ones count as wrong.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bert_jax.metrics.squad",
            str(squad_dir / "dev-v1.1.json"),
            str(tmp_path / "predictions.json"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    full = json.loads(out.stdout)
    assert full["f1"] == pytest.approx(metrics["eval/f1"] * 150 / 10570, rel=1e-9)
    context = (
        "The Normans were the people who in the 10th and 11th centuries gave their name "
        "to Normandy."
    )
    (row,) = Predictor(str(tmp_path))(
        [json.dumps({"question": "Who gave their name to Normandy?", "context": context})]
    )
    assert row["answer"] == context[row["start"] : row["end"]] and row["answer"]


def test_multiple_choice_on_swag_layout(shared_data, tmp_path):
    """SWAG-layout CSVs built from real SQuAD paragraphs: pick the true next sentence."""
    from bert_jax.data.pretraining import corpus
    from configs import swag

    data = json.loads((shared_data / "squad" / "v1.1" / "dev-v1.1.json").read_text())
    sentences = [
        corpus.split_sentences(p["context"]) for a in data["data"] for p in a["paragraphs"]
    ]
    pool = [s for para in sentences for s in para]
    rng = np.random.default_rng(0)
    rows = []
    for para in sentences[:150]:
        if len(para) < 2:
            continue
        endings = [para[1]] + [pool[i] for i in rng.choice(len(pool), 3, replace=False)]
        order = rng.permutation(4)
        rows.append([para[0], ""] + [endings[i] for i in order] + [int(np.argmin(order))])
    header = ["sent1", "sent2", "ending0", "ending1", "ending2", "ending3", "label"]
    for name, part in (("train.csv", rows[:96]), ("val.csv", rows[96:])):
        with open(tmp_path / name, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([header] + part)
    c = _tiny(swag.get_config("tiny"), shared_data)
    c.data.data_dir = str(tmp_path)
    metrics = _run(c, tmp_path / "run")
    assert set(metrics) == {"eval/accuracy"} and 0.0 <= metrics["eval/accuracy"] <= 1.0
    # The workdir predicts new items: one probability per ending.
    item = {"context": rows[0][0], "endings": rows[0][2:6]}
    (row,) = Predictor(str(tmp_path / "run"))([json.dumps(item)])
    assert_close(sum(row["probabilities"]), 1.0, atol=1e-5)
    assert row["choice"] == int(np.argmax(row["probabilities"]))
    with open(tmp_path / "bad.csv", "w", newline="", encoding="utf-8") as f:
        good = ["ctx", "", "a", "b", "c", "d", "1"]
        csv.writer(f).writerows([header, ["ctx", "", "a", "b", "c", "d", "7"], good])
    from bert_jax.data.glue import ReadStats
    from bert_jax.data.swag import read_swag_csv

    with pytest.raises(ValueError, match=r"bad.csv:2: label '7' is not in 0..3"):
        read_swag_csv(str(tmp_path / "bad.csv"))
    stats = ReadStats()
    kept = read_swag_csv(str(tmp_path / "bad.csv"), on_bad_input="skip", stats=stats)
    assert [r["label"] for r in kept] == [1] and stats.skipped == 1
