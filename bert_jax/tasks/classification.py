"""Sentence and sentence-pair classification and regression: GLUE and any labelled text.

Model: the pooled [CLS] output -> dropout -> dense (BERT paper, section 4.1).
Loss: softmax cross-entropy, or mean squared error for regression (STS-B),
averaged over the batch's examples. With `data.pack_examples` the batches
are packed (`bert_jax.data.pack_examples`): logits and labels are then
(rows, K), and `valid` marks the slots that hold an example.
Metrics: the official GLUE ones (`bert_jax.metrics.glue`) for GLUE tasks;
accuracy (and F1 of the second label when there are two) for other data.
Prediction: one text, or a pair as "text_a<TAB>text_b", per input.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax.data import bad_input, glue, text_classification
from bert_jax.metrics import glue as glue_metrics
from bert_jax.models.heads import BertForSequenceClassification
from bert_jax.tasks import sources
from bert_jax.tasks.base import EvalResult, EvalSet, Forward, Task
from bert_jax.tasks.model_setup import classifier_setup, encoder_inputs, model_config, tokenizer


class ClassificationTask(Task):
    """`config.task` "glue" (`glue_task` names it) or "classify" (files or TFDS)."""

    def __init__(self, config):
        self.config = config
        self.seq_len = config.max_seq_length
        self._tok = tokenizer(config)
        bad_input.check(config.data.on_bad_input, "data.on_bad_input")
        self.glue = glue.get_task(config.glue_task) if config.task == "glue" else None

    @functools.cached_property
    def labels(self) -> tuple[str, ...] | None:
        """GLUE's label set; data.labels; else the TFDS label names or the
        sorted labels of the training file (read once). None: regression."""
        if self.glue is not None:
            return self.glue.labels
        d = self.config.data
        if d.labels:
            return tuple(d.labels)
        return self._classify_split("train")[1]

    def tokenizer(self):
        return self._tok

    # --- data ----------------------------------------------------------------
    def _glue_split(self, split: str):
        return glue.load_split(
            self.glue.name,
            split,
            self.config.data.data_dir or None,
            on_bad_input=self.config.data.on_bad_input,
        )

    @functools.cache  # noqa: B019 (one task per run; the file is read once)
    def _classify_split(self, which: str):
        """("train" | "eval") -> (examples, labels) of the classify data."""
        d = self.config.data
        configured = tuple(d.labels) or None
        if d.tfds_name:
            split = d.train_split if which == "train" else d.eval_split
            examples, names = text_classification.load_tfds(
                d.tfds_name, split, d.text_column, d.label_column, d.data_dir or None
            )
            return examples, configured or names
        path = d.train_file if which == "train" else d.eval_file
        if which == "train" and not path:
            raise ValueError("set data.train_file (a .tsv/.csv/.jsonl) or data.tfds_name")
        if not path:
            return [], configured
        labels = configured if which == "train" else self.labels
        examples = text_classification.read_table(
            path,
            text_column=d.text_column,
            label_column=d.label_column,
            text_b_column=d.text_b_column,
            labels=labels,
            on_bad_input=d.on_bad_input,
        )
        return examples, labels or tuple(sorted({e.label for e in examples}))

    @property
    def regression(self) -> bool:
        return self.labels is None

    def model(self) -> BertForSequenceClassification:
        n = 1 if self.regression else len(self.labels)
        encoder, hidden_act = classifier_setup(model_config(self.config))
        return BertForSequenceClassification(encoder, num_labels=n, hidden_act=hidden_act)

    def encode(self, examples) -> dict[str, np.ndarray]:
        texts_b = [e.text_b for e in examples] if examples and examples[0].text_b else None
        enc = self._tok.encode_batch([e.text_a for e in examples], texts_b, max_length=self.seq_len)
        out = {k: np.asarray(v, np.int32) for k, v in enc.items()}
        if examples and examples[0].label is not None:
            if self.regression:
                out["label"] = np.asarray([float(e.label) for e in examples], np.float32)
            else:
                ids = {label: i for i, label in enumerate(self.labels)}
                out["label"] = np.asarray([ids[e.label] for e in examples], np.int32)
        return out

    def dummy_batch(self) -> dict[str, np.ndarray]:
        z = np.zeros((1, self.seq_len), np.int32)
        label = np.zeros((1,), np.float32 if self.regression else np.int32)
        return {"input_ids": z, "token_type_ids": z, "attention_mask": z, "label": label}

    model_inputs = staticmethod(encoder_inputs)

    def train_source(self, process_index: int, process_count: int):
        if self.glue is not None:
            examples = self._glue_split("train")
        else:
            examples = self._classify_split("train")[0]
        examples = examples[: self.config.data.max_train_examples or None]
        arrays = self.encode(examples)
        return sources.train_source(
            self.config, arrays, process_index, process_count, packable=True
        )

    def eval_sets(self, process_index: int, process_count: int) -> list[EvalSet]:
        if self.glue is not None:
            dev = [s for s in self.glue.splits if s.startswith("dev")]
            # MNLI has two dev sets: metrics of the mismatched one get "_mm".
            named = {("" if i == 0 else "_mm"): self._glue_split(s) for i, s in enumerate(dev)}
        else:
            named = {"": self._classify_split("eval")[0]}
        return [
            EvalSet(
                sources.eval_source(
                    self.config, self.encode(ex), process_index, process_count, packable=True
                ),
                suffix,
            )
            for suffix, ex in named.items()
            if ex
        ]

    # --- loss and metrics ---------------------------------------------------
    def loss(self, outputs, batch):
        logits = outputs["logits"]
        if self.regression:
            per_example = (logits[..., 0] - batch["label"]) ** 2
        else:
            per_example = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        if "valid" not in batch:
            return jnp.mean(per_example), {}
        weight = batch["valid"].astype(per_example.dtype)  # packed: empty slots are 0
        return jnp.sum(per_example * weight) / jnp.maximum(jnp.sum(weight), 1.0), {}

    def eval_stats(self, outputs, batch):
        logits = outputs["logits"]
        prediction = logits[..., 0] if self.regression else jnp.argmax(logits, -1)
        return {"prediction": prediction, "label": batch["label"], "valid": batch["valid"]}

    def finalize(self, eval_set: EvalSet, stats) -> EvalResult:
        keep = stats["valid"] > 0
        pred, label = stats["prediction"][keep], stats["label"][keep]
        if self.glue is not None:
            return EvalResult(glue_metrics.glue_metrics(self.glue.name, pred, label))
        out = {"accuracy": glue_metrics.accuracy(pred, label)}
        if len(self.labels) == 2:
            out["f1"] = glue_metrics.f1(pred, label, positive=1)
        return EvalResult(out)

    # --- prediction -----------------------------------------------------------
    def predict(
        self, forward: Forward, inputs: Sequence[str], run_metrics: Mapping[str, float]
    ) -> list[dict]:
        """Per input "text" or "text_a<TAB>text_b": {"label", "probabilities"}, or
        {"score"} for regression."""
        del run_metrics
        pairs = [t.split("\t", 1) for t in inputs]
        texts_b = [p[1] for p in pairs] if all(len(p) == 2 for p in pairs) else None
        enc = self._tok.encode_batch([p[0] for p in pairs], texts_b, max_length=self.seq_len)
        logits = np.asarray(forward(encoder_inputs(enc))["logits"])
        if self.regression:
            return [{"text": t, "score": float(v[0])} for t, v in zip(inputs, logits, strict=True)]
        probs = np.asarray(jax.nn.softmax(logits, axis=-1))
        return [
            {
                "text": t,
                "label": self.labels[int(np.argmax(p))],
                "probabilities": {lab: float(x) for lab, x in zip(self.labels, p, strict=True)},
            }
            for t, p in zip(inputs, probs, strict=True)
        ]
