"""Sweeps: the helpers, point names, checks, quoting, and a real sweep that is
interrupted and resumed (MiniLM on the real SST-2 files)."""

import csv
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bert_jax import configs
from bert_jax.experiments import sweep
from tests.cli_env import cli_env
from tests.numerics import assert_close

REPO = Path(__file__).resolve().parents[2]
GLUE = str(REPO / "configs" / "glue.py")


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")


def _sweep_file(tmp_path, body: str) -> str:
    path = tmp_path / "my_sweep.py"
    path.write_text(
        "from bert_jax.experiments.sweep import chain, product, sweep, zipped\n\n" + body
    )
    return str(path)


def _cli(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", "bert_jax.experiments.sweep", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
    )


def test_helpers_build_the_points_in_order():
    lr = sweep.sweep("optimizer.learning_rate", [5e-5, 2e-5])
    seeds = sweep.sweep("seed", range(3))
    points = sweep.product(lr, seeds)
    assert points == [
        {"optimizer.learning_rate": a, "seed": s} for a in (5e-5, 2e-5) for s in range(3)
    ]
    assert sweep.zipped(lr, sweep.sweep("seed", [7, 8])) == [
        {"optimizer.learning_rate": 5e-5, "seed": 7},
        {"optimizer.learning_rate": 2e-5, "seed": 8},
    ]
    assert sweep.chain(lr, seeds)[2:] == [{"seed": 0}, {"seed": 1}, {"seed": 2}]
    with pytest.raises(ValueError, match="set by two axes"):
        sweep.product(seeds, seeds)
    with pytest.raises(ValueError, match="different lengths"):
        sweep.zipped(lr, seeds)
    with pytest.raises(ValueError, match="'seed', ...\\) has no values"):
        sweep.sweep("seed", [])


def test_point_names_are_readable_unique_and_path_safe():
    assert (
        sweep.point_name({"glue_task": "mrpc", "optimizer.learning_rate": 3e-5, "seed": 1})
        == "glue_task=mrpc,optimizer.learning_rate=3e-05,seed=1"
    )
    a = sweep.point_name({"data.data_dir": "/data/a b"})
    b = sweep.point_name({"data.data_dir": "/data/a:b"})
    assert a != b and "/" not in a and " " not in a and a.startswith("data.data_dir=-data-a-b-")


def test_the_paper_sweeps_check_against_their_configs():
    points = sweep.load_sweep(str(REPO / "experiments" / "glue_paper.py"))
    # 4 learning rates x (3 seeds x 4 large tasks + 5 seeds x 5 small tasks)
    assert len(points) == 4 * (3 * 4 + 5 * 5)
    assert {p["optimizer.learning_rate"] for p in points} == {5e-5, 4e-5, 3e-5, 2e-5}
    mrpc = [p for p in points if p["glue_task"] == "mrpc"]
    assert sorted({p["seed"] for p in mrpc}) == [0, 1, 2, 3, 4]
    names = [n for n, _ in sweep.plan(points, configs.load(GLUE), {}, "glue_paper")]
    assert len(set(names)) == len(names)
    for version, batch in (("1.1", 32), ("2.0", 48)):
        squad = sweep.load_sweep(f"{REPO}/experiments/squad_paper.py:version={version}")
        planned = sweep.plan(squad, configs.load(str(REPO / "configs" / "squad.py")), {}, "squad")
        assert len(planned) == 6
        assert {o["train_batch_size"] for _, o in planned} == {batch}
        assert {o["data.eval_file"] for _, o in planned} == {f"dev-v{version}.json"}


SEEDS = "def get_sweep(arg=None):\n    return sweep('seed', [0, 1])\n"


