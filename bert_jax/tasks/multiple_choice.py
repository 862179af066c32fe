"""Multiple choice (SWAG; Zellers et al. 2018): pick the ending that follows a context.

BERT paper section 4.4: each (context, ending) pair is encoded as
[CLS] context [SEP] ending [SEP]; the pooled output is scored by one dense
unit and the scores of the choices go through a softmax. Data: the SWAG CSV
layout (`sent1`, `sent2`, `ending0`..`ending3`, `label`; the ending follows
`sent2`), locally or from TFDS.
"""

from __future__ import annotations

import csv
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import optax

from bert_jax.data.array_source import ArraySource
from bert_jax.metrics_writer import encoder_train_flops
from bert_jax.models.heads import BertForMultipleChoice
from bert_jax.tasks.model_setup import encoder_inputs, model_config, tokenizer


def read_swag_csv(path: str, num_choices: int = 4) -> list[dict]:
    """Rows of a SWAG-format CSV: context, endings, label (None when absent)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    out = []
    with open(p, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        need = ["sent1", "sent2"] + [f"ending{i}" for i in range(num_choices)]
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{p}: missing columns {missing} (has {reader.fieldnames})")
        for row in reader:
            where = f"{p}:{reader.line_num}"
            label = row.get("label", "")
            if label not in ("", None) and not (label.isdigit() and int(label) < num_choices):
                raise ValueError(f"{where}: label {label!r} is not in 0..{num_choices - 1}")
            if not row["sent1"].strip():
                raise ValueError(f"{where}: empty sent1")
            out.append(
                {
                    "context": row["sent1"].strip(),
                    "endings": [
                        f"{row['sent2'].strip()} {row[f'ending{i}'].strip()}".strip()
                        for i in range(num_choices)
                    ],
                    "label": int(label) if label not in ("", None) else None,
                }
            )
    return out


class MultipleChoiceTask:
    def __init__(self, config):
        self.config = config
        self.seq_len = config.max_seq_length
        self.num_choices = config.num_choices
        self.tok = tokenizer(config)
        d = config.data
        if not d.data_dir:
            raise ValueError("set data.data_dir to the folder with the SWAG CSV files")
        self.train_rows = read_swag_csv(f"{d.data_dir}/{d.train_file}", self.num_choices)
        self.train_rows = self.train_rows[: d.max_train_examples or None]
        self.eval_rows = read_swag_csv(f"{d.data_dir}/{d.eval_file}", self.num_choices)
        self.labels = None

    def model(self) -> BertForMultipleChoice:
        return BertForMultipleChoice(model_config(self.config))

    def encode(self, rows) -> dict[str, np.ndarray]:
        contexts = [r["context"] for r in rows for _ in range(self.num_choices)]
        endings = [e for r in rows for e in r["endings"]]
        enc = self.tok.encode_batch(contexts, endings, max_length=self.seq_len)
        shape = (len(rows), self.num_choices, self.seq_len)
        out = {k: np.asarray(v, np.int32).reshape(shape) for k, v in enc.items()}
        out["label"] = np.asarray([r["label"] or 0 for r in rows], np.int32)
        return out

    def dummy_batch(self, batch_size: int = 1):
        z = np.zeros((batch_size, self.num_choices, self.seq_len), np.int32)
        return {
            "input_ids": z,
            "token_type_ids": z,
            "attention_mask": z,
            "label": np.zeros((batch_size,), np.int32),
        }

    model_inputs = staticmethod(encoder_inputs)

    def train_source(self, process_index, process_count):
        return ArraySource(
            self.encode(self.train_rows),
            self.config.train_batch_size,
            seed=self.config.seed,
            process_index=process_index,
            process_count=process_count,
        )

    def eval_source(self, process_index, process_count):
        return ArraySource.for_eval(
            self.encode(self.eval_rows), self.config.eval_batch_size, process_index, process_count
        )

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
    def finalize(stats) -> dict[str, float]:
        keep = stats["valid"] > 0
        return {"accuracy": float(np.mean(stats["prediction"][keep] == stats["label"][keep]))}

    def flops_per_example(self) -> float:
        return self.num_choices * encoder_train_flops(model_config(self.config), self.seq_len)

    def tokens_per_example(self) -> int:
        return self.num_choices * self.seq_len

    def num_train_examples(self) -> int:
        return len(self.train_rows)
