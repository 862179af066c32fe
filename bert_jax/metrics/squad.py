"""The official SQuAD v1.1 and v2.0 evaluations, re-implemented.

    python -m bert_jax.metrics.squad dev-v1.1.json predictions.json
    python -m bert_jax.metrics.squad dev-v2.0.json predictions.json \\
        --na-prob-file null_odds.json

prints the JSON that the official `evaluate-v1.1.py` / `evaluate-v2.0.py`
print for the same files (the version is read from the data: v2.0 files say
"v2.0" or have "is_impossible"). The semantics are the official ones, quirks
included:

* Answers are normalised (lower case, drop string.punctuation, drop the
  words a/an/the, collapse whitespace); EM and F1 (over the multiset of
  normalised tokens) are the maxima over the gold answers.
* v1.1: {"exact_match", "f1"} in percent; a question without a prediction
  scores 0 and is named on stderr; an empty prediction scores F1 0 (even
  against an empty gold answer).
* v2.0: gold answers that normalise to "" are dropped, none left means the
  gold is [""]; F1 is 1 when both sides are empty. A question with
  no-answer probability > `na_prob_thresh` (default 1.0) counts as answered
  "". Keys: exact, f1, total, HasAns_*, NoAns_* (each group only when
  non-empty), and with na_probs best_exact, best_exact_thresh, best_f1,
  best_f1_thresh (`find_all_best_thresh`). The official script needs a
  prediction for every question (it crashes with a KeyError otherwise); this
  one raises ValueError naming them.
* Sums are taken the way the official scripts take them (a running `+=` in
  v1.1, `sum()` in v2.0) so the floats, and so the printed JSON, are the
  same on the same Python.

Precision-recall plots (the official --out-image-dir) are not reproduced.
Not in the official scripts: `tune_null_threshold`, the v2.0 null threshold
that scores best on dev when applied (the fine-tuning evaluation reports it).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import string
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from bert_jax.data import files
from bert_jax.data.squad import is_version_2, load_json

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (official order)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, gold: str) -> int:
    return int(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str, version_2: bool = True) -> float:
    """Token-multiset F1 of the normalised answers.

    v2.0 scores two empty answers 1 and one empty answer 0; v1.1 scores any
    empty side 0.
    """
    pred_tokens = normalize_answer(prediction).split() if prediction else []
    gold_tokens = normalize_answer(gold).split() if gold else []
    if version_2 and (not pred_tokens or not gold_tokens):
        return int(pred_tokens == gold_tokens)
    common = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
    if common == 0:
        return 0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def _articles(dataset: Mapping[str, Any] | Sequence[Any]) -> Sequence[Any]:
    return dataset["data"] if isinstance(dataset, Mapping) else dataset


def _questions(dataset):
    for article in _articles(dataset):
        for paragraph in article["paragraphs"]:
            yield from paragraph["qas"]


def evaluate_v1(dataset, predictions: Mapping[str, str]) -> dict[str, float]:
    """`evaluate-v1.1.py`'s evaluate(): {"exact_match", "f1"} in percent."""
    total = em_sum = f1_sum = 0
    for qa in _questions(dataset):
        total += 1
        if qa["id"] not in predictions:
            print(f"Unanswered question {qa['id']} will receive score 0.", file=sys.stderr)
            continue
        golds = [a["text"] for a in qa["answers"]]
        prediction = predictions[qa["id"]]
        # default=0: a v1.1 question without gold answers (the official script crashes).
        em_sum += max((exact_match(prediction, g) for g in golds), default=0)
        f1_sum += max((f1(prediction, g, version_2=False) for g in golds), default=0)
    return {"exact_match": 100.0 * em_sum / total, "f1": 100.0 * f1_sum / total}


