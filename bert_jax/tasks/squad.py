"""SQuAD v1.1 / v2.0 span extraction (BERT paper section 4.2-4.3, run_squad.py).

Features are sliding windows over the context (doc stride); the loss is the
mean of the start and end cross-entropies over each window's positions
(a window without the answer, and an impossible v2.0 question, targets
[CLS]). Evaluation post-processes every window's logits into one answer per
question (n-best 20, max answer length 30, v2.0 null answers) and scores it
with the official evaluation semantics (`bert_jax.metrics.squad`);
`predictions.json` (and `null_odds.json` for v2.0) are written to the workdir.

Data: the official JSON files in data.data_dir, or without it TFDS
`squad/v<version>` (data.train_split / data.eval_split) rebuilt as the same
JSON structure, so both take the same reader and the same evaluation.

v2.0 null threshold: the paper tunes it on dev (section 4.3; the original
README reruns with the best_f1_thresh of a first run as
--null_score_diff_threshold). Evaluation does both at once: the metrics at
the configured `null_score_diff_threshold` (exact_match, f1, HasAns_*,
NoAns_*, and the official best_* over those predictions), then the threshold
with the best dev F1 over every question's best non-null answer
(`bert_jax.metrics.squad.tune_null_threshold`) as null_score_diff_threshold, and the
scores of the predictions at it as tuned_exact_match and tuned_f1
(`predictions_tuned.json`). `bert_jax.tools.predict` applies the tuned threshold.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

from bert_jax.data import bad_input, squad
from bert_jax.metrics import squad as squad_eval
from bert_jax.models.heads import BertForQuestionAnswering
from bert_jax.tasks import sources
from bert_jax.tasks.base import EvalResult, EvalSet, Forward, Task
from bert_jax.tasks.model_setup import encoder_inputs, model_config, tokenizer


def load_split(config, split: str) -> tuple[dict[str, Any], str]:
    """The "train" or "eval" split as the official JSON, and where it came from.

    From data.data_dir/data.<split>_file when data.data_dir is set, else from
    TFDS `squad/v<version>` split data.<split>_split.
    """
    d = config.data
    if d.data_dir:
        path = f"{d.data_dir}/{d[split + '_file']}"
        return squad.load_json(path), path
    tfds_split = d[split + "_split"]
    source = f"TFDS squad/v{config.version} split {tfds_split!r}"
    return squad.load_tfds(config.version, tfds_split), source


class SquadTask(Task):
    labels = None

    def __init__(self, config):
        self.config = config
        self.seq_len = config.max_seq_length
        self._tok = tokenizer(config)
        bad_input.check(config.data.on_bad_input, "data.on_bad_input")
        self.version_2 = config.version == "2.0"

    def tokenizer(self):
        return self._tok

    def _features(self, examples, is_training: bool):
        c = self.config
        return squad.make_features(
            examples,
            self._tok,
            max_seq_length=self.seq_len,
            doc_stride=c.doc_stride,
            max_query_length=c.max_query_length,
            is_training=is_training,
        )

    def model(self) -> BertForQuestionAnswering:
        return BertForQuestionAnswering(model_config(self.config))

    def dummy_batch(self):
        z = np.zeros((1, self.seq_len), np.int32)
        p = np.zeros((1,), np.int32)
        return {
            "input_ids": z,
            "token_type_ids": z,
            "attention_mask": z,
            "start_positions": p,
            "end_positions": p,
        }

    model_inputs = staticmethod(encoder_inputs)

    def train_source(self, process_index, process_count):
        """Feature windows of the training questions; an epoch is one pass over the
        windows (more than the questions: long contexts give several)."""
        d = self.config.data
        train_json, source = load_split(self.config, "train")
        train, _ = squad.parse_squad(train_json, source, on_bad_input=d.on_bad_input)
        examples = train[: d.max_train_examples or None]
        arrays = dict(self._features(examples, True).arrays)
        return sources.train_source(self.config, arrays, process_index, process_count)

    def eval_sets(self, process_index, process_count) -> list[EvalSet]:
        d = self.config.data
        eval_json, source = load_split(self.config, "eval")
        # Gold answers of dev questions are only scored, never trained on: a bad
        # answer_start is skipped whatever data.on_bad_input says.
        examples, _ = squad.parse_squad(eval_json, source, on_bad_input="skip")
        examples = examples[: d.max_eval_examples or None]
        features = self._features(examples, False)
        # The official evaluation walks the dataset: keep only the questions asked.
        asked = {e.qas_id for e in examples}
        dataset = {**eval_json, "data": _restrict(eval_json["data"], asked)}
        src = sources.eval_source(
            self.config, dict(features.arrays), process_index, process_count, per_token_stats=True
        )
        return [EvalSet(src, context=_EvalContext(examples, features, dataset))]

    def loss(self, outputs, batch):
        start = optax.softmax_cross_entropy_with_integer_labels(
            outputs["start_logits"], batch["start_positions"]
        )
        end = optax.softmax_cross_entropy_with_integer_labels(
            outputs["end_logits"], batch["end_positions"]
        )
        return jnp.mean((start + end) / 2), {}

    @staticmethod
    def eval_stats(outputs, batch):
        return {
            "start_logits": outputs["start_logits"],
            "end_logits": outputs["end_logits"],
            "valid": batch["valid"],
        }

    def finalize(self, eval_set: EvalSet, stats) -> EvalResult:
        """Metrics, and predictions.json (v2.0: null_odds.json and
        predictions_tuned.json, the predictions at the tuned threshold)."""
        ctx: _EvalContext = eval_set.context
        keep = stats["valid"] > 0
        c = self.config
        # v2.0: every question's best non-null answer; thresholds are applied below.
        answers, null_odds, _ = squad.postprocess(
            ctx.examples,
            ctx.features,
            np.asarray(stats["start_logits"][keep]),
            np.asarray(stats["end_logits"][keep]),
            n_best_size=c.n_best_size,
            max_answer_length=c.max_answer_length,
            version_2=self.version_2,
            null_score_diff_threshold=math.inf,
        )
        if not self.version_2:
            metrics = _metrics(squad_eval.evaluate(ctx.dataset, answers))
            return EvalResult(metrics, {"predictions.json": _json(answers)})
        predictions = squad.apply_null_threshold(answers, null_odds, c.null_score_diff_threshold)
        # na_prob_thresh=inf: the configured threshold is already applied, and
        # null odds are no probabilities (the official default 1.0 would blank
        # every answer with null odds above 1, whatever the threshold).
        out = _metrics(squad_eval.evaluate(ctx.dataset, predictions, null_odds, math.inf))
        tuned, _ = squad_eval.tune_null_threshold(ctx.dataset, answers, null_odds)
        tuned_predictions = squad.apply_null_threshold(answers, null_odds, tuned)
        scores = squad_eval.evaluate(ctx.dataset, tuned_predictions)
        out["null_score_diff_threshold"] = tuned
        out["tuned_exact_match"], out["tuned_f1"] = scores["exact"], scores["f1"]
        files = {
            "predictions.json": _json(predictions),
            "null_odds.json": _json(null_odds),
            "predictions_tuned.json": _json(tuned_predictions),
        }
        return EvalResult(out, files)

    def predict(
        self, forward: Forward, inputs: Sequence[str], run_metrics: Mapping[str, float]
    ) -> list[dict]:
        """Per input, JSON {"question", "context"}: {"answer", "probability",
        "start", "end"} (character offsets into the context). v2.0 may answer ""
        (start = end = -1) and adds "null_odds"; the answer is "" where they
        exceed the threshold tuned on dev (eval/null_score_diff_threshold of
        the run), or without it the config's."""
        items = []
        for i, text in enumerate(inputs):
            try:
                item = json.loads(text)
                items.append(squad.Example(str(i), item["question"], item["context"], [], False))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(
                    f"input {i}: expected JSON with 'question' and 'context' ({e})"
                ) from e
        c = self.config
        feats = self._features(items, False)
        out = forward(encoder_inputs(feats.arrays))
        threshold = run_metrics.get("eval/null_score_diff_threshold", c.null_score_diff_threshold)
        answers, null_odds, nbest = squad.postprocess(
            items,
            feats,
            np.asarray(out["start_logits"]),
            np.asarray(out["end_logits"]),
            n_best_size=c.n_best_size,
            max_answer_length=c.max_answer_length,
            version_2=self.version_2,
            null_score_diff_threshold=float(threshold) if self.version_2 else 0.0,
        )
        results = []
        for ex in items:
            # The n-best entry of the answer ("" is the null answer's entry).
            best = next(b for b in nbest[ex.qas_id] if b["text"] == answers[ex.qas_id])
            row = {
                "question": ex.question,
                "answer": best["text"],
                "probability": float(best["probability"]),
                "start": best["start"],
                "end": best["end"],
            }
            if self.version_2:
                row["null_odds"] = null_odds[ex.qas_id]
            results.append(row)
        return results


@dataclasses.dataclass(frozen=True)
class _EvalContext:
    """What post-processing a dev pass needs: the questions, their feature
    windows, and the official dataset restricted to those questions."""

    examples: list
    features: squad.SquadFeatures
    dataset: dict[str, Any]


def _json(obj) -> str:
    return json.dumps(obj, indent=1)


def _metrics(result: dict[str, Any]) -> dict[str, float]:
    """The official keys as eval metrics; v2.0's "exact" is named as v1.1's "exact_match"."""
    rename = {"exact": "exact_match"}
    return {rename.get(k, k): float(v) for k, v in result.items()}


def _restrict(data: list, qas_ids: set) -> list:
    """The dataset with only the questions that were evaluated (for subsets)."""
    out = []
    for article in data:
        paragraphs = []
        for p in article["paragraphs"]:
            qas = [q for q in p["qas"] if q["id"] in qas_ids]
            if qas:
                paragraphs.append({**p, "qas": qas})
        if paragraphs:
            out.append({**article, "paragraphs": paragraphs})
    return out
