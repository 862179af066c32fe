"""Shared by the fine-tuning tests: a tiny config on the shared vocab, and one run in-process."""

import json
from pathlib import Path

import jax

from bert_jax import train


def run(config, workdir: Path) -> dict[str, float]:
    """Trains and evaluates as `config` says on one device; the final eval metrics.

    Checks that results.json in the workdir holds the same metrics.
    """
    _, metrics = train.run(config, str(workdir), devices=jax.devices()[:1])
    results = json.loads((workdir / "results.json").read_text())
    assert results["metrics"] == metrics
    return metrics


def tiny(c, shared_data: Path, vocab: str = "bert-base-uncased"):
    """A few steps of a tiny model, with a real WordPiece vocabulary from the shared data."""
    c.data.vocab_file = str(shared_data / "vocab" / vocab / "vocab.txt")
    c.num_train_steps, c.log_every = 4, 2
    c.data.max_train_examples = 64
    c.eval_batch_size = 128
    return c
