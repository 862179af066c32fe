"""Tests for bert_jax.metrics.glue against scikit-learn and scipy on real dev sets."""

import os
import warnings

import numpy as np
import pytest
import scipy.stats
from sklearn import metrics as sk

from bert_jax.data import glue as glue_data
from bert_jax.metrics import glue
from tests.numerics import assert_differ

TOL = 1e-12
_POSITIVE = {"good", "great", "best", "fun", "funny", "beautiful", "love", "charming", "moving"}


def _dev(shared_data, task):
    return glue_data.load_split(task, "dev", shared_data / "glue")


def _ids(values):
    return np.array([int(v) for v in values])


# ---------------------------------------------------- real data, simple rules


def test_sst2_word_rule_matches_sklearn(shared_data):
    dev = _dev(shared_data, "sst2")
    labels = _ids(e.label for e in dev)
    # Positive if the sentence holds a positive word: imperfect on purpose.
    predictions = np.array([int(bool(_POSITIVE & set(e.text_a.split()))) for e in dev])
    assert 0.5 < np.mean(predictions == labels) < 0.9
    assert glue.accuracy(predictions, labels) == pytest.approx(
        sk.accuracy_score(labels, predictions), abs=TOL
    )
    assert glue.f1(predictions, labels) == pytest.approx(sk.f1_score(labels, predictions), abs=TOL)
    assert glue.matthews_corrcoef(predictions, labels) == pytest.approx(
        sk.matthews_corrcoef(labels, predictions), abs=TOL
    )
    scores = glue.glue_metrics("sst2", predictions, labels)
    assert scores == {"accuracy": pytest.approx(sk.accuracy_score(labels, predictions), abs=TOL)}
    # Label strings score like class ids.
    as_strings = glue.glue_metrics("sst2", predictions.astype(str), [e.label for e in dev])
    assert as_strings == scores


def test_cola_length_rule_matches_sklearn(shared_data):
    dev = _dev(shared_data, "cola")
    labels = _ids(e.label for e in dev)
    predictions = np.array([int(len(e.text_a.split()) < 10) for e in dev])
    expected = sk.matthews_corrcoef(labels, predictions)
    assert_differ(expected, 0.0)
    assert glue.glue_metrics("cola", predictions, labels) == {
        "mcc": pytest.approx(expected, abs=TOL)
    }


def test_mrpc_style_f1_and_accuracy_match_sklearn(shared_data):
    # STS-B pairs as a paraphrase task (score >= 3), word overlap as the model.
    dev = _dev(shared_data, "stsb")
    labels = np.array([int(e.label >= 3) for e in dev])
    predictions = np.array([int(_jaccard(e.text_a, e.text_b) > 0.4) for e in dev])
    scores = glue.glue_metrics("mrpc", predictions, labels)
    assert list(scores) == ["f1", "accuracy"]
    assert scores["f1"] == pytest.approx(sk.f1_score(labels, predictions), abs=TOL)
    assert scores["accuracy"] == pytest.approx(sk.accuracy_score(labels, predictions), abs=TOL)


def _jaccard(a: str, b: str) -> float:
    a, b = set(a.lower().split()), set(b.lower().split())
    return len(a & b) / len(a | b)


def test_stsb_overlap_rule_matches_scipy(shared_data):
    dev = _dev(shared_data, "stsb")
    labels = np.array([e.label for e in dev])
    predictions = np.array([5 * _jaccard(e.text_a, e.text_b) for e in dev])
    # Both sides tie a lot (0.0, 5.0, repeated fractions): average ranks matter.
    assert len(np.unique(predictions)) < len(predictions) / 2
    scores = glue.glue_metrics("stsb", predictions, labels)
    assert scores == {
        "pearson": pytest.approx(scipy.stats.pearsonr(predictions, labels)[0], abs=TOL),
        "spearman": pytest.approx(scipy.stats.spearmanr(predictions, labels)[0], abs=TOL),
    }
    assert 0.3 < scores["spearman"] < 0.9


# ------------------------------------------------------------------ the rest


def test_multiclass_mcc_matches_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 500)
    predictions = np.where(rng.random(500) < 0.6, labels, rng.integers(0, 3, 500))
    expected = sk.matthews_corrcoef(labels, predictions)
    assert glue.glue_metrics("ax", predictions, labels) == {"mcc": pytest.approx(expected, abs=TOL)}
    words = np.array(glue_data.TASKS["ax"].labels)
    assert glue.glue_metrics("ax", words[predictions], words[labels])["mcc"] == pytest.approx(
        expected, abs=TOL
    )


