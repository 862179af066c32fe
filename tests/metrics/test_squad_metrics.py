"""The official SQuAD v1.1/v2.0 evaluation: hand-checked cases, the real dev set, the CLI."""

import json
import re
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bert_jax.data import squad
from bert_jax.metrics import squad as squad_eval


@pytest.fixture(scope="module")
def dev_path(shared_data):
    return shared_data / "squad" / "v1.1" / "dev-v1.1.json"


@pytest.fixture(scope="module")
def dev_json(dev_path):
    with open(dev_path, encoding="utf-8") as f:
        return json.load(f)


def _questions(dataset_json):
    return [qa for a in dataset_json["data"] for p in a["paragraphs"] for qa in p["qas"]]


# --------------------------------------------------- an independent tiny reference


def _ref_normalize(s):
    """Same rules, other means: translate() for punctuation, word runs for articles."""
    s = s.lower().translate(str.maketrans("", "", string.punctuation))
    runs = re.findall(r"\w+|\W+", s)
    return " ".join("".join(" " if r in ("a", "an", "the") else r for r in runs).split())


def _ref_f1(pred, gold):  # v1.1: any empty side scores 0.
    p, g = _ref_normalize(pred).split(), _ref_normalize(gold).split()
    common = 0
    for token in set(p):
        common += min(p.count(token), g.count(token))
    return 0.0 if common == 0 else 2 * common / (len(p) + len(g))


def _ref_v1(dataset_json, predictions):
    em = f1 = 0.0
    questions = _questions(dataset_json)
    for qa in questions:
        if qa["id"] in predictions:
            golds = [a["text"] for a in qa["answers"]]
            pred = predictions[qa["id"]]
            em += max(_ref_normalize(pred) == _ref_normalize(g) for g in golds)
            f1 += max(_ref_f1(pred, g) for g in golds)
    return {"exact_match": 100 * em / len(questions), "f1": 100 * f1 / len(questions)}


# ----------------------------------------------------------------- hand-checked


@pytest.mark.parametrize(
    "text, normalized",
    [
        ("The Cat!", "cat"),
        ("cat", "cat"),
        ("  A   cat,\tan apple;\nTHE end. ", "cat apple end"),
        ("theater another anthem", "theater another anthem"),  # Whole words only.
        ("Levi's Stadium", "levis stadium"),
        ("the-end", "theend"),  # Punctuation goes first, then "theend" is no article.
        ("a.b", "ab"),
        ("£20,980", "£20980"),  # "£" is not in string.punctuation.
        ("the", ""),
        ("", ""),
    ],
)
def test_normalize_answer(text, normalized):
    assert squad_eval.normalize_answer(text) == normalized == _ref_normalize(text)


@pytest.mark.parametrize(
    "pred, gold, em, f1_v1, f1_v2",
    [
        ("The Cat!", "cat", 1, 1.0, 1.0),
        ("the Broncos", "Denver Broncos", 0, 2 / 3, 2 / 3),  # P 1/1, R 1/2.
        ("x x y", "x y y", 0, 2 / 3, 2 / 3),  # Multiset: one x and one y in common.
        ("7 February 2016", "February 7, 2016", 0, 1.0, 1.0),  # Order does not matter.
        ("red car", "blue bike", 0, 0, 0),
        ("", "", 1, 0, 1),  # v2.0: both empty agree; v1.1: no tokens in common.
        ("the", "", 1, 0, 1),  # Normalises to empty.
        ("", "cat", 0, 0, 0),
    ],
)
def test_exact_and_f1(pred, gold, em, f1_v1, f1_v2):
    assert squad_eval.exact_match(pred, gold) == em
    assert squad_eval.f1(pred, gold, version_2=False) == pytest.approx(f1_v1)
    assert squad_eval.f1(pred, gold) == pytest.approx(f1_v2)


# ------------------------------------------------------------- v1.1, real dev


