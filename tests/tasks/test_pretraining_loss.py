"""The pretraining loss against a float64 numpy reference, and its gradient
against optax's cross-entropy over the (B, P, V) logits as returned.

A slip that mixed the vocabulary with the predictions (in the loss, or in
the MLM head's padded vocabulary columns) fails both checks; one in the head
also fails the logits' parity with HF (test_family_checkpoints.py).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax import configs, tasks
from tests import train_data
from tests.numerics import assert_close, assert_differ, assert_equal, assert_trees_close

B, SEQ, PRED, VOCAB = 3, 16, 5, 203  # 203: padded to 208 rows by vocab_pad_multiple=8


def _task_model_params_batch():
    cfg = configs.load(train_data.PRETRAIN_CONFIG + ":tiny")
    cfg.max_seq_length, cfg.max_predictions_per_seq = SEQ, PRED
    cfg.model.vocab_size, cfg.model.vocab_pad_multiple = VOCAB, 8
    task = tasks.get(cfg)
    model = task.model()
    params = nn.unbox(model.init(jax.random.key(0), **task.model_inputs(task.dummy_batch())))
    params = params["params"]
    rng = np.random.default_rng(0)
    batch = {
        "input_ids": rng.integers(1, VOCAB, (B, SEQ), dtype=np.int32),
        "input_mask": np.ones((B, SEQ), np.int32),
        "segment_ids": (np.arange(SEQ) >= SEQ // 2).astype(np.int32)[None].repeat(B, 0),
        "masked_lm_positions": rng.integers(1, SEQ, (B, PRED), dtype=np.int32),
        "masked_lm_ids": rng.integers(0, VOCAB, (B, PRED), dtype=np.int32),
        # Padding predictions (weight 0) count nothing.
        "masked_lm_weights": np.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1] * 5], np.float32),
        "next_sentence_labels": np.array([0, 1, 1], np.int32),
    }
    return task, model, params, batch


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_loss_and_stats_equal_a_numpy_reference():
    task, model, params, batch = _task_model_params_batch()
    out = model.apply({"params": params}, **task.model_inputs(batch), deterministic=True)
    logits = np.asarray(out["mlm_logits"], np.float64)
    assert logits.shape == (B, PRED, VOCAB)  # vocabulary padding dropped
    ids, w = batch["masked_lm_ids"], batch["masked_lm_weights"]
    xent = -np.take_along_axis(_log_softmax(logits), ids[..., None], -1)[..., 0]
    mlm = (xent * w).sum() / w.sum()
    nsp_logits = np.asarray(out["nsp_logits"], np.float64)
    labels = batch["next_sentence_labels"]
    nsp = -np.take_along_axis(_log_softmax(nsp_logits), labels[:, None], -1).mean()

    total, metrics = task.loss(out, batch)
    assert_close(float(metrics["mlm_loss"]), mlm, rtol=1e-5)
    assert_close(float(metrics["nsp_loss"]), nsp, rtol=1e-5)
    assert_close(float(total), mlm + nsp, rtol=1e-5)
    stats = jax.device_get(task.eval_stats(out, batch))
    assert_close(stats["mlm_loss_sum"], (xent * w).sum(), rtol=1e-5)
    assert_equal(stats["mlm_weight"], w.sum())
    assert_equal(stats["mlm_correct"], ((logits.argmax(-1) == ids) * w).sum())


def test_gradient_equals_optax_cross_entropy_over_the_returned_logits():
    task, model, params, batch = _task_model_params_batch()
    inputs = task.model_inputs(batch)
    ids, w = jnp.asarray(batch["masked_lm_ids"]), jnp.asarray(batch["masked_lm_weights"])

    def ours(p):
        return task.loss(model.apply({"params": p}, **inputs, deterministic=True), batch)[0]

    def reference(p):  # optax along the last axis of (B, P, V), as the logits are returned
        out = model.apply({"params": p}, **inputs, deterministic=True)
        xent = optax.softmax_cross_entropy_with_integer_labels(out["mlm_logits"], ids)
        nsp = optax.softmax_cross_entropy_with_integer_labels(
            out["nsp_logits"], batch["next_sentence_labels"]
        )
        return jnp.sum(xent * w) / jnp.sum(w) + jnp.mean(nsp)

    got, want = jax.jit(jax.grad(ours))(params), jax.jit(jax.grad(reference))(params)
    emb = want["bert"]["embeddings"]["word_embeddings"]["embedding"]
    assert_differ(emb, 0.0)  # the tied decoder's gradient reaches the table
    assert_trees_close(got, want, rtol=1e-4, atol=1e-7)