@pytest.mark.parametrize(
    "body, message, extra",
    [
        ("def get_sweep(arg=None):\n    return []\n", "is empty", ()),
        (
            "def get_sweep(arg=None):\n    return sweep('optimizer.learnin_rate', [1e-5])\n",
            "point 0 .*unknown config key 'optimizer.learnin_rate'",
            (),
        ),
        (
            "def get_sweep(arg=None):\n    return sweep('seed', ['one'])\n",
            "config key 'seed'",
            (),
        ),
        ("def get_sweep(arg=None):\n    return sweep('seed', [1, 1])\n", "points repeat", ()),
        ("X = 1\n", "defines no get_sweep", ()),
        ("def get_sweep(arg=None):\n    return [1]\n", "point 0 is not a dict", ()),
        # The command line may not change a key the sweep sets: seed=0/ would
        # hold a run of seed 5.
        (
            SEEDS,
            r"--config.seed is set by sweep .* \(point 0: seed=0\)",
            ("--config.seed=5", "--run=print"),
        ),
        (
            SEEDS,
            "--run=tpu needs --tpu, --zone and --tpu_type .missing: --tpu, --zone.$",
            ("--run=tpu", "--tpu_type=v5p-8"),
        ),
        (
            SEEDS,
            "unknown TPU type 'v9x-8'",
            ("--run=tpu", "--tpu=t", "--zone=us-east5-a", "--tpu_type=v9x-8"),
        ),
    ],
)
def test_bad_sweeps_are_refused_naming_the_point_and_key(tmp_path, body, message, extra):
    out = _cli(
        f"--sweep={_sweep_file(tmp_path, body)}",
        f"--config={GLUE}:tiny",
        f"--workdir_root={tmp_path / 'runs'}",
        *extra,
    )
    # One line, `prog: error: ...`, exit status 1, no traceback, nothing written.
    assert out.returncode == 1, out.stderr[-2000:]
    (line,) = out.stderr.splitlines()
    assert line.startswith("bert_jax.experiments.sweep: error: "), line
    assert re.search(message, line), line
    assert not (tmp_path / "runs").exists()


