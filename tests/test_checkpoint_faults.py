"""Damaged checkpoints and failed saves, through `train.run` (tiny model, real records).

One 4-step run (checkpoints at steps 2 and 4) is the reference. Its newest
checkpoint is then cut short, loses a file, or loses its commit marker: the
rerun says which directory and what is wrong, sets it aside, resumes from
step 2 (not from scratch) and ends bitwise where the reference did. So too
when bytes of its parameter data are overwritten in place, every size
unchanged (the checksums written at save time catch it); `pretrained.load`,
`predict` and `embed` refuse such a workdir in one line naming the checkpoint
and the previous good step. A
checkpoint of another model is refused naming the first mismatching tensor
and both shapes; a full disk during a save fails the run with a message
naming the step and leaves the previous checkpoint intact.
"""

import errno
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from bert_jax import checkpoint, optim, sharding, tasks, train
from bert_jax.checkpoints import pretrained
from tests import train_data
from tests.cli_env import cli_env
from tests.numerics import assert_equal

STEPS = 4
# A narrower tiny model: checkpoints of a few MB, so saves cost little.
SMALL = {
    "model.hidden_size": 32,
    "model.num_heads": 2,
    "model.intermediate_size": 64,
    "num_train_steps": STEPS,
    "checkpoint_every": 2,
    "keep_checkpoints": 3,
}


def _config(records, **overrides):
    return train_data.tiny_config(records, **(SMALL | overrides))


def _flat(tree):
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree.leaves_with_path(tree)}


def _run(config, wd: Path):
    return train.run(config, str(wd), devices=jax.devices()[:1])


def _steps(rows_path: Path, kind="train/loss"):
    rows = [json.loads(x) for x in rows_path.read_text().splitlines()]
    return [r["step"] for r in rows if kind in r]


@pytest.fixture(scope="module")
def records(shared_data, tmp_path_factory):
    return train_data.write_records(shared_data, tmp_path_factory.mktemp("records"), n_train=64)


@pytest.fixture(scope="module")
def reference(records, tmp_path_factory):
    wd = tmp_path_factory.mktemp("reference")
    state, _ = _run(_config(records), wd)
    assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir()) == [2, STEPS]
    return wd, _flat(state.params), _flat(state.opt_state)


def _copy(reference, tmp_path) -> Path:
    wd = tmp_path / "wd"
    shutil.copytree(reference[0], wd)
    (wd / "results.json").unlink()  # not finished: the rerun must resume
    return wd


def _size(p: Path) -> int:
    return p.stat().st_size


def _largest_file(d: Path) -> Path:
    return max((p for p in d.rglob("*") if p.is_file()), key=_size)


# What the log says: the checksum manifest names the file and its saved size (a
# checkpoint without one, saved before checksums existed, "cannot be read").
def _truncate(step_dir: Path) -> str:
    f = _largest_file(step_dir / "state")
    size = f.stat().st_size
    with open(f, "r+b") as fh:
        fh.truncate(size // 2)
    return f"{f.relative_to(step_dir)} has {size // 2} bytes, {size} when saved"


def _delete(step_dir: Path) -> str:
    f = _largest_file(step_dir / "state")
    f.unlink()
    return f"{f.relative_to(step_dir)} is missing"


def _flip(step_dir: Path) -> str:
    """Overwrites 64 bytes in the middle of the largest array data file (orbax's OCDBT
    `ocdbt.process_*/d/`) with 0xff (NaN as float32), its size unchanged: orbax reads
    it back without an error."""
    f = max(
        (p for p in (step_dir / "state").rglob("ocdbt.process_*/d/*") if p.is_file()), key=_size
    )
    size = f.stat().st_size
    with open(f, "r+b") as fh:
        fh.seek(size // 2 // 4 * 4)
        fh.write(b"\xff" * 64)
    assert f.stat().st_size == size
    return f"{f.relative_to(step_dir)} does not match its checksum"


def _uncommit(step_dir: Path) -> str:
    (step_dir / "commit_success.txt").unlink()
    return "it has no commit marker (commit_success.txt)"


# A restore that fails on a deleted file leaves orbax's read coroutines for the
# other arrays unawaited; Python reports each one when it is collected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    "damage", [_truncate, _delete, _uncommit, _flip], ids=lambda f: f.__name__[1:]
)
def test_damaged_newest_checkpoint_falls_back(records, reference, tmp_path, caplog, damage):
    wd = _copy(reference, tmp_path)
    reason = damage(wd / "checkpoints" / str(STEPS))
    with caplog.at_level(logging.INFO):
        state, _ = _run(_config(records), wd)
    bad = wd / "checkpoints" / str(STEPS)
    assert f"checkpoint {bad} is unusable: {reason}" in caplog.text
    assert "resumed from step 2" in caplog.text
    assert (wd / "bad_checkpoints" / str(STEPS)).is_dir()
    # Resumed from step 2 and trained again to the reference's bits.
    for k, v in reference[1].items():
        assert_equal(_flat(state.params)[k], v, err_msg=k)
    for k, v in reference[2].items():
        assert_equal(_flat(state.opt_state)[k], v, err_msg=k)
    assert _steps(wd / "metrics.jsonl") == list(range(1, STEPS + 1))
    assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir()) == [2, STEPS]


