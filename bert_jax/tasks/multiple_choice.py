"""Multiple choice (SWAG; Zellers et al. 2018): pick the ending that follows a context.

BERT paper section 4.4: each (context, ending) pair is encoded as
[CLS] context [SEP] ending [SEP]; the pooled output is scored by one dense
unit and the scores of the choices go through a softmax. Data
(`bert_jax.data.swag`): CSV files in the SWAG layout in data.data_dir, or
without it a TFDS dataset with `context`, `endings` and `label` features
(data.tfds_name; TFDS has no SWAG, the default is its successor HellaSwag).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax.checkpoints import names as names
from bert_jax.data import bad_input, swag
from bert_jax.models.heads import BertForMultipleChoice
from bert_jax.tasks import sources
from bert_jax.tasks.base import EvalResult, EvalSet, Forward, Task
from bert_jax.tasks.model_setup import encoder_inputs, model_config, tokenizer


def _load(config, split: str) -> list[dict]:
    """The "train" or "eval" rows: data.data_dir/data.<split>_file, or TFDS without data_dir."""
    d = config.data
    policy = d.on_bad_input
    if d.data_dir:
        path = f"{d.data_dir}/{d[split + '_file']}"
        return swag.read_swag_csv(path, config.num_choices, on_bad_input=policy)
    return swag.read_tfds(d.tfds_name, d[split + "_split"], config.num_choices, on_bad_input=policy)


class MultipleChoiceTask(Task):
    labels = None

    def __init__(self, config):
        self.config = config
        self.seq_len = config.max_seq_length
        self.num_choices = config.num_choices
        self._tok = tokenizer(config)
        bad_input.check(config.data.on_bad_input, "data.on_bad_input")

    def tokenizer(self):
        return self._tok

    def model(self) -> BertForMultipleChoice:
        encoder = model_config(self.config)
        # HF's multiple-choice models score the pooled output (a fresh pooler
        # after a masked-LM checkpoint), RoBERTa's too; DistilBERT has no
        # pooler and scores the first token through a ReLU hidden layer.
        act = "relu" if names.family_of(encoder) == "distilbert" else ""
        encoder = dataclasses.replace(encoder, use_pooler=not act)
        return BertForMultipleChoice(encoder, hidden_act=act)

    def encode(self, rows) -> dict[str, np.ndarray]:
        contexts = [r["context"] for r in rows for _ in range(self.num_choices)]
        endings = [e for r in rows for e in r["endings"]]
        enc = self._tok.encode_batch(contexts, endings, max_length=self.seq_len)
        shape = (len(rows), self.num_choices, self.seq_len)
        out = {k: np.asarray(v, np.int32).reshape(shape) for k, v in enc.items()}
        out["label"] = np.asarray([r["label"] or 0 for r in rows], np.int32)
        return out

    def dummy_batch(self):
        z = np.zeros((1, self.num_choices, self.seq_len), np.int32)
        return {
            "input_ids": z,
            "token_type_ids": z,
            "attention_mask": z,
            "label": np.zeros((1,), np.int32),
        }

    model_inputs = staticmethod(encoder_inputs)

    def train_source(self, process_index, process_count):
        rows = _load(self.config, "train")[: self.config.data.max_train_examples or None]
        return sources.train_source(self.config, self.encode(rows), process_index, process_count)

    def eval_sets(self, process_index, process_count) -> list[EvalSet]:
        arrays = self.encode(_load(self.config, "eval"))
        return [EvalSet(sources.eval_source(self.config, arrays, process_index, process_count))]

    def loss(self, outputs, batch):
        xent = optax.softmax_cross_entropy_with_integer_labels(outputs["logits"], batch["label"])
        return jnp.mean(xent), {}

    @staticmethod
    def eval_stats(outputs, batch):
        return {
            "prediction": jnp.argmax(outputs["logits"], -1),
            "label": batch["label"],
            "valid": batch["valid"],
        }

    @staticmethod
    def finalize(eval_set: EvalSet, stats) -> EvalResult:
        keep = stats["valid"] > 0
        return EvalResult(
            {"accuracy": float(np.mean(stats["prediction"][keep] == stats["label"][keep]))}
        )

    def predict(
        self, forward: Forward, inputs: Sequence[str], run_metrics: Mapping[str, float]
    ) -> list[dict]:
        """Per input, JSON {"context", "endings": [...]} with `num_choices` endings:
        {"choice": index of the most likely ending, "probabilities"}."""
        del run_metrics
        rows = []
        for i, text in enumerate(inputs):
            try:
                item = json.loads(text)
                context, endings = str(item["context"]), [str(e) for e in item["endings"]]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(
                    f"input {i}: expected JSON with 'context' and 'endings' ({e})"
                ) from e
            if len(endings) != self.num_choices:
                raise ValueError(
                    f"input {i}: {len(endings)} endings, config num_choices={self.num_choices}"
                )
            rows.append({"context": context, "endings": endings, "label": None})
        logits = forward(encoder_inputs(self.encode(rows)))["logits"]
        probs = np.asarray(jax.nn.softmax(logits, axis=-1))
        return [
            {"context": r["context"], "choice": int(np.argmax(p)), "probabilities": p.tolist()}
            for r, p in zip(rows, probs, strict=True)
        ]
