"""Named-entity recognition (CoNLL-2003): per-token classification, first-subword labels.

BERT paper section 5.3: the first sub-token of each word carries the word's
tag; other pieces are ignored in the loss and the metrics. Metrics: entity-
level micro precision/recall/F1 as conlleval/seqeval compute them, per type.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from bert_jax.data import conll
from bert_jax.metrics import ner as ner_metrics
from bert_jax.models.heads import BertForTokenClassification
from bert_jax.tasks import sources
from bert_jax.tasks.model_setup import EncoderCost, encoder_inputs, model_config, tokenizer


def _load(config, split: str) -> list[conll.Sentence]:
    d = config.data
    if d.data_dir:
        path = f"{d.data_dir}/{d[split + '_file']}"
        sentences, stats = conll.read_conll(path, on_error=d.on_error)
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


class NerTask(EncoderCost):
    def __init__(self, config):
        self.config = config
        self.seq_len = config.max_seq_length
        self.tok = tokenizer(config)
        self.labels = conll.NER_LABELS
        self.train_sentences = _load(config, "train")
        if config.data.max_train_examples:
            self.train_sentences = self.train_sentences[: config.data.max_train_examples]
        self.eval_sentences = _load(config, "eval")

    def model(self) -> BertForTokenClassification:
        return BertForTokenClassification(model_config(self.config), num_labels=len(self.labels))

    def encode(self, sentences):
        arrays, meta = conll.make_features(sentences, self.tok, self.labels, self.seq_len)
        return {k: np.asarray(v, np.int32) for k, v in arrays.items()}, meta

    def dummy_batch(self, batch_size: int = 1):
        z = np.zeros((batch_size, self.seq_len), np.int32)
        return {"input_ids": z, "token_type_ids": z, "attention_mask": z, "labels": z}

    model_inputs = staticmethod(encoder_inputs)

    def train_source(self, process_index, process_count):
        arrays, _ = self.encode(self.train_sentences)
        return sources.train_source(self.config, arrays, process_index, process_count)

    def eval_source(self, process_index, process_count):
        arrays, self.eval_meta = self.encode(self.eval_sentences)
        return sources.eval_source(
            self.config, arrays, process_index, process_count, per_token_stats=True
        )

    def loss(self, outputs, batch):
        labels = batch["labels"]
        mask = labels >= 0
        xent = optax.softmax_cross_entropy_with_integer_labels(
            outputs["logits"], jnp.maximum(labels, 0)
        )
        return jnp.sum(xent * mask) / jnp.maximum(jnp.sum(mask), 1), {}

    def eval_stats(self, outputs, batch):
        return {"prediction": jnp.argmax(outputs["logits"], -1), "valid": batch["valid"]}

    def finalize(self, stats) -> dict[str, float]:
        pred = stats["prediction"][stats["valid"] > 0]
        tags = conll.predictions_to_tags(pred, self.eval_meta)
        m = ner_metrics.ner_metrics([s.tags for s in self.eval_sentences], tags)
        out = {k: m[k] for k in ("precision", "recall", "f1", "accuracy")}
        for kind, scores in m["per_type"].items():
            out[f"f1_{kind}"] = scores["f1"]
        return out

    def num_train_examples(self) -> int:
        return len(self.train_sentences)