def test_gold_answers_score_100_on_real_dev(dev_json, dev_path, tmp_path):
    predictions = {qa["id"]: qa["answers"][0]["text"] for qa in _questions(dev_json)}
    assert len(predictions) == 10570
    assert squad_eval.evaluate(dev_json, predictions) == {"exact_match": 100.0, "f1": 100.0}
    pred_path = tmp_path / "predictions.json"
    pred_path.write_text(json.dumps(predictions), encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "bert_jax.metrics.squad", str(dev_path), str(pred_path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout == '{"exact_match": 100.0, "f1": 100.0}\n'  # The official script's line.
    assert out.stderr == ""


def test_wrong_and_missing_answers_on_real_dev(dev_json, capsys):
    predictions = {qa["id"]: qa["answers"][0]["text"] for qa in _questions(dev_json)}
    # Hand-checked against the gold answers of the first two paragraphs.
    cases = {
        "56be4db0acb8001400a502ec": ("The Broncos!", 0, 2 / 3),  # Gold "Denver Broncos".
        "56be4db0acb8001400a502ee": ("levis stadium", 1, 1),  # Gold 2 "Levi's Stadium".
        "56be8e613aeaaa14008c90d2": ("7 February 2016", 0, 1),  # Gold "February 7, 2016".
        "56beace93aeaaa14008c91e3": ("2015 season", 1, 1),  # Gold 2 "the 2015 season".
        "56be4e1facb8001400a502f9": ("eight times", 0, 2 / 3),  # Gold "eight": P 1/2, R 1.
        "56bead5a3aeaaa14008c91ec": ("Denver", 0, 0),  # Gold "four".
    }
    for qid, (pred, _, _) in cases.items():
        predictions[qid] = pred
    del predictions["56bf159b3aeaaa14008c9507"]  # Missing: scores 0.
    n = 10570
    em = 100 * (n - 1 - sum(1 - e for _, e, _ in cases.values())) / n
    f1 = 100 * (n - 1 - sum(1 - f for _, _, f in cases.values())) / n
    result = squad_eval.evaluate(dev_json, predictions)
    assert result == pytest.approx({"exact_match": em, "f1": f1}, rel=1e-12)
    assert result == pytest.approx(_ref_v1(dev_json, predictions), rel=1e-12)
    assert capsys.readouterr().err == (
        "Unanswered question 56bf159b3aeaaa14008c9507 will receive score 0.\n"
    )


def test_perturbed_predictions_match_reference_on_real_dev(dev_json):
    """Many kinds of wrong answers over the whole dev set vs. the tiny reference."""
    predictions = {}
    for i, qa in enumerate(_questions(dev_json)):
        gold = [a["text"] for a in qa["answers"]]
        if i % 7 == 0:
            predictions[qa["id"]] = qa["question"]
        elif i % 11 == 0:
            predictions[qa["id"]] = gold[0] + " and the rest"
        elif i % 13 == 0:
            predictions[qa["id"]] = "The " + gold[-1].upper() + "!!"
        elif i % 17 == 0:
            predictions[qa["id"]] = ""
        elif i % 19 == 0:
            predictions[qa["id"]] = " ".join(reversed(gold[-1].split()))
        else:
            predictions[qa["id"]] = gold[i % len(gold)]
    result = squad_eval.evaluate(dev_json, predictions)
    assert result == pytest.approx(_ref_v1(dev_json, predictions), rel=1e-12)
    assert 70 < result["exact_match"] < result["f1"] < 100


# ------------------------------------------------------------------- v2.0


def _v2_file(dev_json, tmp_path):
    """Six questions on the first real dev paragraph, the last three made impossible.

    The order of the qas is the order of q1..q6 below.
    """
    paragraph = dev_json["data"][0]["paragraphs"][0]
    by_id = {qa["id"]: qa for qa in paragraph["qas"]}
    qas = []
    for qid in ("56be4db0acb8001400a502ec", "56be4db0acb8001400a502ee", "56be4db0acb8001400a502ef"):
        qas.append({**by_id[qid], "is_impossible": False})
    for qid in ("56be4db0acb8001400a502f0", "56be8e613aeaaa14008c90d1", "56be8e613aeaaa14008c90d2"):
        qas.append(
            {**by_id[qid], "answers": [], "plausible_answers": by_id[qid]["answers"][:1]}
            | {"is_impossible": True}
        )
    data = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{**paragraph, "qas": qas}]}]}
    path = tmp_path / "dev-v2.0.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path, data, [qa["id"] for qa in qas]