def test_degenerate_inputs_score_zero_without_warnings():
    labels = np.array([0, 1, 1, 0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # One predicted class: sklearn's MCC is 0.0 too.
        assert glue.matthews_corrcoef(np.ones(5, int), labels) == 0.0
        assert glue.matthews_corrcoef(np.ones(5, int), np.ones(5, int)) == 0.0
        # No positive anywhere: sklearn's zero_division=0.
        assert glue.f1(np.zeros(5, int), np.zeros(5, int)) == 0.0
        # A constant prediction: scipy says nan with a warning; we say 0.0.
        assert glue.pearson(np.full(5, 2.5), labels) == 0.0
        assert glue.spearman(labels, np.full(5, 2.5)) == 0.0
    assert sk.matthews_corrcoef(labels, np.ones(5, int)) == 0.0
    with pytest.raises(ValueError, match="no examples"):
        glue.accuracy([], [])
    with pytest.raises(ValueError, match="one length"):
        glue.accuracy([1, 0], [1])
    with pytest.raises(ValueError, match="not mnli labels"):
        glue.glue_metrics("mnli", ["entailment"], ["maybe"])


def test_metric_keys_per_task():
    y = np.array([0, 1, 0, 1])
    keys = {name: list(glue.glue_metrics(name, y, y)) for name in glue_data.TASKS if name != "stsb"}
    assert keys == {
        "cola": ["mcc"],
        "sst2": ["accuracy"],
        "mrpc": ["f1", "accuracy"],
        "qqp": ["f1", "accuracy"],
        "mnli": ["accuracy"],
        "qnli": ["accuracy"],
        "rte": ["accuracy"],
        "wnli": ["accuracy"],
        "ax": ["mcc"],
    }
    assert list(glue.glue_metrics("stsb", [0.5, 1.0, 4.0], [1.0, 0.0, 5.0])) == [
        "pearson",
        "spearman",
    ]


# -------------------------------------------------------------- submissions


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_submission_files(tmp_path):
    out = str(tmp_path / "sub")
    path = glue.write_submission("MNLI", [0, 1, 2], out, [2, 0, 1], split="test_mismatched")
    assert os.path.basename(path) == "MNLI-mm.tsv"
    # Sorted by index; MNLI's class ids are run_classifier.py's label order.
    assert _read(path) == "index\tprediction\n0\tentailment\n1\tneutral\n2\tcontradiction\n"
    path = glue.write_submission("rte", ["not_entailment", "entailment"], out, [0, 1])
    assert _read(path) == "index\tprediction\n0\tnot_entailment\n1\tentailment\n"
    path = glue.write_submission("cola", np.array([1, 0]), out, [0, 1])
    assert (os.path.basename(path), _read(path)) == ("CoLA.tsv", "index\tprediction\n0\t1\n1\t0\n")
    path = glue.write_submission("ax", [1], out, [0])
    assert (os.path.basename(path), _read(path)) == ("AX.tsv", "index\tprediction\n0\tentailment\n")
    # STS-B: clipped to [0, 5], 3 decimals.
    path = glue.write_submission("stsb", [-0.2, 2.34567, 5.7, 3], out, [0, 1, 2, 3])
    assert _read(path) == "index\tprediction\n0\t0.000\n1\t2.346\n2\t5.000\n3\t3.000\n"
    assert sorted(os.listdir(out)) == ["AX.tsv", "CoLA.tsv", "MNLI-mm.tsv", "RTE.tsv", "STS-B.tsv"]


def test_every_task_names_its_leaderboard_file(tmp_path):
    names = {
        os.path.basename(glue.write_submission(task, [0], str(tmp_path), [0], split=split))
        for task, t in glue_data.TASKS.items()
        for split in t.submissions
    }
    assert names == {
        "CoLA.tsv",
        "SST-2.tsv",
        "MRPC.tsv",
        "QQP.tsv",
        "STS-B.tsv",
        "MNLI-m.tsv",
        "MNLI-mm.tsv",
        "QNLI.tsv",
        "RTE.tsv",
        "WNLI.tsv",
        "AX.tsv",
    }


def test_submission_errors_leave_nothing(tmp_path):
    out = str(tmp_path)
    with pytest.raises(ValueError, match="split="):
        glue.write_submission("mnli", [0], out, [0])
    with pytest.raises(ValueError, match="repeat"):
        glue.write_submission("sst2", [0, 1], out, [3, 3])
    with pytest.raises(ValueError, match="2 predictions for 1 indices"):
        glue.write_submission("sst2", [0, 1], out, [3])
    with pytest.raises(ValueError, match="class ids"):
        glue.write_submission("sst2", [2], out, [0])
    with pytest.raises(ValueError, match="finite"):
        glue.write_submission("stsb", [float("nan")], out, [0])
    assert os.listdir(out) == []
