"""Kill and resume through the real CLI: SIGKILL at random moments, SIGTERM, restart.

Pretraining (tiny model, real SST-2 text in TFRecords) runs to step STEPS
through `python -m bert_jax.main` (the reference); then the same command
is killed with SIGKILL four times (during a step, during an evaluation,
during an async checkpoint write), stopped with Ctrl-C (SIGINT, exit 130) and
with SIGTERM (exit 143) once each, at moments drawn from a seeded RNG,
restarting after each. Every restart must log the step it resumed from, and
it must be the newest complete checkpoint (a step directory with its commit
marker) on disk when it started: a trainer that ignored its checkpoints and
retrained from step 0 fails here, although it would end with the same bits.
The final parameters and optimizer state must equal the reference's bitwise,
and metrics.jsonl must hold every train and eval row exactly once with the
reference's values. Then the same for fine-tuning SST-2 from the real
all-MiniLM-L6-v2 checkpoint on a few real rows: results.json and predictions
equal the uninterrupted run's; and for a run of two processes (hosts) of 4
devices each, killed together and restarted.

A kill counts as "during an async checkpoint write" only if orbax's
`*.orbax-checkpoint-tmp` directory is still there once the process is dead,
and as "during an evaluation" only if the step's train row is in
metrics.jsonl and its eval row is not. Such a kill is retried (restart, kill
again) until it lands in its window, up to MAX_TRIES times; the tries are
counted and reported, and a kill that never lands fails the test.
"""

import json
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from bert_jax import checkpoint, configs, optim, sharding, tasks, train
from bert_jax.data import progress
from bert_jax.tools.predict import Predictor
from tests import multihost, train_data
from tests.cli_env import cli_env
from tests.numerics import assert_equal

REPO = Path(__file__).resolve().parents[1]
STEPS, CKPT_EVERY, EVAL_EVERY = 20, 2, 4
SEED = 20261129  # the kill moments
MAX_TRIES = 8  # kills that must land in a window (an eval, a checkpoint write)
# Every key the CLI runs set; the reference sets the same on the loaded config.
PRETRAIN = {
    "max_seq_length": 32,
    "max_predictions_per_seq": 5,
    "train_batch_size": 16,
    "eval_batch_size": 16,
    "model.vocab_size": 30522,
    # Narrower than tiny: checkpoints of 12 MB, so the 7 processes spend
    # their time starting, stopping and resuming rather than writing.
    "model.hidden_size": 32,
    "model.num_heads": 2,
    "model.intermediate_size": 64,
    # Sharded over data, FSDP and tensor axes: resume restores every shard.
    "mesh_shape": (2, 2, 2),
    "num_train_steps": STEPS,
    "log_every": 1,
    "eval_every": EVAL_EVERY,
    "checkpoint_every": CKPT_EVERY,
    "keep_checkpoints": 2,
}


def _env(cmd):
    """The CLI's environment: 8 host devices for a command that sets a mesh, else 1."""
    return cli_env(8 if any(a.startswith("--config.mesh_shape=") for a in cmd) else 1)


def _config(path: str, values: dict):
    return train_data.set_values(configs.load(path), values)


def _cli(config_path: str, workdir: Path, values: dict) -> list[str]:
    def fmt(v):
        return str(v)

    return [
        sys.executable,
        "-m",
        "bert_jax.main",
        f"--config={config_path}",
        f"--workdir={workdir}",
        *(f"--config.{k}={fmt(v)}" for k, v in values.items()),
    ]


def _tmp_dirs(ckpt_dir: Path) -> list[str]:
    try:
        return [e.name for e in os.scandir(ckpt_dir) if "orbax-checkpoint-tmp" in e.name]
    except FileNotFoundError:
        return []


def _newest_complete(workdir: Path) -> int | None:
    """The newest step directory with its commit marker: where a restart must resume."""
    d = workdir / "checkpoints"
    if not d.is_dir():
        return None
    done = [
        int(p.name) for p in d.iterdir() if p.name.isdigit() and (p / "commit_success.txt").exists()
    ]
    return max(done, default=None)


