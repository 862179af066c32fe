"""Pretraining: masked LM over the masked positions only, plus NSP.

Loss as in the original `run_pretraining.py`: the MLM loss is the
weighted mean cross-entropy over the `masked_lm_weights`-marked positions
(logits computed only there), the NSP loss the mean cross-entropy of the
two-way classifier; the total is their sum.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import optax

from bert_jax.data import embedded_pretraining, pretraining_loader, pretraining_records
from bert_jax.data.array_source import ArraySource
from bert_jax.data.tokenizer import BertTokenizer
from bert_jax.metrics_writer import encoder_train_flops
from bert_jax.models.heads import BertForPreTraining
from bert_jax.tasks.model_setup import model_config


class PretrainingTask:
    def __init__(self, config):
        self.config = config
        self.seq_len = config.max_seq_length
        self.num_predictions = config.max_predictions_per_seq
        self.use_nsp = config.nsp
        self._embedded = None  # paths of the embedded-corpus data, once built

    def model(self) -> BertForPreTraining:
        return BertForPreTraining(model_config(self.config), nsp=self.use_nsp)

    def dummy_batch(self, batch_size: int = 1) -> dict[str, np.ndarray]:
        z = lambda n, dt=np.int32: np.zeros((batch_size, n), dt)  # noqa: E731
        return {
            "input_ids": z(self.seq_len),
            "input_mask": z(self.seq_len),
            "segment_ids": z(self.seq_len),
            "masked_lm_positions": z(self.num_predictions),
            "masked_lm_ids": z(self.num_predictions),
            "masked_lm_weights": z(self.num_predictions, np.float32),
            "next_sentence_labels": np.zeros((batch_size,), np.int32),
        }

    @staticmethod
    def model_inputs(batch) -> dict:
        return dict(
            input_ids=batch["input_ids"],
            token_type_ids=batch["segment_ids"],
            attention_mask=batch["input_mask"],
            masked_positions=batch["masked_lm_positions"],
        )

    def _parts(self, outputs, batch):
        w = batch["masked_lm_weights"]  # (B, P); 0 on padding predictions
        if "valid" in batch:  # padded eval rows count nothing
            w = w * batch["valid"][:, None]
        mlm_xent = optax.softmax_cross_entropy_with_integer_labels(
            outputs["mlm_logits"], batch["masked_lm_ids"]
        )
        mlm_correct = (jnp.argmax(outputs["mlm_logits"], -1) == batch["masked_lm_ids"]) * w
        parts = {
            "mlm_loss_sum": jnp.sum(mlm_xent * w),
            "mlm_weight": jnp.sum(w),
            "mlm_correct": jnp.sum(mlm_correct),
        }
        if self.use_nsp:
            v = batch.get("valid", jnp.ones_like(batch["next_sentence_labels"]))
            labels = batch["next_sentence_labels"]
            nsp_xent = optax.softmax_cross_entropy_with_integer_labels(
                outputs["nsp_logits"], labels
            )
            parts |= {
                "nsp_loss_sum": jnp.sum(nsp_xent * v),
                "nsp_count": jnp.sum(v),
                "nsp_correct": jnp.sum((jnp.argmax(outputs["nsp_logits"], -1) == labels) * v),
            }
        return parts

    def loss(self, outputs, batch):
        p = self._parts(outputs, batch)
        mlm = p["mlm_loss_sum"] / jnp.maximum(p["mlm_weight"], 1e-5)
        metrics = {"mlm_loss": mlm}
        total = mlm
        if self.use_nsp:
            nsp = p["nsp_loss_sum"] / jnp.maximum(p["nsp_count"], 1.0)
            total, metrics["nsp_loss"] = total + nsp, nsp
        return total, metrics

    # Evaluation: sums per batch on device, ratios on the host at the end.
    eval_stats = _parts

    @staticmethod
    def finalize(stats: dict[str, float]) -> dict[str, float]:
        out = {
            "mlm_accuracy": stats["mlm_correct"] / max(stats["mlm_weight"], 1e-9),
            "mlm_loss": stats["mlm_loss_sum"] / max(stats["mlm_weight"], 1e-9),
        }
        if "nsp_count" in stats:
            out["nsp_accuracy"] = stats["nsp_correct"] / max(stats["nsp_count"], 1e-9)
            out["nsp_loss"] = stats["nsp_loss_sum"] / max(stats["nsp_count"], 1e-9)
        return out

    def _files(self, key: str) -> str:
        """data.<key>, or the embedded corpus's records when it is "embedded"."""
        d = self.config.data
        if d[key] != "embedded":
            return d[key]
        if self._embedded is None:
            root = os.path.expanduser(d.embedded_dir or "~/.cache/bert_jax")
            self._embedded = embedded_pretraining.prepare(root, self.seq_len, self.num_predictions)
            size = embedded_pretraining.vocab_size(self._embedded)
            if size != model_config(self.config).vocab_size:
                raise ValueError(
                    f"{self._embedded['vocab_txt']} has {size} tokens but "
                    f"model.vocab_size is {model_config(self.config).vocab_size}"
                )
        return str(self._embedded[key.replace("_files", "_tfrecord")])

    def _masking(self) -> pretraining_loader.MaskingSpec | None:
        d = self.config.data
        vocab = d.vocab_file or (str(self._embedded["vocab_txt"]) if self._embedded else "")
        if not vocab:
            return None
        tok = BertTokenizer(vocab, do_lower_case=d.do_lower_case)
        return pretraining_loader.MaskingSpec.from_tokenizer(
            tok, self.config.masked_lm_prob, self.config.whole_word_mask
        )

    def train_source(self, process_index: int, process_count: int):
        d = self.config.data
        if not d.train_files:
            raise ValueError(
                "config key data.train_files is empty: point it at pretraining "
                "TFRecords (bert_jax.data.create_pretraining_data)"
            )
        return pretraining_loader.PretrainingLoader(
            self._files("train_files"),
            max_seq_length=self.seq_len,
            max_predictions=self.num_predictions,
            global_batch_size=self.config.train_batch_size,
            seed=self.config.seed,
            num_shards=d.num_shards,
            process_index=process_index,
            process_count=process_count,
            shuffle_buffer=d.shuffle_buffer,
            masking=self._masking(),
        )

    def eval_source(self, process_index: int, process_count: int) -> ArraySource | None:
        """The held-out set, in memory; dynamic records get one fixed masking."""
        d = self.config.data
        if not d.eval_files:
            return None
        arrays = pretraining_records.read_tfrecords(
            self._files("eval_files"), self.seq_len, self.num_predictions
        )
        if "masked_lm_positions" not in arrays:
            masking = self._masking()
            if masking is None:
                raise ValueError(f"{d.eval_files}: dynamic-masking records need data.vocab_file")
            rng = np.random.default_rng([self.config.seed, 1])  # the same masks every eval
            ids, pos, labels, w = pretraining_loader.mask_batch(
                arrays["input_ids"], masking, self.num_predictions, rng
            )
            arrays |= {
                "input_ids": ids,
                "masked_lm_positions": pos,
                "masked_lm_ids": labels,
                "masked_lm_weights": w,
            }
        return ArraySource.for_eval(
            arrays, self.config.eval_batch_size, process_index, process_count
        )

    def flops_per_example(self, seq_len: int | None = None) -> float:
        return encoder_train_flops(
            model_config(self.config), seq_len or self.seq_len, self.num_predictions
        )

    def tokens_per_example(self, seq_len: int | None = None) -> int:
        return seq_len or self.seq_len