def best_null_threshold(
    predictions: Mapping[str, str],
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    qid_to_has_ans: Mapping[str, bool],
) -> tuple[float, float]:
    """The official `find_best_thresh`: the no-answer threshold that scores best.

    Starting from "answer nothing" (every no-answer question right), walks the
    questions by rising na_prob, switching each to its prediction: an
    answerable one gains its score, an unanswerable one loses 1 if the
    prediction is non-empty. The best total and the na_prob where it was
    reached (0.0 if answering nothing is best); predict "" above it.

    Returns:
      (best score in percent of len(scores), threshold).
    """
    current = best = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:
            current += scores[qid]
        else:
            current += -1 if predictions[qid] else 0
        if current > best:
            best, best_thresh = current, na_probs[qid]
    return 100.0 * best / len(scores), best_thresh


def _raw_scores_v2(dataset, predictions: Mapping[str, str]):
    """`get_raw_scores`: per question, has-answer and the prediction's EM and F1."""
    qid_to_has_ans = {qa["id"]: bool(qa["answers"]) for qa in _questions(dataset)}
    missing = [k for k in qid_to_has_ans if k not in predictions]
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ValueError(f"missing predictions for {len(missing)} questions: {shown}")
    exact_raw, f1_raw = {}, {}
    for qa in _questions(dataset):
        golds = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])] or [""]
        prediction = predictions[qa["id"]]
        exact_raw[qa["id"]] = max(exact_match(prediction, g) for g in golds)
        f1_raw[qa["id"]] = max(f1(prediction, g) for g in golds)
    return qid_to_has_ans, exact_raw, f1_raw


def tune_null_threshold(
    dataset, answers: Mapping[str, str], null_odds: Mapping[str, float]
) -> tuple[float, float]:
    """The v2.0 null threshold with the best F1 when applied, and that F1.

    The official best-threshold search (`best_null_threshold`, reported as
    best_f1_thresh) walks the questions by rising null odds from "answer
    nothing", switching each to its prediction. Fed the predictions written at
    a fixed threshold, it cannot look past that threshold: a question already
    predicted "" has no answer to switch to. Here `answers` holds every
    question's best non-null answer, and three details differ so that
    predicting "" where null odds > threshold (`squad.apply_null_threshold`,
    the official `apply_no_ans_threshold`) scores exactly the F1 returned:

    * questions with equal null odds switch together (no threshold splits them);
    * a switched unanswerable question scores its F1 against "" (1 for an
      answer that normalises to "", as "the"), not the official -1 for any
      non-empty text;
    * when answering nothing is best the threshold is 1 below the lowest null
      odds (the official search says 0.0, which answers those below 0).

    Otherwise, as with distinct float null odds, the F1 is the official
    best_f1 over the same inputs and the threshold its best_f1_thresh.

    Args:
      dataset: the v2.0 JSON, or its "data" list.
      answers: {qas_id: best non-null answer} for every question
        (`squad.postprocess` with null_score_diff_threshold=math.inf).
      null_odds: {qas_id: null score - best non-null score}.

    Returns:
      (threshold, F1 in percent at that threshold).
    """
    qid_to_has_ans, _, f1_raw = _raw_scores_v2(dataset, answers)
    # "Answer nothing" scores every unanswerable question 1, every other 0.
    current = best = sum(1 for has_ans in qid_to_has_ans.values() if not has_ans)
    order = sorted(f1_raw, key=lambda k: null_odds[k])
    best_thresh = null_odds[order[0]] - 1.0 if order else 0.0
    for i, qid in enumerate(order):
        current += f1_raw[qid] - (0 if qid_to_has_ans[qid] else 1)
        last_of_ties = i + 1 == len(order) or null_odds[order[i + 1]] != null_odds[qid]
        if last_of_ties and current > best:
            best, best_thresh = current, null_odds[qid]
    return best_thresh, 100.0 * best / max(len(order), 1)


