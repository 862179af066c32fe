"""Model FLOPs of a step and the peak FLOP/s of a chip: the one formula behind
`perf/mfu` in the trainer and `mfu` in `bert_jax.perf.bench` / `bert_jax.perf.aot`.

Formula (REFERENCES.md, "Throughput anchors"): a training step is 3 x the
forward pass. The forward pass of a sequence of s real tokens is, per layer,
2 s (4 d^2 + 2 d f) + 4 s^2 d (the projections and feed-forward, then the
attention scores and their weighted sum); with f = 4d that is the anchor's
24 s d^2 + 4 s^2 d. The MLM head adds p (2 d^2 + 2 d V) for its p predicted
positions (logits are computed only there). Embedding lookups, LayerNorm,
softmax and the small heads are left out, as in the anchor.

Tokens are counted on real tokens (the attention mask), so padding and the
length buckets of fine-tuning batches add nothing: a batch's cost depends on
the sum of its rows' lengths and the sum of their squares (`token_counts`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

# Peak dense bf16 TFLOP/s per chip (REFERENCES.md, "Throughput anchors"), keyed
# by a lower-case substring of `jax.Device.device_kind`. Longer keys first.
PEAK_TFLOPS = {
    "tpu v6 lite": 918.0,
    "tpu v6e": 918.0,
    "tpu v5 lite": 197.0,
    "tpu v5e": 197.0,
    "tpu v5p": 459.0,
    "tpu v5": 459.0,
    "tpu v4": 275.0,
    "h100": 989.0,
    "h200": 989.0,
    "a100": 312.0,
}


def peak_flops_per_device(device: jax.Device | None = None) -> float | None:
    """Peak FLOP/s of one device, or None where unknown (CPUs, other GPUs)."""
    kind = (device or jax.devices()[0]).device_kind.lower()
    for key, tflops in PEAK_TFLOPS.items():
        if key in kind:
            return tflops * 1e12
    return None


def token_counts(inputs: Mapping[str, Any]) -> dict[str, jax.Array]:
    """Real tokens, the sum of squared row lengths, and MLM predictions of a batch.

    Works on numpy or jax arrays, inside jit too. `inputs` are the model's
    keyword inputs (`Task.model_inputs`): `input_ids` (..., L) gives the
    encoder rows (B, or B x choices for multiple choice), `attention_mask`
    their real tokens (all L without it), `masked_positions` (B, P) the MLM
    positions computed. Packed rows (`example_ids`, `cls_positions` (B, K))
    count attention per example: its square, not the row's.
    """
    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = jnp.ones_like(ids)
    if inputs.get("example_ids") is not None:
        k = inputs["cls_positions"].shape[-1]
        slots = jnp.arange(1, k + 1)
        lengths = jnp.sum(jnp.asarray(inputs["example_ids"])[..., None] == slots, axis=-2)
    else:
        lengths = jnp.sum(jnp.asarray(mask).reshape(-1, ids.shape[-1]) > 0, axis=-1)
    lengths = lengths.astype(jnp.float32)
    masked = inputs.get("masked_positions")
    return {
        "tokens": jnp.sum(lengths),
        "tokens_sq": jnp.sum(lengths * lengths),
        "predictions": jnp.float32(math.prod(masked.shape) if masked is not None else 0),
    }


def forward_flops(config, tokens: float, tokens_sq: float, predictions: float = 0.0) -> float:
    """Forward FLOPs of rows whose real lengths sum to `tokens` (squares: `tokens_sq`)."""
    d, f, v = config.hidden_size, config.intermediate_size, config.vocab_size
    layer = 2 * tokens * (4 * d * d + 2 * d * f) + 4 * tokens_sq * d
    return config.num_layers * layer + predictions * (2 * d * d + 2 * d * v)


def train_flops(config, counts: Mapping[str, float]) -> float:
    """Training FLOPs (3 x forward) of a batch with these `token_counts`."""
    return 3.0 * forward_flops(
        config, float(counts["tokens"]), float(counts["tokens_sq"]), float(counts["predictions"])
    )
