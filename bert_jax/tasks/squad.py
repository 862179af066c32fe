"""SQuAD v1.1 / v2.0 span extraction (BERT paper section 4.2-4.3, run_squad.py).

Features are sliding windows over the context (doc stride); the loss is the
mean of the start and end cross-entropies over each window's positions
(a window without the answer, and an impossible v2.0 question, targets
[CLS]). Evaluation post-processes every window's logits into one answer per
question (n-best 20, max answer length 30, v2.0 null answers) and scores it
with the official evaluation semantics (`bert_jax.tasks.squad_eval`);
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
(`squad_eval.tune_null_threshold`) as null_score_diff_threshold, and the
scores of the predictions at it as tuned_exact_match and tuned_f1
(`predictions_tuned.json`). `bert_jax.predict` applies the tuned threshold.
"""

from __future__ import annotations

import json
import math
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

from bert_jax.data import squad
from bert_jax.models.heads import BertForQuestionAnswering
from bert_jax.tasks import sources, squad_eval
from bert_jax.tasks.model_setup import EncoderCost, encoder_inputs, model_config, tokenizer


def load_split(config, split: str) -> tuple[dict[str, Any], str]:
    """The "train" or "eval" split as the official JSON, and where it came from.

    From data.data_dir/data.<split>_file when data.data_dir is set, else from
    TFDS `squad/v<version>` split data.<split>_split.
    """
    d = config.data
    if d.data_dir:
        path = f"{d.data_dir}/{d[split + '_file']}"
        with open(path, encoding="utf-8") as f:
            return json.load(f), path
    tfds_split = d[split + "_split"]
    source = f"TFDS squad/v{config.version} split {tfds_split!r}"
    return squad.load_tfds(config.version, tfds_split), source


class SquadTask(EncoderCost):
    def __init__(self, config):
        self.config = config
        d = config.data
        self.seq_len = config.max_seq_length
        self.tok = tokenizer(config)
        self.version_2 = config.version == "2.0"
        train_json, source = load_split(config, "train")
        train, _ = squad.parse_squad(train_json, source, on_error=d.on_error)
        self.train_examples = train[: d.max_train_examples or None]
        eval_json, source = load_split(config, "eval")
        evals, _ = squad.parse_squad(eval_json, source, on_error="skip")
        self.eval_examples = evals[: d.max_eval_examples or None]
        # The official evaluation walks the dataset: keep only the questions asked.
        asked = {e.qas_id for e in self.eval_examples}
        self.eval_dataset = {**eval_json, "data": _restrict(eval_json["data"], asked)}
        self.predictions: dict | None = None

    def _features(self, examples, is_training: bool):
        c = self.config
        return squad.make_features(
            examples,
            self.tok,
            max_seq_length=self.seq_len,
            doc_stride=c.doc_stride,
            max_query_length=c.max_query_length,
            is_training=is_training,
        )

    def model(self) -> BertForQuestionAnswering:
        return BertForQuestionAnswering(model_config(self.config))

    def dummy_batch(self, batch_size: int = 1):
        z = np.zeros((batch_size, self.seq_len), np.int32)
        p = np.zeros((batch_size,), np.int32)
        return {
            "input_ids": z,
            "token_type_ids": z,
            "attention_mask": z,
            "start_positions": p,
            "end_positions": p,
        }

    model_inputs = staticmethod(encoder_inputs)

    def train_source(self, process_index, process_count):
        arrays = self._features(self.train_examples, True).arrays
        self._num_train = len(arrays["input_ids"])
        return sources.train_source(self.config, dict(arrays), process_index, process_count)

    def eval_source(self, process_index, process_count):
        self.eval_features = self._features(self.eval_examples, False)
        arrays = {k: v for k, v in self.eval_features.arrays.items()}
        return sources.eval_source(
            self.config, arrays, process_index, process_count, per_token_stats=True
        )

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

    def finalize(self, stats) -> dict[str, float]:
        keep = stats["valid"] > 0
        c = self.config
        # v2.0: every question's best non-null answer; thresholds are applied below.
        answers, null_odds, _ = squad.postprocess(
            self.eval_examples,
            self.eval_features,
            np.asarray(stats["start_logits"][keep]),
            np.asarray(stats["end_logits"][keep]),
            n_best_size=c.n_best_size,
            max_answer_length=c.max_answer_length,
            version_2=self.version_2,
            null_score_diff_threshold=math.inf,
        )
        self.null_odds, self.tuned_predictions = null_odds, None
        if not self.version_2:
            self.predictions = answers
            return _metrics(squad_eval.evaluate(self.eval_dataset, answers))
        self.predictions = squad.apply_null_threshold(
            answers, null_odds, c.null_score_diff_threshold
        )
        # na_prob_thresh=inf: the configured threshold is already applied, and
        # null odds are no probabilities (the official default 1.0 would blank
        # every answer with null odds above 1, whatever the threshold).
        out = _metrics(
            squad_eval.evaluate(self.eval_dataset, self.predictions, null_odds, math.inf)
        )
        tuned, _ = squad_eval.tune_null_threshold(self.eval_dataset, answers, null_odds)
        self.tuned_predictions = squad.apply_null_threshold(answers, null_odds, tuned)
        scores = squad_eval.evaluate(self.eval_dataset, self.tuned_predictions)
        out["null_score_diff_threshold"] = tuned
        out["tuned_exact_match"], out["tuned_f1"] = scores["exact"], scores["f1"]
        return out

    def write_predictions(self, workdir) -> None:
        """predictions.json (and null_odds.json) in the official formats.

        v2.0 also writes predictions_tuned.json, the predictions at the tuned
        threshold (eval/null_score_diff_threshold).
        """
        if self.predictions is None:
            return
        (workdir / "predictions.json").write_text(json.dumps(self.predictions, indent=1))
        if self.version_2:
            (workdir / "null_odds.json").write_text(json.dumps(self.null_odds, indent=1))
            tuned = json.dumps(self.tuned_predictions, indent=1)
            (workdir / "predictions_tuned.json").write_text(tuned)

    def num_train_examples(self) -> int:
        return getattr(self, "_num_train", len(self.train_examples))


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
