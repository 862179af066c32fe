"""Named-entity recognition (CoNLL-2003): per-token classification, first-subword labels.

BERT paper section 5.3: the first sub-token of each word carries the word's
tag; other pieces are ignored in the loss and the metrics. Metrics: entity-
level micro precision/recall/F1 as conlleval/seqeval compute them, per type.
The final evaluation's predictions are written to the workdir as
`predictions.txt`, in the CoNLL layout conlleval reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax.numpy as jnp
import numpy as np
import optax

from bert_jax.data import bad_input, conll
from bert_jax.metrics import ner as ner_metrics
from bert_jax.models.heads import BertForTokenClassification
from bert_jax.tasks import sources
from bert_jax.tasks.base import EvalResult, EvalSet, Forward, Task
from bert_jax.tasks.model_setup import encoder_inputs, model_config, tokenizer


def _load(config, split: str) -> list[conll.Sentence]:
    d = config.data
    if d.data_dir:
        path = f"{d.data_dir}/{d[split + '_file']}"
        sentences, _ = conll.read_conll(path, on_bad_input=d.on_bad_input)
        return sentences
    return _load_tfds(split, d)


def _load_tfds(split: str, d) -> list[conll.Sentence]:
    """TFDS `conll2003` (tokens + ner tags, IOB2), downloaded and prepared on first use.

    Its splits are train, dev and test (tensorflow_datasets
    `text/conll2003/conll2003.py`).

    Raises:
      ValueError: naming the split and record, for a record whose tokens and
        tags differ in number.
    """
    import tensorflow_datasets as tfds  # Imports TF: only when TFDS is asked for.

    name = {"train": "train", "eval": "dev", "test": "test"}[split]
    ds, info = tfds.load("conll2003", split=name, with_info=True)
    tag_names = info.features["ner"].feature.names
    out = []
    for i, ex in enumerate(tfds.as_numpy(ds)):
        tokens = tuple(t.decode("utf-8") for t in ex["tokens"])
        tags = tuple(tag_names[int(t)] for t in ex["ner"])
        if len(tokens) != len(tags):
            raise ValueError(
                f"TFDS conll2003 split {name!r} record {i}: "
                f"{len(tokens)} tokens but {len(tags)} ner tags"
            )
        out.append(conll.Sentence(tokens, tags))
    return out


class NerTask(Task):
    def __init__(self, config):
        self.config = config
        self.seq_len = config.max_seq_length
        self._tok = tokenizer(config)
        bad_input.check(config.data.on_bad_input, "data.on_bad_input")
        self.labels = conll.NER_LABELS

    def tokenizer(self):
        return self._tok

    def model(self) -> BertForTokenClassification:
        return BertForTokenClassification(model_config(self.config), num_labels=len(self.labels))

    def encode(self, sentences):
        arrays, meta = conll.make_features(sentences, self._tok, self.labels, self.seq_len)
        return {k: np.asarray(v, np.int32) for k, v in arrays.items()}, meta

    def dummy_batch(self):
        z = np.zeros((1, self.seq_len), np.int32)
        return {"input_ids": z, "token_type_ids": z, "attention_mask": z, "labels": z}

    model_inputs = staticmethod(encoder_inputs)

    def train_source(self, process_index, process_count):
        sentences = _load(self.config, "train")[: self.config.data.max_train_examples or None]
        arrays, _ = self.encode(sentences)
        return sources.train_source(self.config, arrays, process_index, process_count)

    def eval_sets(self, process_index, process_count) -> list[EvalSet]:
        sentences = _load(self.config, "eval")
        arrays, meta = self.encode(sentences)
        source = sources.eval_source(
            self.config, arrays, process_index, process_count, per_token_stats=True
        )
        return [EvalSet(source, context=(sentences, meta))]

    def loss(self, outputs, batch):
        labels = batch["labels"]
        mask = labels >= 0
        xent = optax.softmax_cross_entropy_with_integer_labels(
            outputs["logits"], jnp.maximum(labels, 0)
        )
        return jnp.sum(xent * mask) / jnp.maximum(jnp.sum(mask), 1), {}

    @staticmethod
    def eval_stats(outputs, batch):
        return {"prediction": jnp.argmax(outputs["logits"], -1), "valid": batch["valid"]}

    def finalize(self, eval_set: EvalSet, stats) -> EvalResult:
        sentences, meta = eval_set.context
        pred = stats["prediction"][stats["valid"] > 0]
        tags = conll.predictions_to_tags(pred, meta)
        m = ner_metrics.ner_metrics([s.tags for s in sentences], tags)
        out = {k: m[k] for k in ("precision", "recall", "f1", "accuracy")}
        for kind, scores in m["per_type"].items():
            out[f"f1_{kind}"] = scores["f1"]
        return EvalResult(out, {"predictions.txt": conll.format_predictions(sentences, tags)})

    def predict(
        self, forward: Forward, inputs: Sequence[str], run_metrics: Mapping[str, float]
    ) -> list[dict]:
        """Per input text: {"entities": [{"type", "text", "start", "end"}]}, character
        offsets into the text."""
        del run_metrics
        split = [conll.split_words(text) for text in inputs]
        arrays, meta = conll.make_features(
            [w for w, _ in split], self._tok, self.labels, self.seq_len
        )
        logits = forward(encoder_inputs(arrays))["logits"]
        tags = conll.predictions_to_tags(np.asarray(np.argmax(logits, -1)), meta)
        return [
            {"text": text, "entities": conll.entities_with_offsets(text, spans, t)}
            for text, (_, spans), t in zip(inputs, split, tags, strict=True)
        ]