# q1..q3 answerable, q4..q6 impossible: (prediction, na_prob, EM, F1) by hand.
_V2_CASES = [
    ("Denver Broncos", 0.1, 1, 1.0),
    ("Santa Clara", 0.2, 0, 0.8),  # Best gold "Santa Clara, California": P 2/2, R 2/3.
    ("", 0.9, 0, 0.0),
    ("", 0.8, 1, 1.0),
    ("gold", 0.3, 0, 0.0),
    ("Denver", 1.5, 0, 0.0),  # na_prob 1.5 > 1.0: scored as "" (right) in exact/f1.
]


def _v2_expected():
    """exact/f1 after the 1.0 threshold: q6 counts 1. best_*: walking na_prob up
    from 3 (all NoAns right): q1 +1 -> 4 (0.1), q2 +0 / +0.8 -> 4 / 4.8 (0.2),
    q5 -1, q4 0, q3 0, q6 -1; so best 4/6 at 0.1 (EM), 4.8/6 at 0.2 (F1)."""
    return {
        "exact": 100 * 3 / 6,
        "f1": 100 * 3.8 / 6,
        "total": 6,
        "HasAns_exact": 100 * 1 / 3,
        "HasAns_f1": 100 * 1.8 / 3,
        "HasAns_total": 3,
        "NoAns_exact": 100 * 2 / 3,
        "NoAns_f1": 100 * 2 / 3,
        "NoAns_total": 3,
        "best_exact": 100 * 4 / 6,
        "best_exact_thresh": 0.1,
        "best_f1": 100 * 4.8 / 6,
        "best_f1_thresh": 0.2,
    }


def test_v2_splits_and_best_threshold(dev_json, tmp_path):
    _, data, qids = _v2_file(dev_json, tmp_path)
    predictions = {q: c[0] for q, c in zip(qids, _V2_CASES, strict=True)}
    na_probs = {q: c[1] for q, c in zip(qids, _V2_CASES, strict=True)}
    result = squad_eval.evaluate(data, predictions, na_probs)
    expected = _v2_expected()
    assert list(result) == list(expected)  # The official key order.
    assert result == pytest.approx(expected, rel=1e-12)
    # Without na_probs: no threshold applied (q6 wrong), no best_* keys.
    plain = squad_eval.evaluate(data, predictions)
    assert list(plain) == list(expected)[:9]
    assert plain["exact"] == pytest.approx(100 * 2 / 6) and plain["NoAns_exact"] == 100 / 3
    # Only one group present -> only its keys.
    answerable = {**data, "data": [{"paragraphs": [{**data["data"][0]["paragraphs"][0]}]}]}
    answerable["data"][0]["paragraphs"][0]["qas"] = data["data"][0]["paragraphs"][0]["qas"][:3]
    assert list(squad_eval.evaluate(answerable, predictions)) == list(expected)[:6]


def test_best_null_threshold_alone():
    has_ans = {"a": True, "b": False, "c": True}
    preds = {"a": "x", "b": "y", "c": "z"}
    # Start 1 (b right); a (0.5) +1 -> 2 best; b (0.6) -1 -> 1; c (0.7) +0.5 -> 1.5.
    assert squad_eval.best_null_threshold(
        preds, {"a": 1, "b": 0, "c": 0.5}, {"a": 0.5, "b": 0.6, "c": 0.7}, has_ans
    ) == (pytest.approx(200 / 3), 0.5)
    # Answering nothing is best: threshold 0.0.
    assert squad_eval.best_null_threshold(
        preds, {"a": 0, "b": 0, "c": 0}, {"a": 0.5, "b": 0.6, "c": 0.7}, has_ans
    ) == (pytest.approx(100 / 3), 0.0)


def test_v2_gold_answers_that_normalise_to_nothing():
    data = {
        "version": "v2.0",
        "data": [
            {"paragraphs": [{"context": "the", "qas": [{"id": "q", "answers": [{"text": "The"}]}]}]}
        ],
    }
    # The gold becomes [""]: "" is right, yet the question counts as HasAns.
    assert squad_eval.evaluate(data, {"q": ""})["HasAns_exact"] == 100.0
    assert squad_eval.evaluate(data, {"q": "the"})["exact"] == 100.0
    assert squad_eval.evaluate(data, {"q": "cat"})["exact"] == 0.0


