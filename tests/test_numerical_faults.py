"""Numerical faults: a non-finite step stops the run (or is skipped), bad token ids anywhere.

The data: 64 real SST-2 pairs (tests/train_data.py) of which one example's
masked-LM weights are NaN, so exactly the steps whose batch holds it have
a NaN loss and gradient; and the same rows with one token id past the
model's vocabulary.
"""

import json
import re
from pathlib import Path

import jax
import numpy as np
import pytest

from bert_jax import checkpoint, optim, sharding, tasks, train
from tests import train_data
from tests.numerics import assert_equal, assert_finite_values, max_abs_diff

BAD_ROW = 12
STEPS = 8  # two epochs of 4 batches: the bad row comes twice
SMALL = {
    "model.hidden_size": 32,
    "model.num_heads": 2,
    "model.intermediate_size": 64,
    "num_train_steps": STEPS,
    "keep_checkpoints": STEPS,
}


@pytest.fixture(scope="module")
def data(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faulty")
    ex = train_data.make_examples(shared_data, 64)
    nan = {k: v.copy() for k, v in ex.items()}
    nan["masked_lm_weights"][BAD_ROW, 0] = np.nan
    bad_id = {k: v.copy() for k, v in ex.items()}
    bad_id["input_ids"][BAD_ROW, 3] = 30522 + 8  # one past-the-table id
    out = {}
    for name, examples in (("nan", nan), ("bad_id", bad_id)):
        (tmp / name).mkdir()
        train_data.write_tfrecord(str(tmp / name / "train-0.tfrecord"), examples)
        out[name] = {"train_files": str(tmp / name / "train-*.tfrecord")}
    return out


def _config(records, **overrides):
    return train_data.tiny_config(records, **(SMALL | overrides))


def _rows(wd: Path) -> list[dict]:
    return [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]


def _saved(wd: Path) -> list[int]:
    return sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def skipped_run(data, tmp_path_factory):
    """skip_nonfinite_updates=True, a checkpoint every step."""
    wd = tmp_path_factory.mktemp("skip")
    c = _config(data["nan"], checkpoint_every=1, skip_nonfinite_updates=True)
    state, _ = train.run(c, str(wd), devices=jax.devices()[:1])
    return wd, state, c


def test_nonfinite_step_stops_the_run_and_is_never_saved(data, skipped_run, tmp_path):
    skipped = [r["step"] for r in _rows(skipped_run[0]) if r["train/skipped_updates"]]
    first_bad = skipped[0]
    # A log row every 4 steps but a checkpoint every step: the check runs before
    # each save, so no state after the bad step reaches the disk.
    c = _config(data["nan"], checkpoint_every=1, log_every=4)
    msg = rf"train/loss is nan at step {first_bad} .*nothing after step {first_bad - 1} is saved"
    with pytest.raises(FloatingPointError, match=msg):
        train.run(c, str(tmp_path), devices=jax.devices()[:1])
    saved = _saved(tmp_path) if (tmp_path / "checkpoints").exists() else []
    assert saved == list(range(1, first_bad))


def test_skip_nonfinite_updates_keeps_the_state_and_counts(skipped_run):
    wd, state, c = skipped_run
    rows = _rows(wd)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    skipped = [r["step"] for r in rows if r["train/skipped_updates"]]
    # The bad row is in one batch per epoch: two of the eight steps.
    assert len(skipped) == 2 and skipped[0] <= 4 < skipped[1], skipped
    assert sum(r["train/skipped_updates"] for r in rows) == 2
    for r in rows:  # the skipped steps' rows carry no loss, the others finite ones
        assert ("train/loss" in r) == (r["step"] not in skipped)
        assert_finite_values({k: v for k, v in r.items() if k.startswith("train/")})
    for path, leaf in jax.tree.leaves_with_path(state.params):  # NaN propagates through max
        assert_finite_values({jax.tree_util.keystr(path): np.abs(np.asarray(leaf)).max()})

    task = tasks.get(c)
    mesh = sharding.make_mesh(c.mesh_shape, devices=jax.devices()[:1])
    tx, _ = optim.make_optimizer(c.optimizer, STEPS)
    dummy = task.model_inputs(task.dummy_batch())
    abstract, _ = train.plan_state(task.model(), tx, dummy, mesh, train.seed_key(c))
    ckpt = checkpoint.Checkpointer(wd)

    def restored(step):
        s, _ = ckpt.restore(abstract, step)
        return jax.tree.leaves((s.params, s.opt_state))

    # A skipped step leaves params and optimizer state exactly as they were;
    # the step before it changed them.
    k = skipped[1]
    before, at, earlier = restored(k - 1), restored(k), restored(k - 2)
    for a, b in zip(at, before, strict=True):
        assert_equal(np.asarray(a), np.asarray(b))
    assert max(max_abs_diff(a, b) for a, b in zip(before, earlier, strict=True)) > 0


def test_bad_token_id_is_caught_in_any_batch(data, skipped_run, tmp_path):
    c = _config(data["bad_id"], checkpoint_every=1)
    msg = r"input_ids up to 30530 but model.vocab_size is 30522 \(the batch of step (\d)\)"
    with pytest.raises(ValueError, match=msg) as err:
        train.run(c, str(tmp_path), devices=jax.devices()[:1])
    step = int(re.search(msg, str(err.value)).group(1))
    # The same row order as the NaN data: where the NaN row made a step skip.
    first = [r["step"] for r in _rows(skipped_run[0]) if r["train/skipped_updates"]][0]
    assert step == first > 1
    # Caught in the batch that holds the row, before that step runs: the steps
    # before it trained and were saved (it is not only the first batch checked).
    saved = _saved(tmp_path) if (tmp_path / "checkpoints").exists() else []
    assert saved == list(range(1, step))