def _eval_dict(exact_scores, f1_scores, qids=None) -> dict[str, Any]:
    """`make_eval_dict`: mean EM and F1 in percent over `qids` (default: all)."""
    if not qids:
        total = len(exact_scores)
        exact, f1_ = sum(exact_scores.values()), sum(f1_scores.values())
    else:
        total = len(qids)
        exact, f1_ = sum(exact_scores[k] for k in qids), sum(f1_scores[k] for k in qids)
    return {"exact": 100.0 * exact / total, "f1": 100.0 * f1_ / total, "total": total}


def evaluate_v2(
    dataset,
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, Any]:
    """`evaluate-v2.0.py`'s main(), as a function; keys in the official order."""
    qid_to_has_ans, exact_raw, f1_raw = _raw_scores_v2(dataset, predictions)
    probs = {k: 0.0 for k in predictions} if na_probs is None else na_probs

    def thresholded(scores):  # `apply_no_ans_threshold`
        return {
            k: float(not qid_to_has_ans[k]) if probs[k] > na_prob_thresh else s
            for k, s in scores.items()
        }

    exact_thresh, f1_thresh = thresholded(exact_raw), thresholded(f1_raw)
    out = _eval_dict(exact_thresh, f1_thresh)
    for prefix, want in (("HasAns", True), ("NoAns", False)):
        qids = [k for k, v in qid_to_has_ans.items() if v == want]
        if qids:
            part = _eval_dict(exact_thresh, f1_thresh, qids)
            out |= {f"{prefix}_{k}": v for k, v in part.items()}
    if na_probs is not None:
        for name, raw in (("exact", exact_raw), ("f1", f1_raw)):
            score, thresh = best_null_threshold(predictions, raw, na_probs, qid_to_has_ans)
            out[f"best_{name}"], out[f"best_{name}_thresh"] = score, thresh
    return out


def evaluate(
    dataset: Mapping[str, Any] | Sequence[Any],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, Any]:
    """The official metrics for a SQuAD file's JSON (or its "data" list).

    Args:
      dataset: the parsed JSON file, or its "data" list.
      predictions: {qas_id: answer text}.
      na_probs: v2.0 only: {qas_id: no-answer probability or null odds}, as
        --na-prob-file; adds the best_* keys.
      na_prob_thresh: v2.0: questions with na_prob above it count as "".

    Returns:
      v1.1: {"exact_match", "f1"}; v2.0: {"exact", "f1", "total", ...}.
    """
    if is_version_2(dataset):
        return evaluate_v2(dataset, predictions, na_probs, na_prob_thresh)
    if na_probs is not None:
        raise ValueError("na_probs (--na-prob-file) applies to SQuAD v2.0 data only")
    return evaluate_v1(dataset, predictions)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="Official evaluation for SQuAD v1.1 and v2.0.")
    parser.add_argument("data_file", metavar="data.json", help="Input data JSON file.")
    parser.add_argument("pred_file", metavar="pred.json", help="Model predictions.")
    parser.add_argument(
        "--out-file", "-o", metavar="eval.json", help="Write metrics to file (default: stdout)."
    )
    parser.add_argument(
        "--na-prob-file", "-n", metavar="na_prob.json", help="v2.0: no-answer probabilities."
    )
    parser.add_argument(
        "--na-prob-thresh",
        "-t",
        type=float,
        default=1.0,
        help='v2.0: predict "" if the no-answer probability exceeds this (default 1.0).',
    )
    args = parser.parse_args(argv)
    try:  # A truncated or non-UTF-8 file: one message naming it (load_json), exit status 2.
        dataset = load_json(args.data_file)
        predictions = load_json(args.pred_file)
        na_probs = load_json(args.na_prob_file) if args.na_prob_file else None
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    result = evaluate(dataset, predictions, na_probs, args.na_prob_thresh)
    if args.out_file:
        with files.atomic_write(args.out_file) as f:
            f.write(json.dumps(result).encode())
    else:
        # The official v2.0 script indents its output; v1.1 prints one line.
        print(json.dumps(result, indent=2 if is_version_2(dataset) else None))
    return result


if __name__ == "__main__":
    main()
