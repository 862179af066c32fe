"""SQuAD v2.0: the null threshold tuned on dev, reported, written and used by predict.

The v2.0 file is the real v1.1 dev set's first 10 paragraphs with every
tenth question made impossible (its answers become plausible answers, as in
the official v2.0 files).
"""

import json

import pytest

from bert_jax.data import squad as squad_data
from bert_jax.metrics import squad as squad_eval
from bert_jax.tools.predict import Predictor
from configs import squad
from tests.tasks import tiny_runs


def _v2_dev(shared_data, tmp_path):
    with open(shared_data / "squad" / "v1.1" / "dev-v1.1.json", encoding="utf-8") as f:
        article = json.load(f)["data"][0]
    article["paragraphs"] = article["paragraphs"][:10]
    n = 0
    for paragraph in article["paragraphs"]:
        for qa in paragraph["qas"]:
            impossible = n % 10 == 9
            qa["is_impossible"] = impossible
            if impossible:
                qa["plausible_answers"], qa["answers"] = qa["answers"], []
            n += 1
    path = tmp_path / "dev-v2.0.json"
    path.write_text(json.dumps({"version": "v2.0", "data": [article]}), encoding="utf-8")
    return path


def _official(*args) -> dict:
    """What the evaluation CLI (`python -m bert_jax.metrics.squad`) prints, in-process."""
    return squad_eval.main([str(a) for a in args])


def test_tuned_threshold_scores_the_official_best_f1(shared_data, tmp_path):
    data_path = _v2_dev(shared_data, tmp_path)
    c = tiny_runs.tiny(squad.get_config("version=2.0,tiny"), shared_data)
    c.data.data_dir = str(tmp_path)
    c.data.train_file = c.data.eval_file = data_path.name
    c.max_seq_length, c.doc_stride, c.max_query_length = 96, 48, 24
    # Above every null odds: predictions.json holds each question's best
    # non-null answer, so the official search sees every threshold.
    c.null_score_diff_threshold = 1e9
    wd = tmp_path / "run"
    metrics = tiny_runs.run(c, wd)
    tuned = metrics["eval/null_score_diff_threshold"]
    null_odds = json.loads((wd / "null_odds.json").read_text())
    predictions = json.loads((wd / "predictions.json").read_text())
    assert "" not in predictions.values() and len(predictions) == metrics["eval/total"]
    # eval/f1 is at the configured threshold (no na_prob cut at the official 1.0).
    assert _official(data_path, wd / "predictions.json")["f1"] == metrics["eval/f1"]

    # The official search over the written files: its best F1 is the tuned F1.
    official = _official(
        data_path, wd / "predictions.json", "--na-prob-file", wd / "null_odds.json"
    )
    assert official["best_f1"] == pytest.approx(metrics["eval/best_f1"], abs=1e-9)
    assert metrics["eval/tuned_f1"] == pytest.approx(official["best_f1"], abs=1e-6)
    if metrics["eval/tuned_f1"] > 100 * metrics["eval/NoAns_total"] / metrics["eval/total"]:
        # Answering some beats answering nothing (so with this data and seed).
        assert tuned == official["best_f1_thresh"] and tuned in null_odds.values()
    else:  # The official threshold is a placeholder 0.0; ours is below every odds.
        assert tuned == min(null_odds.values()) - 1.0 and official["best_f1_thresh"] == 0.0

    # predictions_tuned.json is those answers blanked above the threshold (ties
    # answered), and the official evaluation scores it the tuned F1.
    tuned_predictions = json.loads((wd / "predictions_tuned.json").read_text())
    assert tuned_predictions == squad_data.apply_null_threshold(predictions, null_odds, tuned)
    assert {q for q, a in tuned_predictions.items() if a == ""} == {
        q for q, odds in null_odds.items() if odds > tuned
    }
    scored = _official(data_path, wd / "predictions_tuned.json")
    assert scored["f1"] == pytest.approx(metrics["eval/tuned_f1"], abs=1e-6)
    assert scored["exact"] == pytest.approx(metrics["eval/tuned_exact_match"], abs=1e-6)
    with open(data_path, encoding="utf-8") as f:
        dataset = json.load(f)
    assert squad_eval.tune_null_threshold(dataset, predictions, null_odds) == (
        tuned,
        pytest.approx(metrics["eval/tuned_f1"], abs=1e-9),
    )

    # predict.py answers new questions at the tuned threshold, else the config's.
    context = dataset["data"][0]["paragraphs"][0]["context"]
    item = json.dumps({"question": "Who won Super Bowl 50?", "context": context})
    predictor = Predictor(str(wd))
    assert predictor.run_metrics["eval/null_score_diff_threshold"] == tuned
    (row,) = predictor([item])
    assert (row["answer"] == "") == (row["null_odds"] > tuned)
    if row["answer"]:
        assert context[row["start"] : row["end"]] == row["answer"]
    # Without a tuned threshold the config's (1e9, above any null odds) applies.
    results = json.loads((wd / "results.json").read_text())
    del results["metrics"]["eval/null_score_diff_threshold"]
    (wd / "results.json").write_text(json.dumps(results))
    (again,) = Predictor(str(wd))([item])
    assert again["null_odds"] == row["null_odds"] and again["answer"]
    assert context[again["start"] : again["end"]] == again["answer"]


