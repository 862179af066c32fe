"""Tests for bert_jax.metrics.ner against seqeval (default mode = conlleval)."""

import warnings

import numpy as np
import pytest
from seqeval import metrics as seqeval
from seqeval.metrics.sequence_labeling import get_entities as seqeval_entities

from bert_jax.data import conll
from bert_jax.metrics.ner import get_entities, ner_metrics
from tests.data.iob1 import iob2_to_iob1
from tests.numerics import assert_differ

TYPES = ("PER", "ORG", "LOC", "MISC")


def _seqeval_scores(gold, pred) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # UndefinedMetricWarning on 0/0.
        report = seqeval.classification_report(gold, pred, output_dict=True, digits=20)
        return {
            "precision": seqeval.precision_score(gold, pred),
            "recall": seqeval.recall_score(gold, pred),
            "f1": seqeval.f1_score(gold, pred),
            "accuracy": seqeval.accuracy_score(gold, pred),
            "per_type": {
                t: {"precision": r["precision"], "recall": r["recall"], "f1": r["f1-score"]}
                | {"support": int(r["support"])}
                for t, r in report.items()
                if not t.endswith(" avg")
            },
            "micro": report["micro avg"],
        }


def _assert_matches_seqeval(gold, pred) -> dict:
    ours, ref = ner_metrics(gold, pred), _seqeval_scores(gold, pred)
    for key in ("precision", "recall", "f1", "accuracy"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-12, rel=0), key
    assert ours["f1"] == pytest.approx(ref["micro"]["f1-score"], abs=1e-12, rel=0)
    assert ours["per_type"].keys() == ref["per_type"].keys()
    for t, scores in ours["per_type"].items():
        assert scores["support"] == ref["per_type"][t]["support"], t
        for key in ("precision", "recall", "f1"):
            assert scores[key] == pytest.approx(ref["per_type"][t][key], abs=1e-12, rel=0), (t, key)
    return ours


# -------------------------------------------------------------- chunking


def test_seqeval_docstring_examples():
    gold = [["O", "O", "B-MISC", "I-MISC", "B-MISC", "O", "O"], ["B-PER", "I-PER", "O"]]
    pred = [["O", "O", "B-MISC", "I-MISC", "B-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    m = _assert_matches_seqeval(gold, pred)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["per_type"]["MISC"]["f1"] == 0.5 and m["per_type"]["PER"]["f1"] == 1.0


def test_lenient_chunks():
    tags = ["I-PER", "I-PER", "B-PER", "I-LOC", "O", "I-ORG", "B-ORG", "I-MISC", "B-MISC"]
    assert get_entities(tags) == [
        ("PER", 0, 2),
        ("PER", 2, 3),
        ("LOC", 3, 4),  # A type change ends a chunk and starts one.
        ("ORG", 5, 6),  # I- after O starts a chunk.
        ("ORG", 6, 7),
        ("MISC", 7, 8),
        ("MISC", 8, 9),
    ]


@pytest.mark.parametrize("tagset", ["iob", "iobes"])
def test_chunks_equal_seqeval_on_random_sequences(tagset):
    # Random, mostly illegal, sequences exercise every start/end rule.
    prefixes = "BI" if tagset == "iob" else "BIES"
    tags = ["O"] + [f"{p}-{t}" for p in prefixes for t in ("A", "B")]
    rng = np.random.default_rng(0)
    for _ in range(3000):
        seq = [tags[i] for i in rng.integers(0, len(tags), rng.integers(0, 12))]
        expected = [(t, s, e + 1) for t, s, e in seqeval_entities(seq)]
        assert get_entities(seq) == expected, seq


# -------------------------------------------------------- real data


def _perturb(gold: list[list[str]], seed: int) -> list[list[str]]:
    """Deterministic tagger errors of every kind conlleval must score."""
    rng = np.random.default_rng(seed)
    pred = []
    for tags in gold:
        out = list(tags)
        for type_, s, e in get_entities(tags):
            r = rng.random()
            other = TYPES[(TYPES.index(type_) + 1 + int(rng.integers(3))) % 4]
            if r < 0.04:  # Drop the B-: an entity of several words starts with I-.
                out[s] = "O"
            elif r < 0.08:  # Change the type.
                out[s:e] = ["B-" + other] + ["I-" + other] * (e - s - 1)
            elif r < 0.11 and e < len(out) and out[e] == "O":  # Extend to the right.
                out[e] = "I-" + type_
            elif r < 0.14 and e - s > 1:  # Start one word later.
                out[s : s + 2] = ["O", "B-" + type_]
            elif r < 0.17 and e - s > 1:  # Split: an I- becomes B-.
                out[e - 1] = "B-" + type_
            elif r < 0.20:  # Miss the entity.
                out[s:e] = ["O"] * (e - s)
            elif r < 0.22 and e - s > 1:  # Type change inside the entity.
                out[e - 1] = "I-" + other
        for i, tag in enumerate(tags):
            if tag == "O" and out[i] == "O":
                r = rng.random()
                if r < 0.01:  # Illegal I- start.
                    out[i] = "I-" + TYPES[int(rng.integers(4))]
                elif r < 0.02:  # Spurious entity.
                    out[i] = "B-" + TYPES[int(rng.integers(4))]
        pred.append(out)
    return pred


@pytest.fixture(scope="module", params=["valid", "test"])
def real_gold(request, shared_data) -> list[list[str]]:
    sentences, _ = conll.read_conll(str(shared_data / "conll2003" / f"{request.param}.txt"))
    return [list(s.tags) for s in sentences]


def test_perfect_predictions_score_one(real_gold):
    m = _assert_matches_seqeval(real_gold, real_gold)
    assert m["precision"] == m["recall"] == m["f1"] == m["accuracy"] == 1.0
    assert set(m["per_type"]) == set(TYPES)


@pytest.mark.parametrize("seed", [0])
def test_perturbed_predictions_match_seqeval(real_gold, seed):
    pred = _perturb(real_gold, seed)
    m = _assert_matches_seqeval(real_gold, pred)
    assert 0.5 < m["f1"] < 0.95  # The perturbations bite, but not everywhere.
    assert_differ(m["precision"], m["recall"])


def test_iob1_predictions_score_like_iob2(real_gold):
    # conlleval reads IOB1 chunks like their IOB2 form.
    iob1 = [iob2_to_iob1(t) for t in real_gold]
    assert iob1 != real_gold
    m = _assert_matches_seqeval(real_gold, iob1)
    assert m["f1"] == 1.0 and m["accuracy"] < 1.0


# ------------------------------------------------------------- edge cases


def test_no_predicted_entities_scores_zero():
    gold = [["B-PER", "O"], ["O", "B-LOC"]]
    pred = [["O", "O"], ["O", "O"]]
    m = _assert_matches_seqeval(gold, pred)
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"]) == (0.0, 0.0, 0.0, 0.5)
    assert m["per_type"]["PER"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_type_only_predicted_has_zero_support():
    m = _assert_matches_seqeval([["B-PER", "O"]], [["B-PER", "B-ORG"]])
    assert m["per_type"]["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["precision"] == 0.5 and m["recall"] == 1.0


def test_errors():
    with pytest.raises(ValueError, match="2 gold sentences but 1"):
        ner_metrics([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="sentence 1: 1 gold tags but 2"):
        ner_metrics([["O"], ["O"]], [["O"], ["O", "O"]])
    with pytest.raises(ValueError, match="invalid NER tag 'X-PER'"):
        ner_metrics([["O"]], [["X-PER"]])