def test_loading_a_workdir_with_a_damaged_newest_checkpoint_fails_in_one_line(
    shared_data, reference, tmp_path
):
    wd = _copy(reference, tmp_path)
    # The records' vocabulary, which embed looks for before it loads the model.
    shutil.copy(shared_data / "vocab" / "bert-base-uncased" / "vocab.txt", wd / "vocab.txt")
    why = _flip(wd / "checkpoints" / str(STEPS))
    with pytest.raises(pretrained.CheckpointError) as error:
        pretrained.load(wd)
    text = str(error.value)
    assert text.startswith(f"checkpoint {wd / 'checkpoints' / str(STEPS)} is damaged: {why}")
    assert "its bytes changed on disk after the save" in text
    assert text.endswith(
        f"the previous good checkpoint is step 2 ({wd / 'checkpoints' / '2'}); rerun the "
        f"training command on this workdir to set step {STEPS} aside and train again from step 2"
    )
    text_file = tmp_path / "in.txt"
    text_file.write_text("a [MASK] sentence\n")
    out = tmp_path / "out.npy"
    for prog, args in (
        ("bert_jax.tools.predict", [f"--workdir={wd}", "--text=a [MASK] sentence"]),
        (
            "bert_jax.tools.embed",
            [f"--checkpoint={wd}", f"--input={text_file}", f"--output={out}"],
        ),
    ):
        cmd = [sys.executable, "-m", prog, *args]
        got = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=300)
        assert got.returncode == 1, got.stderr[-3000:]
        lines = got.stderr.strip().splitlines()
        assert len(lines) == 1, got.stderr[-3000:]
        assert lines[0].startswith(f"{prog}: error: checkpoint "), lines[0]
        assert "is damaged" in lines[0] and "previous good checkpoint is step 2" in lines[0]
    assert not out.exists()
    # Nothing was moved: loading only reads.
    assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir()) == [2, STEPS]


def test_no_usable_checkpoint_is_an_error_not_a_fresh_start(records, reference, tmp_path):
    wd = _copy(reference, tmp_path)
    for step in (2, STEPS):
        _uncommit(wd / "checkpoints" / str(step))
    with pytest.raises(checkpoint.NoUsableCheckpointError, match=r"no usable checkpoint in"):
        _run(_config(records), wd)
    assert _steps(wd / "metrics.jsonl") == list(range(1, STEPS + 1))  # untouched


def test_checkpoint_of_another_model_is_refused(records, reference, tmp_path):
    wd = _copy(reference, tmp_path)
    (wd / "config.json").unlink()  # else the stored config refuses it first
    other = _config(records, **{"model.intermediate_size": 128})
    first = (
        r"first: params/bert/encoder/layer_0/mlp/intermediate/bias: checkpoint \(64,\) vs "
        r"target \(128,\)\); it was written for another model"
    )
    with pytest.raises(checkpoint.CheckpointMismatchError, match=first):
        _run(other, wd)
    # Refused, not set aside: the checkpoint is good, the config is not.
    assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir()) == [2, STEPS]
    assert not (wd / "bad_checkpoints").exists()


# The failed background write leaves a callback for orbax's closed asyncio loop,
# which Python reports later as "Event loop is closed" (unraisable, harmless).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_disk_full_during_save_fails_clearly_and_keeps_previous(
    records, reference, tmp_path, monkeypatch
):
    real = json_checkpoint_handler.JsonCheckpointHandler._save_fn

    async def full_disk(self, x, directory):
        # The background write of the final step's data state hits a full disk.
        if f"{STEPS}.orbax-checkpoint-tmp" in str(directory):
            raise OSError(errno.ENOSPC, "No space left on device", str(directory))
        return await real(self, x, directory)

    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", full_disk)
    wd = tmp_path / "full"
    message = (
        rf"saving checkpoint step {STEPS} to \S+ failed: the disk is full \(No space left "
        rf"on device\); the previous checkpoint \S+/checkpoints/2 is intact"
    )
    with pytest.raises(checkpoint.CheckpointSaveError, match=message):
        _run(_config(records), wd)
    monkeypatch.undo()
    assert not (wd / "results.json").exists()
    ckpt = checkpoint.Checkpointer(wd)
    assert ckpt.all_steps() == [2]
    # Step 2 reads back whole, equal to the reference's step 2.
    c = _config(records)
    task = tasks.get(c)
    mesh = sharding.make_mesh(c.mesh_shape, devices=jax.devices()[:1])
    tx, _ = optim.make_optimizer(c.optimizer, STEPS)
    dummy = task.model_inputs(task.dummy_batch())
    abstract, _ = train.plan_state(task.model(), tx, dummy, mesh, train.seed_key(c))
    got, _ = ckpt.restore(abstract, 2)
    want, _ = checkpoint.Checkpointer(reference[0]).restore(abstract, 2)
    for part in ("params", "opt_state"):
        for k, v in _flat(getattr(want, part)).items():
            assert_equal(_flat(getattr(got, part))[k], v, err_msg=k)