def _resumed_from(log: str) -> int | None:
    """The step a run logged it resumed from ("resumed from step N"), None if it started fresh."""
    found = [int(x) for x in re.findall(r"resumed from step (\d+)", log)]
    assert len(found) <= 1, found
    return found[0] if found else None


def _check_resumed(log: str, expected: int | None) -> int | None:
    """Asserts that a (re)start resumed from `expected`, the newest complete checkpoint
    when it started (None: there was none, so it must start fresh)."""
    got = _resumed_from(log)
    assert got == expected, (
        f"resumed from {got}, but the newest complete checkpoint was {expected}:\n{log[-3000:]}"
    )
    assert expected is None or got > 0
    return got


def _rows(workdir: Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


class Run:
    """One CLI process; its merged stdout/stderr lines arrive on a queue."""

    def __init__(self, cmd, workdir: Path):
        self.workdir = workdir
        self.expected = _newest_complete(workdir)  # where this start must resume
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=_env(cmd),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def next_step_line(self, timeout=240) -> int | None:
        """The step of the next "step k/N" progress line; None once the process ended."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                return None
            self.log.append(line)
            if line.startswith("step ") and "/" in line.split()[1]:
                return int(line.split()[1].split("/")[0])
        raise AssertionError("no progress line in time:\n" + "".join(self.log[-40:]))

    def wait_for_tmp_dir(self, timeout=240) -> bool:
        """Polls checkpoints/ for an orbax tmp directory (a save in flight)."""
        deadline = time.time() + timeout
        ckpt = self.workdir / "checkpoints"
        while time.time() < deadline:
            if _tmp_dirs(ckpt):
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.001)
        raise AssertionError("no checkpoint write in time")

    def kill(self, sig) -> int:
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=240)
        # Drain the rest of the output (for failure messages and the resume line).
        while (line := self.lines.get(timeout=30)) is not None:
            self.log.append(line)
        return rc

    def resumed(self) -> int | None:
        """The step it resumed from, checked against the checkpoints when it started."""
        return _check_resumed("".join(self.log), self.expected)


def _interrupt(cmd, workdir: Path, mode: str, rng) -> dict:
    """Starts `cmd` and interrupts it as `mode` says, again until a kill that must land
    in a window (an eval, a checkpoint write) does; what happened, with the tries."""
    for tries in range(1, MAX_TRIES + 1):
        event = _interrupt_once(cmd, workdir, mode, rng)
        if event.get("hit", True):
            return event | {"tries": tries}
    raise AssertionError(f"no {mode} kill landed in its window in {MAX_TRIES} tries: {event}")


def _interrupt_once(cmd, workdir: Path, mode: str, rng) -> dict:
    run = Run(cmd, workdir)
    first = run.next_step_line()  # training has started: old tmp dirs are cleaned up
    assert first is not None, "the run finished before it could be interrupted:\n" + "".join(
        run.log[-40:]
    )
    if mode == "ckpt":
        started = run.wait_for_tmp_dir()
        assert started, "the run ended without a checkpoint write:\n" + "".join(run.log[-40:])
        run.kill(signal.SIGKILL)
        hit = bool(_tmp_dirs(workdir / "checkpoints"))
        return {"mode": mode, "hit": hit, "resumed": run.resumed()}
    if mode == "eval":
        step = first
        while step is not None and (step % EVAL_EVERY or step == STEPS):
            step = run.next_step_line()
        assert step is not None, "no eval step left:\n" + "".join(run.log[-40:])
        run.kill(signal.SIGKILL)
        rows = [r for r in _rows(workdir) if r["step"] == step]
        train_row = any("train/loss" in r for r in rows)
        eval_row = any(k.startswith("eval/") for r in rows for k in r)
        hit = train_row and not eval_row
        return {"mode": mode, "hit": hit, "step": step, "resumed": run.resumed()}
    # "step" (SIGKILL), "sigint" (Ctrl-C) or "sigterm": a random moment among the next steps.
    for _ in range(int(rng.integers(0, 2))):
        assert run.next_step_line() is not None, "".join(run.log[-40:])
    time.sleep(float(rng.uniform(0.0, 0.3)))
    sig = {"sigterm": signal.SIGTERM, "sigint": signal.SIGINT}.get(mode, signal.SIGKILL)
    rc = run.kill(sig)
    event = {"mode": mode, "rc": rc, "resumed": run.resumed()}
    if mode in ("sigint", "sigterm"):
        # Saved where it stopped, and said so; the status a shell gives a killed command.
        log = "".join(run.log)
        assert rc == 128 + sig, log[-3000:]
        saved = _newest_complete(workdir)
        last = log.strip().splitlines()[-1]
        assert last == (
            f"bert_jax.main: stopped by {sig.name} at step {saved}; checkpoint saved in "
            f"{workdir}; rerun the same command to resume"
        ), log[-3000:]
        assert not (workdir / "results.json").exists()
        event["stopped_at"] = saved
    return event


def _finish(cmd, workdir: Path) -> str:
    expected = _newest_complete(workdir)
    out = subprocess.run(cmd, cwd=REPO, env=_env(cmd), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    _check_resumed(out.stdout + out.stderr, expected)
    return out.stdout + out.stderr


def _restore_state(workdir: Path, config):
    """The newest checkpoint's TrainState, planned like the trainer does (on the
    run's mesh: 8 devices for an explicit one, else 1)."""
    task = tasks.get(config)
    model = task.model()
    n = int(np.prod([d for d in config.mesh_shape if d > 0]))
    mesh = sharding.make_mesh(config.mesh_shape, devices=jax.devices()[:n])
    tx, _ = optim.make_optimizer(config.optimizer, config.num_train_steps)
    dummy = task.model_inputs(task.dummy_batch())
    abstract, _ = train.plan_state(model, tx, dummy, mesh, train.seed_key(config))
    state, _ = checkpoint.Checkpointer(workdir).restore(abstract)
    return state


def _assert_states_equal(got, want):
    assert int(got.step) == int(want.step)
    for part in ("params", "opt_state"):
        flat_got = dict(jax.tree_util.tree_leaves_with_path(getattr(got, part)))
        flat_want = dict(jax.tree_util.tree_leaves_with_path(getattr(want, part)))
        assert flat_got.keys() == flat_want.keys()
        for path, leaf in flat_want.items():
            name = f"{part}{jax.tree_util.keystr(path)}"
            assert_equal(np.asarray(flat_got[path]), np.asarray(leaf), err_msg=name)


def _leaves(x, path=""):
    """(path, leaf) of a JSON-able value, dict keys sorted."""
    if isinstance(x, dict):
        return [kv for k in sorted(x) for kv in _leaves(x[k], f"{path}/{k}")]
    if isinstance(x, list | tuple):
        return [kv for i, v in enumerate(x) for kv in _leaves(v, f"{path}[{i}]")]
    return [(path, x)]


def _assert_json_equal(got, want):
    """Same structure and strings; every number bitwise equal (and finite)."""
    g, w = _leaves(got), _leaves(want)
    assert [p for p, _ in g] == [p for p, _ in w]
    numbers = [i for i, (_, v) in enumerate(w) if isinstance(v, int | float)]
    assert [v for i, (_, v) in enumerate(g) if i not in numbers] == [
        v for i, (_, v) in enumerate(w) if i not in numbers
    ]
    assert_equal(np.array([g[i][1] for i in numbers]), np.array([w[i][1] for i in numbers]))


def _assert_rows_equal(got: list[dict], want: list[dict]):
    """Same rows in the same order, every train/ and eval/ value bitwise equal."""

    def key(r):
        return r["step"], "eval" if any(k.startswith("eval/") for k in r) else "train"

    assert [key(r) for r in got] == [key(r) for r in want]
    for g, w in zip(got, want, strict=True):
        names = sorted(k for k in w if k.startswith(("train/", "eval/")))
        assert sorted(k for k in g if k.startswith(("train/", "eval/"))) == names
        assert_equal([g[k] for k in names], [w[k] for k in names], err_msg=str(key(w)))


# ----------------------------------------------------------------------------
# Pretraining: 5 SIGKILLs + 1 SIGTERM.
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def records(shared_data, tmp_path_factory):
    return train_data.write_records(shared_data, tmp_path_factory.mktemp("records"))


@pytest.fixture(scope="module")
def pretrain_values(records):
    return PRETRAIN | {
        "data.train_files": records["train_files"],
        "data.eval_files": records["eval_files"],
    }


@pytest.fixture(scope="module")
def pretrain_reference(pretrain_values, tmp_path_factory):
    """The uninterrupted run: the same command, never stopped.

    Through the CLI too: the same 1-device program run in this process (8 host
    devices) can round its last bit differently (docs/reliability.md).
    """
    wd = tmp_path_factory.mktemp("straight")
    _finish(_cli("configs/pretrain.py:tiny", wd, pretrain_values), wd)
    c = _config(train_data.PRETRAIN_CONFIG + ":tiny", pretrain_values)
    return _restore_state(wd, c), _rows(wd), c


@pytest.mark.long_run
def test_pretraining_survives_sigkill_and_sigterm(pretrain_values, pretrain_reference, tmp_path):
    ref_state, ref_rows, c = pretrain_reference
    wd = tmp_path / "killed"
    cmd = _cli("configs/pretrain.py:tiny", wd, pretrain_values)
    rng = np.random.default_rng(SEED)
    modes = ["step", "eval", "ckpt", "sigint", "ckpt", "sigterm"]
    rng.shuffle(modes)
    events = [_interrupt(cmd, wd, mode, rng) for mode in modes]
    print("kills:", events)  # with the tries each window took (-s shows them)
    # Each restart resumed where the newest checkpoint was (checked in _interrupt);
    # after the first save that is past step 0.
    resumed = [e["resumed"] for e in events[1:]]
    assert any(r is not None and r > 0 for r in resumed), events
    assert checkpoint.Checkpointer(wd).latest_step() < STEPS
    _finish(cmd, wd)

    _assert_states_equal(_restore_state(wd, c), ref_state)
    rows = _rows(wd)
    train_steps = [r["step"] for r in rows if "train/loss" in r]
    eval_steps = [r["step"] for r in rows if "eval/mlm_accuracy" in r]
    assert train_steps == list(range(1, STEPS + 1))  # every step exactly once
    assert eval_steps == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
    _assert_rows_equal(rows, ref_rows)
    results = json.loads((wd / "results.json").read_text())
    assert results["step"] == STEPS
    _assert_json_equal(
        results["metrics"], {k: v for k, v in ref_rows[-1].items() if k.startswith("eval/")}
    )
    assert not _tmp_dirs(wd / "checkpoints")


# ----------------------------------------------------------------------------
# Fine-tuning: SST-2 from the real MiniLM checkpoint, 1 SIGKILL + 1 SIGTERM.
# ----------------------------------------------------------------------------

FT_STEPS = 4


def _few_rows(shared_data: Path, dest: Path, n_train=48, n_dev=32) -> Path:
    """The first real rows of SST-2 (train and dev) in GLUE's folder layout."""
    (dest / "SST-2").mkdir(parents=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        lines = (shared_data / "glue" / "SST-2" / f"{split}.tsv").read_text().splitlines()
        (dest / "SST-2" / f"{split}.tsv").write_text("\n".join(lines[: n + 1]) + "\n")
    return dest


@pytest.mark.long_run
def test_finetuning_survives_sigkill_and_sigterm(shared_data, minilm_dir, tmp_path):
    values = {
        "init_checkpoint": str(minilm_dir),
        "data.data_dir": str(_few_rows(shared_data, tmp_path / "glue")),
        "max_seq_length": 32,
        "train_batch_size": 8,
        "eval_batch_size": 32,
        "num_train_steps": FT_STEPS,
        "log_every": 1,
        "checkpoint_every": 2,
        "keep_checkpoints": 1,
        "data.length_bucket": 0,
    }
    c = _config(str(REPO / "configs" / "glue.py") + ":task=sst2", values)
    # The reference runs through the CLI too (see pretrain_reference).
    ref_wd = tmp_path / "straight"
    _finish(_cli("configs/glue.py:task=sst2", ref_wd, values), ref_wd)

    wd = tmp_path / "killed"
    cmd = _cli("configs/glue.py:task=sst2", wd, values)
    rng = np.random.default_rng(SEED + 1)
    # SIGTERM saves an off-interval step; the SIGKILL then hits the next save.
    events = [_interrupt(cmd, wd, mode, rng) for mode in ("sigterm", "ckpt")]
    assert events[1]["hit"], events
    assert checkpoint.Checkpointer(wd).latest_step() < FT_STEPS
    _finish(cmd, wd)

    ref_results = json.loads((ref_wd / "results.json").read_text())
    results = json.loads((wd / "results.json").read_text())
    assert results["step"] == ref_results["step"] == FT_STEPS
    _assert_json_equal(results["metrics"], ref_results["metrics"])
    _assert_states_equal(_restore_state(wd, c), _restore_state(ref_wd, c))
    train_steps = [r["step"] for r in _rows(wd) if "train/loss" in r]
    assert train_steps == list(range(1, FT_STEPS + 1))
    _assert_rows_equal(_rows(wd), _rows(ref_wd))
    # Predictions from each workdir (its newest checkpoint) on real dev sentences.
    dev = (tmp_path / "glue" / "SST-2" / "dev.tsv").read_text().splitlines()[1:9]
    sentences = [line.split("\t")[0] for line in dev]
    got, want = Predictor(str(wd))(sentences), Predictor(str(ref_wd))(sentences)
    _assert_json_equal(got, want)
    shutil.rmtree(ref_wd / "checkpoints")  # 250 MB each: not kept for the session
    shutil.rmtree(wd / "checkpoints")


# ----------------------------------------------------------------------------
# Ctrl-C, and a stop between the final checkpoint and results.json (in process).
# ----------------------------------------------------------------------------


def _in_process_config(pretrain_values, **overrides):
    # One device in process (the CLI runs take the mesh with 8).
    values = pretrain_values | {"num_train_steps": 6, "eval_every": 3, "mesh_shape": (-1, 1, 1)}
    values |= overrides
    return _config(train_data.PRETRAIN_CONFIG + ":tiny", values)


def test_ctrl_c_saves_stops_and_resumes_once(pretrain_values, tmp_path, monkeypatch, caplog):
    c = _in_process_config(pretrain_values)
    wd = tmp_path / "ctrl_c"
    write = progress.write

    def write_then_ctrl_c(line):  # Ctrl-C as step 2's progress line appears, as a user would
        write(line)
        if line.startswith("step 2/"):
            os.kill(os.getpid(), signal.SIGINT)  # its handler runs before the next line

    monkeypatch.setattr(progress, "write", write_then_ctrl_c)
    with pytest.raises(train.Stopped) as stopped:  # not KeyboardInterrupt, not a return
        train.run(c, str(wd), devices=jax.devices()[:1])
    monkeypatch.undo()
    assert (stopped.value.step, stopped.value.signum) == (2, signal.SIGINT)
    assert str(stopped.value) == f"stopped by SIGINT at step 2; checkpoint saved in {wd}"
    assert checkpoint.Checkpointer(wd).latest_step() == 2  # saved where it stopped
    assert not _tmp_dirs(wd / "checkpoints") and not (wd / "results.json").exists()
    with caplog.at_level(logging.INFO):
        train.run(c, str(wd), devices=jax.devices()[:1])
    assert _resumed_from(caplog.text) == 2
    rows = _rows(wd)
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rows if "eval/mlm_accuracy" in r] == [3, 6]


def test_second_ctrl_c_stops_at_once():
    with checkpoint.PreemptionGuard((signal.SIGTERM, signal.SIGINT)) as guard:
        os.kill(os.getpid(), signal.SIGINT)
        assert guard.should_stop()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs here at the latest


def test_stop_before_results_json_logs_the_final_eval_once(pretrain_values, tmp_path):
    """Stopped after the final checkpoint but before results.json: the rerun
    evaluates the last step again and replaces, not repeats, its eval row."""
    c = _in_process_config(pretrain_values)
    wd = tmp_path / "wd"
    _, metrics = train.run(c, str(wd), devices=jax.devices()[:1])
    (wd / "results.json").unlink()
    _, again = train.run(c, str(wd), devices=jax.devices()[:1])
    _assert_json_equal(again, metrics)
    rows = _rows(wd)
    assert [r["step"] for r in rows if "eval/mlm_accuracy" in r] == [3, 6]
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4, 5, 6]
    _assert_json_equal(json.loads((wd / "results.json").read_text())["metrics"], metrics)


