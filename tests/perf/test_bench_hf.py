"""bench_hf.Worker: HF's step in its own process, started with glibc's default malloc."""

import os

import numpy as np
import pytest

from bert_jax import cpu_env
from bert_jax.models.bert import config_for_size
from bert_jax.perf import bench_hf

OTHER = "glibc.malloc.perturb=0"  # a tunable of the user's (perturb 0 changes nothing)
OURS = ":".join((OTHER, *cpu_env.HUGEPAGES, *cpu_env.REUSE))


def _worker_tunables(malloc: str) -> str:
    rng = np.random.default_rng(0)
    batch = {
        "input_ids": rng.integers(5, 100, (2, 16)),
        "token_type_ids": np.zeros((2, 16), np.int64),
        "attention_mask": np.ones((2, 16), np.int64),
        "label": np.array([0, 1]),
    }
    config = config_for_size("tiny", vocab_size=100)
    worker = bench_hf.Worker(
        "classification", "infer", config, None, batch, "float32", 1, malloc=malloc
    )
    try:
        times = [worker() for _ in range(3)]
    finally:
        worker.close()
    assert all(0 < t < 60 for t in times), times
    assert not worker._process.is_alive()
    return worker.info["glibc_tunables"]


def test_worker_steps_with_the_default_malloc_or_bert_jaxs(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", OURS)
    # By default the child keeps the user's tunable and loses bert_jax's; the
    # parent is unchanged.
    assert _worker_tunables("default") == OTHER
    assert os.environ["GLIBC_TUNABLES"] == OURS
    assert _worker_tunables("bert_jax") == OURS
    with pytest.raises(ValueError, match="'default' or 'bert_jax'"):
        bench_hf.Worker("classification", "infer", None, None, {}, "float32", 1, malloc="x")
    assert os.environ["GLIBC_TUNABLES"] == OURS


def test_worker_reports_a_failed_build():
    with pytest.raises(RuntimeError, match="could not build its step"):
        bench_hf.Worker("classification", "infer", None, None, {}, "float32", 1)
