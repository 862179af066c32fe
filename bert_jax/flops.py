"""Model FLOPs of a training step and the peak FLOP/s of a chip: the one formula
behind `perf/mfu` (and the benchmarks).

Formula (REFERENCES.md, "Throughput anchors"): training = 3 x forward;
forward per sequence of s tokens = layers x (24 s d^2 + 4 s^2 d) for a 4d
feed-forward (generally 2 s (4 d^2 + 2 d f) + 4 s^2 d per layer), plus the
MLM head at its p predicted positions, p x (2 d^2 + 2 d V). Embedding
lookups, LayerNorm, softmax and small heads are left out, as in that formula.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax

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


def encoder_train_flops(config, seq_len: int, predictions: int = 0) -> float:
    """Training FLOPs of one sequence of `seq_len` with `predictions` MLM positions."""
    s, d, f = seq_len, config.hidden_size, config.intermediate_size
    layer = 2 * s * (4 * d * d + 2 * d * f) + 4 * s * s * d
    mlm = predictions * (2 * d * d + 2 * d * config.vocab_size)
    return 3.0 * (config.num_layers * layer + mlm)


def batch_cost(config, inputs: Mapping[str, Any]) -> tuple[int, float]:
    """(tokens, training FLOPs) of one batch of model inputs, from their shapes.

    `inputs` are the model's keyword inputs (`Task.model_inputs`):
    `input_ids` (..., L) gives the encoder rows (B, or B x choices for
    multiple choice) and their width L; `masked_positions` (B, P), where
    present, the MLM predictions.
    """
    shape = inputs["input_ids"].shape
    rows, width = math.prod(shape[:-1]), shape[-1]
    masked = inputs.get("masked_positions")
    predictions = math.prod(masked.shape) if masked is not None else 0
    flops = rows * encoder_train_flops(config, width) + encoder_train_flops(config, 0, predictions)
    return rows * width, flops