# ----------------------------------------------------------------------------
# Two processes (hosts) of 4 devices each, killed together and restarted.
# ----------------------------------------------------------------------------

MULTI_STEPS = 6


def _kill_when_saved(cmd, workdir: Path, log_dir: Path) -> bool:
    """Starts the two hosts and SIGKILLs both once a complete checkpoint exists; False
    if the run ended first (the kill did not land mid-run)."""
    procs = multihost.launch(cmd, log_dir=log_dir)
    while _newest_complete(workdir) is None and all(p.poll() is None for p in procs):
        time.sleep(0.005)
    for p in procs:
        p.send_signal(signal.SIGKILL)
    codes = [p.wait(timeout=60) for p in procs]
    for i, code in enumerate(codes):
        log = (log_dir / f"process_{i}.log").read_text()
        assert code in (0, -signal.SIGKILL), f"process {i} exited {code}:\n{log[-4000:]}"
    return codes == [-signal.SIGKILL] * len(procs) and _newest_complete(workdir) is not None


def test_two_processes_killed_and_resumed_match_the_uninterrupted_run(pretrain_values, tmp_path):
    """2 hosts x 4 CPU devices (gloo), both SIGKILLed once a checkpoint is complete and
    restarted: every host resumes from it, and the end is bitwise the two hosts' run
    that was never stopped."""
    values = pretrain_values | {
        "num_train_steps": MULTI_STEPS,
        "eval_every": 0,  # the final eval only: the steps are what is compared
        "data.num_shards": 2,  # one shard per host
    }
    ref_wd = tmp_path / "straight"
    multihost.finish(multihost.launch(_cli("configs/pretrain.py:tiny", ref_wd, values)))

    wd = tmp_path / "killed"
    cmd = _cli("configs/pretrain.py:tiny", wd, values)
    for tries in range(1, MAX_TRIES + 1):
        shutil.rmtree(wd, ignore_errors=True)
        if _kill_when_saved(cmd, wd, tmp_path / f"try_{tries}"):
            break
    else:
        pytest.fail(f"the run always ended before a checkpoint could be killed ({MAX_TRIES} tries)")
    print(f"the two-process kill landed after a checkpoint in {tries} tries")
    expected = _newest_complete(wd)
    assert 0 < expected < MULTI_STEPS and not (wd / "results.json").exists()
    outs = multihost.finish(multihost.launch(cmd))
    for out in outs:  # each host logs where it resumed
        _check_resumed(out, expected)

    c = _config(train_data.PRETRAIN_CONFIG + ":tiny", values)
    _assert_states_equal(_restore_state(wd, c), _restore_state(ref_wd, c))
    _assert_rows_equal(_rows(wd), _rows(ref_wd))
    assert [r["step"] for r in _rows(wd) if "train/loss" in r] == list(range(1, MULTI_STEPS + 1))
