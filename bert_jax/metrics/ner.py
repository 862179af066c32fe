"""Entity-level NER scores, as CoNLL's `conlleval` script computes them.

An entity (a "chunk") counts as correct only when its type, first and last word
all match the gold chunk. Precision, recall and F1 are micro averages over all
chunks of all types; `per_type` gives the same scores per entity type, with the
type's number of gold chunks as `support`. `accuracy` is per word.

Chunks are read with conlleval's lenient rules (bert_jax/data/tags.py: `startOfChunk`
and `endOfChunk`, which seqeval's default mode copies), so any tag sequence
scores, legal or not: an `I-X` after `O`, at the start of a sentence or after a
tag of another type starts a chunk, as if it were `B-X`; a type change ends
one. `E-` and `S-` tags (IOBES) are read the conlleval way too. Sentences are
scored separately: no chunk crosses a sentence boundary.

The scores equal seqeval 1.2.2's `precision_score`, `recall_score`,
`f1_score` and `classification_report` in their default mode (tests/metrics/
test_ner_metrics.py checks this on CoNLL-2003). A score whose denominator is
zero is 0.0, as there.
"""

from __future__ import annotations

from collections.abc import Sequence

from bert_jax.data.tags import get_entities


def _scores(correct: int, predicted: int, gold: int) -> dict[str, float]:
    # Same float operations as conlleval and seqeval, so results match bitwise.
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    denom = precision + recall
    f1 = 2 * precision * recall / denom if denom else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def ner_metrics(
    gold_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]
) -> dict[str, object]:
    """Entity-level micro precision/recall/F1, word accuracy and per-type scores.

    Args:
      gold_tags: per sentence, one tag per word ("O", "B-PER", "I-PER", ...).
      pred_tags: the predicted tags, shaped like `gold_tags`.

    Returns:
      {"precision", "recall", "f1", "accuracy": float, "per_type": {type:
      {"precision", "recall", "f1": float, "support": int}}}, with a `per_type`
      entry for every type that has a gold or a predicted chunk, sorted by name.

    Raises:
      ValueError: the sentence counts or lengths differ, or a tag is invalid.
    """
    if len(gold_tags) != len(pred_tags):
        raise ValueError(f"{len(gold_tags)} gold sentences but {len(pred_tags)} predicted")
    gold: set[tuple[int, str, int, int]] = set()
    pred: set[tuple[int, str, int, int]] = set()
    words = right = 0
    for s, (g, p) in enumerate(zip(gold_tags, pred_tags, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {s}: {len(g)} gold tags but {len(p)} predicted")
        gold.update((s, *chunk) for chunk in get_entities(g))
        pred.update((s, *chunk) for chunk in get_entities(p))
        words += len(g)
        right += sum(a == b for a, b in zip(g, p, strict=True))
    correct = gold & pred

    def count(chunks: set[tuple[int, str, int, int]], type_: str) -> int:
        return sum(c[1] == type_ for c in chunks)

    per_type = {}
    for type_ in sorted({c[1] for c in gold | pred}):
        n_gold = count(gold, type_)
        per_type[type_] = {
            **_scores(count(correct, type_), count(pred, type_), n_gold),
            "support": n_gold,
        }
    return {
        **_scores(len(correct), len(pred), len(gold)),
        "accuracy": right / words if words else 0.0,
        "per_type": per_type,
    }
