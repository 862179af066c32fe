"""Sentence and sentence-pair classification and regression: GLUE and any labelled text.

Model: the pooled [CLS] output -> dropout -> dense (BERT paper, section 4.1).
Loss: softmax cross-entropy, or mean squared error for regression (STS-B).
Metrics: the official GLUE ones (`bert_jax.metrics.glue`) for GLUE tasks;
accuracy (and F1 of the second label when there are two) for other data.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from bert_jax.data import glue, text_classification
from bert_jax.metrics import glue as glue_metrics
from bert_jax.models.heads import BertForSequenceClassification
from bert_jax.tasks import sources
from bert_jax.tasks.model_setup import EncoderCost, encoder_inputs, model_config, tokenizer


class ClassificationTask(EncoderCost):
    def __init__(self, config):
        self.config = config
        self.seq_len = config.max_seq_length
        self.tok = tokenizer(config)
        d = config.data
        if config.task == "glue":
            self.glue = glue.get_task(config.glue_task)
            self.labels = self.glue.labels
            data_dir = d.data_dir or None
            train = glue.load_split(self.glue.name, "train", data_dir)
            dev = [s for s in self.glue.splits if s.startswith("dev")]
            # MNLI has two dev sets: metrics of the mismatched one get "_mm".
            self.eval_examples = {
                ("" if i == 0 else "_mm"): glue.load_split(self.glue.name, s, data_dir)
                for i, s in enumerate(dev)
            }
        else:
            self.glue = None
            train, evals, self.labels = self._load_classify(d)
            self.eval_examples = {"": evals}
        if d.max_train_examples:
            train = train[: d.max_train_examples]
        self.train_examples = train

    @staticmethod
    def _load_classify(d):
        labels = tuple(d.labels) if d.labels else None
        if d.tfds_name:
            train, names = text_classification.load_tfds(
                d.tfds_name, d.train_split, d.text_column, d.label_column, d.data_dir or None
            )
            evals, _ = text_classification.load_tfds(
                d.tfds_name, d.eval_split, d.text_column, d.label_column, d.data_dir or None
            )
            return train, evals, labels or names
        if not d.train_file:
            raise ValueError("set data.train_file (a .tsv/.csv/.jsonl) or data.tfds_name")
        kw = dict(
            text_column=d.text_column,
            label_column=d.label_column,
            text_b_column=d.text_b_column,
            labels=labels,
        )
        train = text_classification.read_table(d.train_file, **kw)
        labels = labels or tuple(sorted({e.label for e in train}))
        kw["labels"] = labels
        evals = text_classification.read_table(d.eval_file, **kw) if d.eval_file else []
        return train, evals, labels

    @property
    def regression(self) -> bool:
        return self.labels is None

    # --- model and data ----------------------------------------------------
    def model(self) -> BertForSequenceClassification:
        n = 1 if self.regression else len(self.labels)
        return BertForSequenceClassification(model_config(self.config), num_labels=n)

    def encode(self, examples) -> dict[str, np.ndarray]:
        texts_b = [e.text_b for e in examples] if examples and examples[0].text_b else None
        enc = self.tok.encode_batch([e.text_a for e in examples], texts_b, max_length=self.seq_len)
        out = {k: np.asarray(v, np.int32) for k, v in enc.items()}
        if examples and examples[0].label is not None:
            if self.regression:
                out["label"] = np.asarray([float(e.label) for e in examples], np.float32)
            else:
                ids = {label: i for i, label in enumerate(self.labels)}
                out["label"] = np.asarray([ids[e.label] for e in examples], np.int32)
        return out

    def dummy_batch(self, batch_size: int = 1) -> dict[str, np.ndarray]:
        z = np.zeros((batch_size, self.seq_len), np.int32)
        label = np.zeros((batch_size,), np.float32 if self.regression else np.int32)
        return {"input_ids": z, "token_type_ids": z, "attention_mask": z, "label": label}

    model_inputs = staticmethod(encoder_inputs)

    def train_source(self, process_index: int, process_count: int):
        arrays = self.encode(self.train_examples)
        return sources.train_source(self.config, arrays, process_index, process_count)

    def eval_source(self, process_index: int, process_count: int):
        return {
            suffix: sources.eval_source(self.config, self.encode(ex), process_index, process_count)
            for suffix, ex in self.eval_examples.items()
            if ex
        } or None

    # --- loss and metrics ---------------------------------------------------
    def _predict(self, outputs):
        logits = outputs["logits"]
        return logits[..., 0] if self.regression else jnp.argmax(logits, -1)

    def loss(self, outputs, batch):
        logits = outputs["logits"]
        if self.regression:
            per_example = (logits[..., 0] - batch["label"]) ** 2
        else:
            per_example = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        return jnp.mean(per_example), {}

    def eval_stats(self, outputs, batch):
        return {
            "prediction": self._predict(outputs),
            "label": batch["label"],
            "valid": batch["valid"],
        }

    def finalize(self, stats) -> dict[str, float]:
        keep = stats["valid"] > 0
        pred, label = stats["prediction"][keep], stats["label"][keep]
        if self.glue is not None:
            return glue_metrics.glue_metrics(self.glue.name, pred, label)
        out = {"accuracy": glue_metrics.accuracy(pred, label)}
        if len(self.labels) == 2:
            out["f1"] = glue_metrics.f1(pred, label, positive=1)
        return out

    def num_train_examples(self) -> int:
        return len(self.train_examples)
