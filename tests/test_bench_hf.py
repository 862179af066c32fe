"""bench_hf.Worker: HF's step in its own process, started with glibc's default malloc."""

import os

import numpy as np
import pytest

from bert_jax import bench_hf, malloc_hugepages
from bert_jax.models.bert import config_for_size


def test_worker_steps_without_the_huge_page_malloc(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", f"glibc.malloc.arena_max=2:{malloc_hugepages.TUNABLE}")
    rng = np.random.default_rng(0)
    batch = {
        "input_ids": rng.integers(5, 100, (2, 16)),
        "token_type_ids": np.zeros((2, 16), np.int64),
        "attention_mask": np.ones((2, 16), np.int64),
        "label": np.array([0, 1]),
    }
    config = config_for_size("tiny", vocab_size=100)
    worker = bench_hf.Worker("classification", "infer", config, None, batch, "float32", 1)
    try:
        times = [worker() for _ in range(3)]
    finally:
        worker.close()
    assert all(0 < t < 60 for t in times), times
    # The child kept the other tunable and lost the huge pages; the parent is unchanged.
    assert worker.info["glibc_tunables"] == "glibc.malloc.arena_max=2"
    assert malloc_hugepages.TUNABLE in os.environ["GLIBC_TUNABLES"]
    assert not worker._process.is_alive()


def test_worker_reports_a_failed_build():
    with pytest.raises(RuntimeError, match="could not build its step"):
        bench_hf.Worker("classification", "infer", None, None, {}, "float32", 1)
