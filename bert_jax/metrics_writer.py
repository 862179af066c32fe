"""metrics.jsonl + TensorBoard + a console line, written by process 0 only."""

from __future__ import annotations

import json
import time
from typing import Any

import jax
from etils import epath

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


class MetricWriter:
    """Appends one JSON object per call to metrics.jsonl and mirrors it to TensorBoard."""

    def __init__(self, workdir: str, start_time: float | None = None):
        self.enabled = jax.process_index() == 0
        self.start = start_time if start_time is not None else time.time()
        self.path = epath.Path(workdir) / "metrics.jsonl"
        self._tb = None
        if self.enabled:
            from tensorboardX import SummaryWriter  # event files without a TF graph

            self._tb = SummaryWriter(str(workdir), flush_secs=30)

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), "wall_time": round(time.time() - self.start, 3)}
        row |= {k: float(v) for k, v in metrics.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        for k, v in metrics.items():
            self._tb.add_scalar(k, float(v), int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def encoder_train_flops(config, seq_len: int, predictions: int = 0) -> float:
    """Training FLOPs of one sequence (REFERENCES.md, "Throughput anchors").

    3 x forward; forward = layers x (24 s d^2 + 4 s^2 d) for a 4d feed-forward
    (generally 2 s (4 d^2 + 2 d f) + 4 s^2 d per layer), plus the MLM head at
    the p predicted positions p x (2 d^2 + 2 d V). Embedding lookups,
    LayerNorm, softmax and small heads are left out, as in that formula.
    """
    s, d, f = seq_len, config.hidden_size, config.intermediate_size
    layer = 2 * s * (4 * d * d + 2 * d * f) + 4 * s * s * d
    mlm = predictions * (2 * d * d + 2 * d * config.vocab_size)
    return 3.0 * (config.num_layers * layer + mlm)