def test_printed_commands_keep_a_hostile_value_one_argument(tmp_path):
    hostile = 'x\'; touch PWNED; echo "$(touch PWNED2)" #'
    body = f"def get_sweep(arg=None):\n    return sweep('data.vocab_file', [{hostile!r}])\n"
    out = _cli(
        f"--sweep={_sweep_file(tmp_path, body)}",
        f"--config={GLUE}:tiny",
        f"--workdir_root={tmp_path / 'runs'}",
        "--config.seed=3",
        "--run=print",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (line,) = out.stdout.strip().splitlines()
    argv = shlex.split(line)
    assert argv[:3] == ["python", "-m", "bert_jax.main"]
    assert f"--config.data.vocab_file={hostile}" in argv
    assert "--config.seed=3" in argv
    # Through a real shell: the printed line runs no part of the value.
    echoed = subprocess.run(
        ["bash", "-c", "printf '%s\\n' " + line.split(" ", 1)[1]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"--config.data.vocab_file={hostile}" in echoed.stdout.splitlines()
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "PWNED2").exists()


def _wait_for(predicate, proc, what: str):
    """Waits for an event; the 15-minute limit only turns a hang into a failure."""
    deadline = time.monotonic() + 900
    while not predicate():
        if proc.poll() is not None:
            tail = proc.stderr.read()[-3000:] if proc.stderr else ""
            raise AssertionError(f"the sweep ended (exit {proc.returncode}) before {what}:\n{tail}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"hung: no sign after 15 minutes that {what}")
        time.sleep(0.1)


@pytest.mark.long_run
def test_real_sweep_is_interrupted_and_resumed(tmp_path, minilm_dir, shared_data):
    """2 learning rates x 2 seeds, MiniLM on the real SST-2 files: SIGTERM in the
    second point's training, then the same command finishes the sweep."""
    body = (
        "def get_sweep(arg=None):\n"
        "    return product(sweep('optimizer.learning_rate', [1e-4, 3e-5]), "
        "sweep('seed', [0, 1]))\n"
    )
    root = tmp_path / "runs"
    # The real SST-2 files, cut to their first rows (192 to train on, 256 dev
    # sentences to choose by): small settings (rows of 32 tokens, fixed shapes:
    # one compile for all points), real text and labels.
    sst2 = tmp_path / "glue" / "SST-2"
    sst2.mkdir(parents=True)
    for name, rows in (("train.tsv", 192), ("dev.tsv", 256)):
        lines = (shared_data / "glue" / "SST-2" / name).read_text(encoding="utf-8").splitlines()
        (sst2 / name).write_text("\n".join(lines[: rows + 1]) + "\n", encoding="utf-8")
    cmd = [
        sys.executable, "-m", "bert_jax.experiments.sweep",
        f"--sweep={_sweep_file(tmp_path, body)}",
        f"--config={GLUE}:task=sst2", f"--workdir_root={root}",
        f"--config.init_checkpoint={minilm_dir}",
        f"--config.data.data_dir={tmp_path / 'glue'}", "--config.max_seq_length=32",
        "--config.train_batch_size=16", "--config.num_train_steps=12",
        "--config.eval_batch_size=128", "--config.log_every=1",
        "--config.checkpoint_every=12", "--config.data.length_bucket=0",
    ]  # fmt: skip
    env = _env() | {"XLA_FLAGS": cli_env(1)["XLA_FLAGS"]}
    names = [f"optimizer.learning_rate={lr},seed={s}" for lr in ("0.0001", "3e-05") for s in (0, 1)]
    first, second = root / names[0], root / names[1]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)

    def second_is_training():
        metrics = second / "metrics.jsonl"
        return metrics.exists() and len(metrics.read_text().splitlines()) >= 3

    _wait_for(second_is_training, proc, "the second point trained a few steps")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=900)  # a guard against a hang, not a bound
    assert proc.returncode == 143, stderr[-3000:]  # 128 + SIGTERM: interrupted, resumable
    assert "the same command resumes it" in stderr
    assert (first / "results.json").exists() and not (second / "results.json").exists()
    stopped_at = int(json.loads((second / "metrics.jsonl").read_text().splitlines()[-1])["step"])
    assert 0 < stopped_at < 12
    assert (second / "checkpoints").is_dir()  # the preempted point saved where it stopped
    first_results = (first / "results.json").read_bytes()

    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{names[0]}: finished, skipped" in again.stderr
    assert (first / "results.json").read_bytes() == first_results  # not run again
    for name in names:
        wd = root / name
        results = json.loads((wd / "results.json").read_text())
        assert results["step"] == 12
        point = json.loads((wd / "sweep_point.json").read_text())
        assert point["name"] == name and point["overrides"]["seed"] in (0, 1)
        steps = [
            json.loads(r)["step"]
            for r in (wd / "metrics.jsonl").read_text().splitlines()
            if "train/loss" in r
        ]
        assert steps == list(range(1, 13))  # every step logged exactly once, resumed or not
        assert 0.0 <= results["metrics"]["eval/accuracy"] <= 1.0
    # The interrupted point went on from the checkpoint it saved when stopped.
    assert f"resumed from step {stopped_at}" in (second / "run.log").read_text()
    accuracies = [
        json.loads((root / n / "results.json").read_text())["metrics"]["eval/accuracy"]
        for n in names
    ]
    # The results tool: the learning rate with the higher median over the seeds
    # is chosen (independently: from the results.json files), and the plots.
    # (The leaderboard files of the best run: tests/experiments/test_results.py.)
    out = tmp_path / "results"
    tab = subprocess.run(
        [sys.executable, "-m", "bert_jax.experiments.results", str(root), f"--out={out}"],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert tab.returncode == 0, tab.stderr[-3000:]
    by_lr = {
        lr: [a for n, a in zip(names, accuracies, strict=True) if lr in n]
        for lr in ("0.0001", "3e-05")
    }
    medians = {lr: sum(v) / 2 for lr, v in by_lr.items()}
    best = max(medians, key=medians.get)
    rows = list(csv.DictReader((out / "results.csv").open()))
    sst2 = next(
        r for r in rows if r["task"] == "SST-2" and r["reference_source"].startswith("BERT")
    )
    assert sst2["seeds"] == "2"
    assert float(sst2["setting"].split("lr=")[1].split(",")[0]) == float(best)
    assert_close(float(sst2["median"]), 100 * medians[best], atol=1e-4)
    assert "SST-2" in (out / "results.md").read_text()
    assert {p.name for p in (out / "plots").glob("*.png")} == {
        "sst2_curves.png",
        "sst2_dev_vs_lr.png",
    }


def test_tpu_run_sends_each_point_to_the_slice(tmp_path):
    hostile = "a b'; touch PWNED #"
    body = (
        "def get_sweep(arg=None):\n"
        f"    return product(sweep('seed', [0, 1]), sweep('data.vocab_file', [{hostile!r}]))\n"
    )
    out = _cli(
        f"--sweep={_sweep_file(tmp_path, body)}",
        f"--config={GLUE}:tiny",
        "--workdir_root=gs://bucket/sweep",
        "--run=tpu",
        "--tpu=bert-v5p",
        "--zone=us-east5-a",
        "--tpu_type=v5p-16",
        "--dry_run",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    commands = [shlex.split(line) for line in out.stdout.strip().splitlines()]
    runs = [c for c in commands if any("bert_jax.main" in a for a in c)]
    assert len(runs) == 2
    for seed, cmd in enumerate(runs):
        assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "bert-v5p"]
        assert "--worker=all" in cmd and "--zone=us-east5-a" in cmd
        remote = next(a for a in cmd if a.startswith("--command="))
        words = shlex.split(remote.removeprefix("--command="))
        assert f"--config.data.vocab_file={hostile}" in words
        assert f"--config.seed={seed}" in words and "--jax_distributed" in words
        # The workers read the config from the code `launch setup` shipped.
        assert "--config=configs/glue.py:tiny" in words
        workdir = next(w for w in words if w.startswith("--workdir="))
        assert workdir.startswith(f"--workdir=gs://bucket/sweep/seed={seed},data.vocab_file=")


def test_tpu_run_refuses_a_config_the_workers_cannot_read(tmp_path):
    assert sweep.remote_config_spec("configs/glue.py:task=mrpc", str(REPO), cwd=str(REPO)) == (
        "configs/glue.py:task=mrpc"
    )
    outside = tmp_path / "glue.py"
    outside.write_text((REPO / "configs" / "glue.py").read_text())
    out = _cli(
        f"--sweep={_sweep_file(tmp_path, SEEDS)}",
        f"--config={outside}:tiny",
        "--workdir_root=gs://bucket/sweep",
        *("--run=tpu", "--tpu=t", "--zone=us-east5-a", "--tpu_type=v5p-16", "--dry_run"),
    )
    assert out.returncode == 1 and not out.stdout, out.stderr[-2000:]
    (line,) = out.stderr.splitlines()
    assert line.startswith(f"bert_jax.experiments.sweep: error: --config={outside}:tiny: ")
    assert f"is outside this checkout ({REPO})" in line


def test_a_point_stopped_by_a_signal_stops_the_sweep_as_interrupted(tmp_path, monkeypatch):
    """A point whose trainer exits 143 (it checkpointed on SIGTERM) is interrupted,
    not failed: the sweep stops there with that status; a point that exits 1 failed,
    and the sweep goes on past it."""
    exits = {"a": 0, "b": 1, "c": 143, "d": 0}
    trainer = (
        "import json, pathlib, sys\n"
        "wd, rc = pathlib.Path(sys.argv[1]), int(sys.argv[2])\n"
        "if rc == 0:\n"
        "    (wd / 'results.json').write_text(json.dumps({'metrics': {}}))\n"
        "sys.exit(rc)\n"
    )
    monkeypatch.setattr(
        sweep,
        "main_argv",
        lambda spec, wd, overrides, python: [python, "-c", trainer, wd, str(exits[overrides["k"]])],
    )
    root = tmp_path / "runs"
    planned = [(k, {"k": k}) for k in exits]
    with pytest.raises(sweep.Interrupted, match="c stopped on a signal .exit 143") as e:
        sweep.run_local(root, planned, GLUE, lambda name, overrides: {"name": name})
    assert e.value.status == 143
    assert (root / "a" / "results.json").exists() and (root / "b" / "run.log").exists()
    assert not (root / "c" / "results.json").exists()
    assert not (root / "d").exists()  # never started: the same command resumes at c