def test_v2_cli_with_na_prob_file(dev_json, tmp_path, capsys):
    data_path, _, qids = _v2_file(dev_json, tmp_path)
    pred_path, na_path = tmp_path / "predictions.json", tmp_path / "null_odds.json"
    pred_path.write_text(json.dumps({q: c[0] for q, c in zip(qids, _V2_CASES, strict=True)}))
    na_path.write_text(json.dumps({q: c[1] for q, c in zip(qids, _V2_CASES, strict=True)}))
    result = squad_eval.main([str(data_path), str(pred_path), "--na-prob-file", str(na_path)])
    printed = capsys.readouterr().out
    assert printed == json.dumps(result, indent=2) + "\n"  # The official script's layout.
    assert json.loads(printed) == pytest.approx(_v2_expected(), rel=1e-12)
    out_file = tmp_path / "eval.json"
    squad_eval.main([str(data_path), str(pred_path), "-n", str(na_path), "-o", str(out_file)])
    assert capsys.readouterr().out == ""
    assert out_file.read_text() == json.dumps(result)
    # --na-prob-thresh 0.15: all but q1 count as "": q2 (0.8 F1) -> 0, q5 -> 1.
    result = squad_eval.main(
        [str(data_path), str(pred_path), "-n", str(na_path), "--na-prob-thresh", "0.15"]
    )
    capsys.readouterr()
    assert result["exact"] == result["f1"] == pytest.approx(100 * 4 / 6)
    assert result["HasAns_f1"] == pytest.approx(100 / 3) and result["NoAns_f1"] == 100.0


def test_v2_needs_every_prediction_and_v1_takes_no_na_probs(dev_json, tmp_path):
    _, data, qids = _v2_file(dev_json, tmp_path)
    with pytest.raises(ValueError, match=f"missing predictions for 1 questions: {qids[-1]}"):
        squad_eval.evaluate(data, {q: "" for q in qids[:-1]})
    with pytest.raises(ValueError, match="v2.0 data only"):
        squad_eval.evaluate(dev_json, {}, na_probs={})


def test_v2_null_odds_from_postprocess(dev_json, tmp_path, shared_data):
    """Hand-set logits over several windows: null = the lowest [CLS] pair."""
    from bert_jax.tokenizers.wordpiece import BertTokenizer

    path, _, qids = _v2_file(dev_json, tmp_path)
    examples, stats = squad.parse_squad(squad.load_json(str(path)), str(path))
    assert stats["version"] == "2.0" and stats["impossible"] == 3
    tokenizer = BertTokenizer(str(shared_data / "vocab" / "bert-base-uncased" / "vocab.txt"))
    features = squad.make_features(examples, tokenizer, 48, 16, 16, is_training=True)
    a = features.arrays
    assert not a["start_positions"][np.isin(features.example_index, [3, 4, 5])].any()
    start = np.zeros(a["input_ids"].shape, np.float32)
    end = np.zeros(a["input_ids"].shape, np.float32)
    for index in range(len(examples)):
        rows = np.nonzero(features.example_index == index)[0]
        assert len(rows) > 3
        for k, r in enumerate(rows):
            # [CLS] scores: lowest (2 + 1 = 3) in the example's third window;
            # examples 1 and 4 get +10 there, so null 13.
            start[r, 0] = abs(k - 2) + 2 + (10 if index in (1, 4) else 0)
            end[r, 0] = 1
        # Start 3 + end 4 on the first context token of the first window ("Super").
        first = rows[0]
        start[first, features.doc_offset[first]] = 3
        end[first, features.doc_offset[first]] = 4
    predictions, null_odds, nbest = squad.postprocess(
        examples, features, start, end, version_2=True
    )
    # null - best non-null = 3 - 7 = -4, or 13 - 7 = 6 for examples 1 and 4.
    assert null_odds == {q: 6.0 if i in (1, 4) else -4.0 for i, q in enumerate(qids)}
    assert predictions == {q: "" if i in (1, 4) else "Super" for i, q in enumerate(qids)}
    assert [n["text"] for n in nbest[qids[1]][:2]] == ["", "Super"]
    assert nbest[qids[1]][0]["start_logit"] == 12.0 and nbest[qids[1]][0]["end_logit"] == 1.0
    predictions, _, _ = squad.postprocess(
        examples, features, start, end, version_2=True, null_score_diff_threshold=6.0
    )
    assert set(predictions.values()) == {"Super"}
