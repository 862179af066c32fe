"""Multiple choice (SWAG; Zellers et al. 2018): pick the ending that follows a context.

BERT paper section 4.4: each (context, ending) pair is encoded as
[CLS] context [SEP] ending [SEP]; the pooled output is scored by one dense
unit and the scores of the choices go through a softmax. Data: CSV files in
the SWAG layout (`sent1`, `sent2`, `ending0`..`ending3`, `label`; the ending
follows `sent2`) in data.data_dir, or without it a TFDS dataset with
`context`, `endings` and `label` features (data.tfds_name; TFDS has no SWAG,
the default is its successor HellaSwag, Zellers et al. 2019).
"""

from __future__ import annotations

import csv
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import optax

from bert_jax.models.heads import BertForMultipleChoice
from bert_jax.tasks import sources
from bert_jax.tasks.model_setup import EncoderCost, encoder_inputs, model_config, tokenizer


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


def read_tfds(name: str, split: str, num_choices: int = 4) -> list[dict]:
    """Rows of a TFDS multiple-choice split, as `read_swag_csv` gives them.

    HellaSwag's features (tensorflow_datasets `text/hellaswag.py`): `context`,
    `endings` (the continuations of the context) and `label` (-1 in the
    unlabelled test split: None here). TFDS downloads and prepares the
    dataset on first use.

    Raises:
      ValueError: naming dataset, split and record, for another number of
        endings than `num_choices`, a label outside 0..num_choices-1 or an
        empty context.
    """
    import tensorflow_datasets as tfds  # Imports TF: only when TFDS is asked for.

    out = []
    for i, ex in enumerate(tfds.as_numpy(tfds.load(name, split=split))):
        where = f"TFDS {name} split {split!r} record {i}"
        endings = [e.decode("utf-8").strip() for e in ex["endings"]]
        if len(endings) != num_choices:
            raise ValueError(f"{where}: {len(endings)} endings, config num_choices={num_choices}")
        label = int(ex["label"])
        if not -1 <= label < num_choices:
            raise ValueError(f"{where}: label {label} is not in 0..{num_choices - 1}")
        context = ex["context"].decode("utf-8").strip()
        if not context:
            raise ValueError(f"{where}: empty context")
        out.append({"context": context, "endings": endings, "label": None if label < 0 else label})
    return out


def _load(config, split: str) -> list[dict]:
    """The "train" or "eval" rows: data.data_dir/data.<split>_file, or TFDS without data_dir."""
    d = config.data
    if d.data_dir:
        return read_swag_csv(f"{d.data_dir}/{d[split + '_file']}", config.num_choices)
    return read_tfds(d.tfds_name, d[split + "_split"], config.num_choices)


class MultipleChoiceTask(EncoderCost):
    def __init__(self, config):
        self.config = config
        self.seq_len = config.max_seq_length
        self.num_choices = self.rows_per_example = config.num_choices
        self.tok = tokenizer(config)
        self.train_rows = _load(config, "train")[: config.data.max_train_examples or None]
        self.eval_rows = _load(config, "eval")
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
        arrays = self.encode(self.train_rows)
        return sources.train_source(self.config, arrays, process_index, process_count)

    def eval_source(self, process_index, process_count):
        arrays = self.encode(self.eval_rows)
        return sources.eval_source(self.config, arrays, process_index, process_count)

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

    def num_train_examples(self) -> int:
        return len(self.train_rows)
