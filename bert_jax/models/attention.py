"""Scaled dot-product attention (Vaswani et al. 2017), one function, three ways.

`attend` computes softmax(q k^T / sqrt(D)) v over the keys a mask allows, by:

* the explicit path: logits, an fp32 softmax and the weighted sum written out
  in jnp. The only one that returns the probabilities or applies dropout to
  them (BERT's attention_probs_dropout_prob), so it runs whenever either is
  asked for, whatever `impl` says;
* "xla" (and "", the model's default) or "cudnn": jax.nn.dot_product_attention
  with that implementation (cuDNN flash attention: NVIDIA GPUs, bf16/fp16, a
  head size that is a multiple of 8);
* "splash": the Pallas TPU kernel (models/splash.py; attention dropout off, a
  length that is a multiple of 128); "splash_interpret" runs the same kernel
  through the Pallas interpreter on any backend (tests).

Which one is fastest depends on the platform; the model never asks: the
trainer resolves `attention_impl=""` ("auto") for its platform before it
builds the model (`bert_jax.tasks.model_setup.resolve_attention_impl`). The
math is the same in all of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from bert_jax.sharding import BATCH, HEADS

IMPLS = ("", "xla", "cudnn", "splash", "splash_interpret")
SPLASH = ("splash", "splash_interpret")


def masks(attention_mask, example_ids=None):
    """The attention mask and the splash kernel's segment ids of a batch.

    Args:
      attention_mask: (B, L) int, 1 on real tokens and 0 on padding.
      example_ids: (B, L) int or None; packed rows: 1.. per example, 0 on padding.

    Returns:
      (mask, segments). mask: (B, L) bool, True where the key is a real token;
      or, packed, (B, L, L) bool, [b, q, k] True where query q and key k belong
      to the same example (padding attends to padding, so no row is fully
      masked). segments: (B, L) int, the same information as ids.
    """
    if example_ids is None:
        return attention_mask.astype(bool), attention_mask
    return example_ids[:, :, None] == example_ids[:, None, :], example_ids


def attend(
    q,
    k,
    v,
    mask,
    segments,
    *,
    impl: str = "",
    dropout: Callable[[jax.Array], jax.Array] | None = None,
    return_weights: bool = False,
):
    """softmax(q k^T / sqrt(D)) v where `mask` allows.

    Args:
      q, k, v: (B, L, N, D).
      mask, segments: as `masks` returns them.
      impl: one of IMPLS (module doc).
      dropout: applied to the probabilities (attention dropout while
        training); forces the explicit path.
      return_weights: also return the probabilities; forces the explicit path.

    Returns:
      (context (B, L, N, D), probabilities (B, N, L, L) fp32 before dropout,
      or None when not asked for).
    """
    if impl not in IMPLS:
        raise ValueError(f"attention impl {impl!r} is not one of {IMPLS}")
    if return_weights or dropout is not None:
        return _explicit(q, k, v, mask, dropout)
    if impl in SPLASH:
        from bert_jax.models import splash  # Pallas is imported only when asked for

        ctx = splash.splash_attention(
            q,
            k,
            v,
            segments,
            batch_axis=BATCH,
            heads_axis=HEADS,
            interpret=impl == "splash_interpret",
        )
        return ctx, None
    # Its logits and softmax are fp32 for bf16 inputs as well.
    ctx = jax.nn.dot_product_attention(q, k, v, mask=_broadcast(mask), implementation=impl or "xla")
    return ctx, None


def _broadcast(mask):
    """(B, L) keys or (B, L, L) pairs -> (B, 1, 1 or L, L): over heads (and queries)."""
    return mask[:, None, None, :] if mask.ndim == 2 else mask[:, None]


def _explicit(q, k, v, mask, dropout):
    head_dim = q.shape[-1]
    logits = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=jnp.float32)
    logits = logits / math.sqrt(head_dim)
    logits = jnp.where(_broadcast(mask), logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)  # fp32, (B, N, L, L)
    dropped = probs if dropout is None else dropout(probs)
    return jnp.einsum("bnqk,bknd->bqnd", dropped.astype(v.dtype), v), probs
