"""Pretraining: masked LM over the masked positions only, plus NSP.

Loss as in the original `run_pretraining.py`: the MLM loss is the
weighted mean cross-entropy over the `masked_lm_weights`-marked positions
(logits computed only there), the NSP loss the mean cross-entropy of the
two-way classifier; the total is their sum.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax.data.array_source import ArraySource
from bert_jax.data.pretraining import embedded as embedded_pretraining
from bert_jax.data.pretraining.masking_vocab import MaskingVocab
from bert_jax.models.heads import BertForPreTraining
from bert_jax.tasks.base import EvalResult, EvalSet, Forward, Task
from bert_jax.tasks.model_setup import model_config
from bert_jax.tokenizers.wordpiece import BertTokenizer


class PretrainingTask(Task):
    labels = None

    def __init__(self, config):
        self.config = config
        self.seq_len = config.max_seq_length
        self.num_predictions = config.max_predictions_per_seq  # per row, packed or not
        self.use_nsp = config.nsp
        # K > 0: packed records (bert_jax.data.pretraining.pack_records), up to K examples a row.
        self.examples_per_row = config.data.get("examples_per_row", 0)

    def model(self) -> BertForPreTraining:
        return BertForPreTraining(model_config(self.config), nsp=self.use_nsp)

    def dummy_batch(self) -> dict[str, np.ndarray]:
        z = lambda n, dt=np.int32: np.zeros((1, n), dt)  # noqa: E731
        batch = {
            "input_ids": z(self.seq_len),
            "input_mask": z(self.seq_len),
            "segment_ids": z(self.seq_len),
            "masked_lm_positions": z(self.num_predictions),
            "masked_lm_ids": z(self.num_predictions),
            "masked_lm_weights": z(self.num_predictions, np.float32),
            "next_sentence_labels": np.zeros((1,), np.int32),
        }
        if self.examples_per_row:
            k = self.examples_per_row
            batch |= {
                "position_ids": z(self.seq_len),
                "example_ids": z(self.seq_len),
                "next_sentence_labels": z(k),
                "cls_positions": z(k),
                "nsp_weights": z(k, np.float32),
            }
        return batch

    @staticmethod
    def model_inputs(batch) -> dict:
        inputs = dict(
            input_ids=batch["input_ids"],
            token_type_ids=batch["segment_ids"],
            attention_mask=batch["input_mask"],
            masked_positions=batch["masked_lm_positions"],
        )
        if "example_ids" in batch:  # packed rows
            inputs |= {k: batch[k] for k in ("position_ids", "example_ids", "cls_positions")}
        return inputs

    def _parts(self, outputs, batch):
        w = batch["masked_lm_weights"]  # (B, P); 0 on padding predictions
        if "valid" in batch:  # padded eval rows count nothing
            w = w * batch["valid"][:, None]
        logits, ids = outputs["mlm_logits"], batch["masked_lm_ids"]  # (B, P, V), (B, P)
        mlm_xent = optax.softmax_cross_entropy_with_integer_labels(logits, ids)  # (B, P)
        mlm_correct = (jnp.argmax(logits, -1) == ids) * w
        parts = {
            "mlm_loss_sum": jnp.sum(mlm_xent * w),
            "mlm_weight": jnp.sum(w),
            "mlm_correct": jnp.sum(mlm_correct),
        }
        if self.use_nsp:
            labels = batch["next_sentence_labels"]  # (B,), or (B, K) packed
            v = jnp.ones(labels.shape, jnp.float32)
            if "nsp_weights" in batch:  # the empty example slots of packed rows
                v = batch["nsp_weights"]
            if "valid" in batch:
                v = v * batch["valid"].reshape(batch["valid"].shape + (1,) * (labels.ndim - 1))
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
    def finalize(eval_set: EvalSet, stats) -> EvalResult:
        out = {
            "mlm_accuracy": stats["mlm_correct"] / max(stats["mlm_weight"], 1e-9),
            "mlm_loss": stats["mlm_loss_sum"] / max(stats["mlm_weight"], 1e-9),
        }
        if "nsp_count" in stats:
            out["nsp_accuracy"] = stats["nsp_correct"] / max(stats["nsp_count"], 1e-9)
            out["nsp_loss"] = stats["nsp_loss_sum"] / max(stats["nsp_count"], 1e-9)
        return EvalResult(out)

    # --- data -----------------------------------------------------------------
    @functools.cache  # noqa: B019 (built once on disk; the paths never change)
    def _embedded(self) -> dict:
        """Paths of the embedded-corpus data (built into data.embedded_dir once)."""
        d = self.config.data
        root = os.path.expanduser(d.embedded_dir or "~/.cache/bert_jax")
        # Examples are masked at 15% of their own length (capped at the row's
        # slots), so a packed row's predictions stay near 15% of its tokens and
        # fit its max_predictions_per_seq slots (the packer checks both).
        k = self.examples_per_row
        paths = embedded_pretraining.prepare(
            root,
            self.seq_len,
            self.num_predictions,
            examples_per_row=k,
            objective=d.get("objective", "nsp"),
            max_ngram=d.get("max_ngram", 1),
        )
        size = embedded_pretraining.vocab_size(paths)
        if size != model_config(self.config).vocab_size:
            raise ValueError(
                f"{paths['vocab_txt']} has {size} tokens but "
                f"model.vocab_size is {model_config(self.config).vocab_size}"
            )
        return paths

    def _files(self, key: str) -> str:
        """data.<key>, or the embedded corpus's records when it is "embedded"."""
        d = self.config.data
        if d[key] != "embedded":
            return d[key]
        return str(self._embedded()[key.replace("_files", "_tfrecord")])

    def tokenizer(self) -> BertTokenizer | None:
        """data.vocab_file's, else the embedded data's when it is used, else None."""
        d = self.config.data
        if d.vocab_file:
            return BertTokenizer(d.vocab_file, do_lower_case=d.do_lower_case)
        if "embedded" in (d.train_files, d.eval_files):
            return BertTokenizer(str(self._embedded()["vocab_txt"]), do_lower_case=True)
        return None

    def _masking_vocab(self) -> MaskingVocab | None:
        tok = self.tokenizer()
        return None if tok is None else MaskingVocab.from_vocab(tok.vocab)

    def train_source(self, process_index: int, process_count: int):
        # TensorFlow (tf.data) is imported only by the pretraining data path, so
        # fine-tuning and prediction processes start without it.
        from bert_jax.data.pretraining import loader as pretraining_loader

        d = self.config.data
        if not d.train_files:
            raise ValueError(
                "config key data.train_files is empty: point it at pretraining "
                "TFRecords (bert_jax.data.pretraining.create_pretraining_data)"
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
            examples_per_row=self.examples_per_row,
            masking_vocab=self._masking_vocab(),
            masked_lm_prob=self.config.masked_lm_prob,
            whole_word=self.config.whole_word_mask,
        )

    def eval_sets(self, process_index: int, process_count: int) -> list[EvalSet]:
        from bert_jax.data.pretraining import loader as pretraining_loader
        from bert_jax.data.pretraining import records as pretraining_records

        """The held-out set, in memory; dynamic records get one fixed masking."""
        d = self.config.data
        if not d.eval_files:
            return []
        arrays = pretraining_records.read_tfrecords(
            self._files("eval_files"), self.seq_len, self.num_predictions, self.examples_per_row
        )
        if "masked_lm_positions" not in arrays:
            vocab = self._masking_vocab()
            if vocab is None:
                raise ValueError(f"{d.eval_files}: dynamic-masking records need data.vocab_file")
            rng = np.random.default_rng([self.config.seed, 1])  # the same masks every eval
            ids, pos, labels, w = pretraining_loader.mask_batch(
                arrays["input_ids"],
                vocab,
                self.num_predictions,
                rng,
                masked_lm_prob=self.config.masked_lm_prob,
                whole_word=self.config.whole_word_mask,
            )
            arrays |= {
                "input_ids": ids,
                "masked_lm_positions": pos,
                "masked_lm_ids": labels,
                "masked_lm_weights": w,
            }
        source = ArraySource.for_eval(
            arrays, self.config.eval_batch_size, process_index, process_count
        )
        return [EvalSet(source)]

    # --- prediction -------------------------------------------------------------
    def predict(
        self, forward: Forward, inputs: Sequence[str], run_metrics: Mapping[str, float]
    ) -> list[dict]:
        """Fill-mask: per input text with one or more "[MASK]",
        {"masks": [{"predictions": [{"token", "probability"}, ...]}]} (top 5 each)."""
        del run_metrics
        tok = self.tokenizer()
        if tok is None:
            raise ValueError("fill-mask needs a vocabulary: set data.vocab_file")
        rows = []
        for i, text in enumerate(inputs):
            # "[MASK]" written in text is split as text by the tokenizer (as the
            # original's): the pieces around it are encoded and joined by the id.
            pieces = [tok.tokenize(part) for part in text.split("[MASK]")]
            if len(pieces) < 2:
                raise ValueError(f"input {i}: no [MASK] in {text!r}")
            ids = [tok.cls_id]
            for j, piece in enumerate(pieces):
                ids += ([tok.mask_id] if j else []) + tok.convert_tokens_to_ids(piece)
            ids.append(tok.sep_id)
            if len(ids) > self.seq_len:
                raise ValueError(f"input {i}: {len(ids)} word pieces exceed {self.seq_len}")
            rows.append(ids)
        width = max(len(r) for r in rows)
        ids = np.zeros((len(rows), width), np.int32)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
        positions = [np.flatnonzero(ids[i] == tok.mask_id) for i in range(len(rows))]
        most = max(len(p) for p in positions)
        pos = np.zeros((len(rows), most), np.int32)
        for i, p in enumerate(positions):
            pos[i, : len(p)] = p
        logits = forward(
            dict(
                input_ids=ids,
                token_type_ids=np.zeros_like(ids),
                attention_mask=(ids > 0).astype(np.int32),
                masked_positions=pos,
            )
        )["mlm_logits"]
        probs = np.asarray(jax.nn.softmax(logits, axis=-1))
        out = []
        for text, p, prob in zip(inputs, positions, probs, strict=True):
            masks = []
            for k in range(len(p)):
                top = np.argsort(-prob[k])[:5]
                tokens = tok.convert_ids_to_tokens(top.tolist())
                masks.append(
                    {
                        "predictions": [
                            {"token": t, "probability": float(prob[k, j])}
                            for t, j in zip(tokens, top, strict=True)
                        ]
                    }
                )
            out.append({"text": text, "masks": masks})
        return out
