"""SQuAD v1.1 / v2.0 span extraction (BERT paper section 4.2-4.3, run_squad.py).

Features are sliding windows over the context (doc stride); the loss is the
mean of the start and end cross-entropies over each window's positions
(a window without the answer, and an impossible v2.0 question, targets
[CLS]). Evaluation post-processes every window's logits into one answer per
question (n-best 20, max answer length 30, v2.0 null answers) and scores it
with the official evaluation semantics (`bert_jax.tasks.squad_eval`);
`predictions.json` (and `null_odds.json` for v2.0) are written to the workdir.
"""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import optax

from bert_jax.data import squad
from bert_jax.data.array_source import ArraySource
from bert_jax.metrics_writer import encoder_train_flops
from bert_jax.models.heads import BertForQuestionAnswering
from bert_jax.tasks import squad_eval
from bert_jax.tasks.model_setup import encoder_inputs, model_config, tokenizer


class SquadTask:
    def __init__(self, config):
        self.config = config
        d = config.data
        if not d.data_dir:
            raise ValueError(
                "set data.data_dir to the folder with the SQuAD JSON files "
                "(train-v1.1.json, dev-v1.1.json, ...)"
            )
        self.seq_len = config.max_seq_length
        self.tok = tokenizer(config)
        self.version_2 = config.version == "2.0"
        train, _ = squad.read_squad(f"{d.data_dir}/{d.train_file}", on_error=d.on_error)
        self.train_examples = train[: d.max_train_examples or None]
        self.eval_path = f"{d.data_dir}/{d.eval_file}"
        evals, _ = squad.read_squad(self.eval_path, on_error="skip")
        self.eval_examples = evals[: d.max_eval_examples or None]
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
        return ArraySource(
            dict(arrays),
            self.config.train_batch_size,
            seed=self.config.seed,
            process_index=process_index,
            process_count=process_count,
        )

    def eval_source(self, process_index, process_count):
        self.eval_features = self._features(self.eval_examples, False)
        arrays = {k: v for k, v in self.eval_features.arrays.items()}
        return ArraySource.for_eval(
            arrays, self.config.eval_batch_size, process_index, process_count
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
        preds, null_odds, _ = squad.postprocess(
            self.eval_examples,
            self.eval_features,
            np.asarray(stats["start_logits"][keep]),
            np.asarray(stats["end_logits"][keep]),
            n_best_size=c.n_best_size,
            max_answer_length=c.max_answer_length,
            version_2=self.version_2,
            null_score_diff_threshold=c.null_score_diff_threshold,
        )
        self.predictions, self.null_odds = preds, null_odds
        with open(self.eval_path, encoding="utf-8") as f:
            data = json.load(f)["data"]
        asked = {e.qas_id for e in self.eval_examples}
        data = _restrict(data, asked)
        result = squad_eval.evaluate(data, preds, null_odds if self.version_2 else None)
        rename = {"exact": "exact_match"}
        return {rename.get(k, k): float(v) for k, v in result.items()}

    def write_predictions(self, workdir) -> None:
        """predictions.json (and null_odds.json) in the official formats."""
        if self.predictions is None:
            return
        (workdir / "predictions.json").write_text(json.dumps(self.predictions, indent=1))
        if self.version_2:
            (workdir / "null_odds.json").write_text(json.dumps(self.null_odds, indent=1))

    def flops_per_example(self) -> float:
        return encoder_train_flops(model_config(self.config), self.seq_len)

    def tokens_per_example(self) -> int:
        return self.seq_len

    def num_train_examples(self) -> int:
        return getattr(self, "_num_train", len(self.train_examples))


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