def test_tune_null_threshold_by_hand():
    """Ties switch together; answering nothing puts the threshold below every odds."""
    qas = [
        {"id": "a", "answers": [{"text": "x"}]},
        {"id": "b", "answers": []},
        {"id": "c", "answers": [{"text": "z"}]},
    ]
    dataset = {"version": "v2.0", "data": [{"paragraphs": [{"qas": qas}]}]}
    answers = {"a": "x", "b": "y", "c": "z"}
    # From 1 (b right): a (0.5) +1 -> 2; b (0.6) -1 -> 1; c (0.7) +1 -> 2, not above 2.
    assert squad_eval.tune_null_threshold(dataset, answers, {"a": 0.5, "b": 0.6, "c": 0.7}) == (
        0.5,
        pytest.approx(200 / 3),
    )
    # a and b tie at 0.5: no threshold answers a without b; c (0.7) reaches 2.
    odds = {"a": 0.5, "b": 0.5, "c": 0.7}
    threshold, f1 = squad_eval.tune_null_threshold(dataset, answers, odds)
    assert (threshold, f1) == (0.7, pytest.approx(200 / 3))
    scored = squad_eval.evaluate(dataset, squad_data.apply_null_threshold(answers, odds, 0.7))
    assert scored["f1"] == pytest.approx(f1)
    # The official search switches a alone, at a threshold that also answers b.
    official = squad_eval.evaluate(dataset, answers, odds)
    assert (official["best_f1"], official["best_f1_thresh"]) == (pytest.approx(200 / 3), 0.5)
    # Nothing right: answer nothing, below the lowest null odds (official: 0.0).
    wrong = {"a": "q", "b": "y", "c": "q"}
    threshold, f1 = squad_eval.tune_null_threshold(dataset, wrong, odds)
    assert (threshold, f1) == (-0.5, pytest.approx(100 / 3))
    assert squad_data.apply_null_threshold(wrong, odds, threshold) == {"a": "", "b": "", "c": ""}
    # An unanswerable question's answer that normalises to "" ("the") scores 1 when
    # answered; the official search counts it -1 and finds answering nothing best.
    answers, odds = {"a": "x", "b": "the", "c": "q"}, {"a": 0.5, "b": 0.4, "c": 0.7}
    threshold, f1 = squad_eval.tune_null_threshold(dataset, answers, odds)
    assert (threshold, f1) == (0.5, pytest.approx(200 / 3))
    scored = squad_eval.evaluate(dataset, squad_data.apply_null_threshold(answers, odds, 0.5))
    assert scored["f1"] == pytest.approx(f1)
    official = squad_eval.evaluate(dataset, answers, odds)
    assert (official["best_f1"], official["best_f1_thresh"]) == (pytest.approx(100 / 3), 0.0)
