"""GLUE scores as the leaderboard computes them, and its submission files.

Each task's metrics come from the GLUE paper (Wang et al. 2019, Table 1):
CoLA Matthews correlation; MRPC and QQP F1 and accuracy; STS-B Pearson and
Spearman correlation; AX the 3-class Matthews correlation (R3); accuracy
elsewhere (MNLI once per dev set, matched and mismatched). The numbers equal
scikit-learn's `matthews_corrcoef`, `f1_score`, `accuracy_score` and scipy's
`pearsonr`, `spearmanr` (tests/metrics/test_glue_metrics.py checks this on
the real dev sets), without importing scikit-learn.

Degenerate inputs get 0.0, never nan: MCC when a class is absent from the
labels or the predictions (as scikit-learn), F1 with no positive label or
prediction (scikit-learn's zero_division=0), and Pearson/Spearman when either
side is constant, where scipy returns nan with a warning. A model that
predicts one value has shown no correlation, and a nan would poison
best-checkpoint selection (`max` over evals) and averages across seeds.

    scores = glue_metrics("mrpc", predictions, labels)  # {"f1": ..., "accuracy": ...}
    write_submission("mnli", class_ids, out_dir, indices, split="test_matched")
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

import numpy as np

from bert_jax.data.glue import GlueTask, get_task

# ------------------------------------------------------------------ metrics


def _pair(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.ndim != 1 or predictions.shape != labels.shape:
        raise ValueError(
            f"predictions and labels must be 1-D of one length, got shapes "
            f"{predictions.shape} and {labels.shape}"
        )
    if not len(labels):
        raise ValueError("no examples to score")
    return predictions, labels


def accuracy(predictions, labels) -> float:
    """Fraction of predictions equal to the label."""
    predictions, labels = _pair(predictions, labels)
    return float(np.mean(predictions == labels))


def f1(predictions, labels, positive=1) -> float:
    """Binary F1 of class `positive` (GLUE: the paraphrase/duplicate class "1").

    F1 = 2 TP / (2 TP + FP + FN), the form scikit-learn computes; 0.0 when
    there is no positive label or prediction.
    """
    predictions, labels = _pair(predictions, labels)
    predicted, actual = predictions == positive, labels == positive
    true_positives = np.sum(predicted & actual)
    denominator = np.sum(predicted) + np.sum(actual)
    return float(2 * true_positives / denominator) if denominator else 0.0


def matthews_corrcoef(predictions, labels) -> float:
    """Matthews correlation coefficient, for two classes or more (R_K).

    Computed from the confusion matrix as scikit-learn does (Gorodkin 2004's
    multiclass form, which GLUE's R3 for AX is); 0.0 when the labels or the
    predictions hold a single class.
    """
    predictions, labels = _pair(predictions, labels)
    classes, codes = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    k, n = len(classes), len(labels)
    confusion = np.bincount(codes[:n] * k + codes[n:], minlength=k * k).reshape(k, k)
    t_sum = confusion.sum(axis=1, dtype=np.float64)  # per true class
    p_sum = confusion.sum(axis=0, dtype=np.float64)  # per predicted class
    n_correct = np.trace(confusion, dtype=np.float64)
    n_samples = p_sum.sum()
    cov_ytyp = n_correct * n_samples - np.dot(t_sum, p_sum)
    cov_ypyp = n_samples**2 - np.dot(p_sum, p_sum)
    cov_ytyt = n_samples**2 - np.dot(t_sum, t_sum)
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / np.sqrt(cov_ytyt * cov_ypyp))


def _scores(predictions, labels) -> tuple[np.ndarray, np.ndarray] | None:
    """Float64 pairs for a correlation; None where one side is constant."""
    predictions, labels = _pair(predictions, labels)
    predictions, labels = predictions.astype(np.float64), labels.astype(np.float64)
    if np.all(predictions == predictions[0]) or np.all(labels == labels[0]):
        return None
    return predictions, labels


def pearson(predictions, labels) -> float:
    """Pearson correlation (scipy's `pearsonr`); 0.0 when a side is constant."""
    import scipy.stats  # here, not at the top: it costs every CLI start 0.7 s

    pair = _scores(predictions, labels)
    return 0.0 if pair is None else float(scipy.stats.pearsonr(*pair).statistic)


def spearman(predictions, labels) -> float:
    """Spearman correlation (scipy's `spearmanr`); 0.0 when a side is constant.

    Ties share their average rank, as in scipy.
    """
    import scipy.stats

    pair = _scores(predictions, labels)
    return 0.0 if pair is None else float(scipy.stats.spearmanr(*pair).statistic)


def _class_ids(task: GlueTask, values) -> np.ndarray:
    """Class ids, from ids or from label strings ("entailment", "1", ...)."""
    values = np.asarray(values)
    if values.dtype.kind not in "USO":
        return values.astype(np.int64)
    ids = {label: i for i, label in enumerate(task.labels)}
    unknown = sorted({str(v) for v in values.tolist()} - ids.keys())
    if unknown:
        raise ValueError(f"labels {unknown} are not {task.name} labels {list(task.labels)}")
    return np.array([ids[v] for v in values.tolist()], dtype=np.int64)


def glue_metrics(task: str, predictions, labels) -> dict[str, float]:
    """The GLUE metrics of one task on one eval set.

    Args:
      task: a task name (see `bert_jax.data.glue.get_task`); MNLI is scored
        once per dev set (matched, mismatched) by calling this twice.
      predictions: class ids (indices into the task's labels) or label
        strings; floats for STS-B.
      labels: the gold labels, in the same form.

    Returns:
      CoLA and AX {"mcc"}, STS-B {"pearson", "spearman"}, MRPC and QQP
      {"f1", "accuracy"}, the others {"accuracy"}.
    """
    glue_task = get_task(task)
    if not glue_task.is_regression:
        predictions, labels = _class_ids(glue_task, predictions), _class_ids(glue_task, labels)
    compute = {
        "mcc": matthews_corrcoef,
        "accuracy": accuracy,
        # F1 of "1", the paraphrase (MRPC) / duplicate (QQP) class.
        "f1": lambda p, y: f1(p, y, positive=glue_task.labels.index("1")),
        "pearson": pearson,
        "spearman": spearman,
    }
    return {name: compute[name](predictions, labels) for name in glue_task.metrics}


# --------------------------------------------------------------- submissions


def _prediction_strings(task: GlueTask, predictions) -> list[str]:
    """What the leaderboard wants in the prediction column."""
    values = np.asarray(predictions)
    if task.is_regression:
        values = values.astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{task.name} predictions must be finite numbers")
        # Gold scores lie in [0, 5]; 3 decimals as the GLUE baselines write them.
        return [f"{x:.3f}" for x in np.clip(values, 0.0, 5.0)]
    ids = _class_ids(task, values)
    if np.any((ids < 0) | (ids >= len(task.labels))):
        raise ValueError(f"{task.name} class ids must lie in [0, {len(task.labels)})")
    return [task.labels[i] for i in ids]


def write_submission(
    task: str,
    predictions,
    out_dir: str,
    indices: Sequence[int],
    *,
    split: str | None = None,
) -> str:
    """Writes one GLUE leaderboard file: "index\\tprediction", a row per example.

    Predictions become what the leaderboard expects: the label words for
    MNLI, AX, QNLI and RTE, "0"/"1" for the other classification tasks, and
    for STS-B the score clipped to [0, 5] with 3 decimals. Rows are sorted by
    index. The file appears whole or not at all (written beside, then renamed).

    Args:
      task: a task name; AX takes the predictions of an MNLI model.
      predictions: class ids (indices into the task's labels) or label
        strings; scores for STS-B.
      out_dir: folder for the file (created if missing).
      indices: each prediction's example index (`Example.index`).
      split: the test split, needed for MNLI only ("test_matched" ->
        MNLI-m.tsv, "test_mismatched" -> MNLI-mm.tsv).

    Returns:
      The path written (`<out_dir>/CoLA.tsv`, ...).

    Raises:
      ValueError: lengths differ, an index repeats, a prediction is not a
        label / class id / finite score, or the split has no leaderboard file.
    """
    glue_task = get_task(task)
    if split is None:
        if len(glue_task.submissions) != 1:
            raise ValueError(
                f"{glue_task.name} has several test sets; pass split= one of "
                f"{list(glue_task.submissions)}"
            )
        (split,) = glue_task.submissions
    if split not in glue_task.submissions:
        raise ValueError(
            f"no leaderboard file for {glue_task.name} {split!r}; "
            f"splits: {list(glue_task.submissions)}"
        )
    indices = np.asarray(indices, dtype=np.int64)
    rows = _prediction_strings(glue_task, predictions)
    if len(rows) != len(indices):
        raise ValueError(f"{len(rows)} predictions for {len(indices)} indices")
    if len(np.unique(indices)) != len(indices):
        raise ValueError("indices repeat")
    order = np.argsort(indices, kind="stable")
    text = "index\tprediction\n" + "".join(f"{indices[i]}\t{rows[i]}\n" for i in order)

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, glue_task.submissions[split])
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".tmp-", suffix=".tsv")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
