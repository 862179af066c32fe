"""The TPU VM launcher without Google Cloud: the exact gcloud commands for a 2-worker
v5p slice, quoting, bad input, the CLI, `execute` against a fake gcloud, and the
remote shell scripts run by bash on this machine standing in for a worker."""

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bert_jax.experiments import launch
from bert_jax.experiments.tpu_slices import Slice

REPO = Path(__file__).resolve().parents[2]
HOSTILE = "--config.name=x'; rm -rf / #"
MAIN = ["python", "-m", "bert_jax.main", "--config=configs/pretrain.py:model=base"]
WORKDIR = "--workdir=gs://my-bucket/runs/base"
V5P = Slice(name="bert-v5p", zone="us-east5-a", tpu_type="v5p-16", project="my-project")
WHERE = ["--zone=us-east5-a", "--project=my-project"]

# The remote scripts, as the workers' shell receives them. The stop script is
# run by bash below (test_stopping_*), against real processes.
CLEAR = launch._stop_tpu_holders(launch.STOP_TIMEOUT_S)
LOG, PID, EXIT = ('"$HOME"/bert_jax_run.log' + ext for ext in ("", ".pid", ".exit"))
FOLLOW = (
    f'pid=$(cat {PID} 2>/dev/null) || {{ echo "no job was started here"; exit 1; }}; '
    f"tail -n +1 -F --pid=$pid {LOG} 2>/dev/null; exit $(cat {EXIT} 2>/dev/null || echo 1)"
)


def _remote(cmd: list[str]) -> str:
    (arg,) = [a for a in cmd if a.startswith("--command=")]
    return arg.removeprefix("--command=")


@pytest.mark.parametrize(
    "tpu_type, chips, workers, accelerator, runtime",
    [
        ("v5p-8", 4, 1, "v5p-8", "v2-alpha-tpuv5"),
        ("v5p-16", 8, 2, "v5p-16", "v2-alpha-tpuv5"),
        ("v5p-128", 64, 16, "v5p-128", "v2-alpha-tpuv5"),
        ("v4-8", 4, 1, "v4-8", "tpu-ubuntu2204-base"),
        ("v4-32", 16, 4, "v4-32", "tpu-ubuntu2204-base"),
        ("v5e-1", 1, 1, "v5litepod-1", "v2-alpha-tpuv5-lite"),
        ("v5e-8", 8, 1, "v5litepod-8", "v2-alpha-tpuv5-lite"),
        ("v5e-16", 16, 4, "v5litepod-16", "v2-alpha-tpuv5-lite"),
        ("v5litepod-32", 32, 8, "v5litepod-32", "v2-alpha-tpuv5-lite"),
        ("v6e-8", 8, 1, "v6e-8", "v2-alpha-tpuv6e"),
        ("v6e-256", 256, 64, "v6e-256", "v2-alpha-tpuv6e"),
    ],
)
def test_slice_sizes_names_and_runtimes(tpu_type, chips, workers, accelerator, runtime):
    s = Slice(name="t", zone="europe-west4-b", tpu_type=tpu_type)
    assert (s.chips, s.workers, s.accelerator_type, s.runtime) == (
        chips,
        workers,
        accelerator,
        runtime,
    )
    assert Slice("t", "us-east5-a", tpu_type, runtime_version="my-image").runtime == "my-image"


def test_the_commands_for_a_two_worker_v5p_slice():
    assert V5P.workers == 2
    create = ["gcloud", "compute", "tpus", "queued-resources", "create", "bert-v5p"]
    create += ["--node-id=bert-v5p", "--accelerator-type=v5p-16"]
    create += ["--runtime-version=v2-alpha-tpuv5", *WHERE]
    assert launch.create_commands(V5P) == [create]
    spot = Slice("bert-v5p", "us-east5-a", "v5p-16", project="my-project", spot=True)
    assert launch.create_commands(spot) == [create + ["--spot"]]
    reserved = Slice("bert-v5p", "us-east5-a", "v5p-16", project="my-project", reserved=True)
    assert launch.create_commands(reserved) == [create + ["--reserved"]]
    assert launch.describe_command(V5P) == [
        *("gcloud", "compute", "tpus", "queued-resources", "describe", "bert-v5p"),
        *("--format=value(state.state)", *WHERE),
    ]

    install = (
        'set -e; cd "$HOME"; rm -rf bert_jax; tar -xzf bert_jax.tar.gz; rm -f bert_jax.tar.gz; '
        "python3 -m pip install --quiet --user --upgrade uv; [ -x bert_jax_venv/bin/python ] "
        "|| python3 -m uv venv --python 3.12 bert_jax_venv; python3 -m uv pip install "
        '--python bert_jax_venv/bin/python -e ./bert_jax "jax[tpu]"'
    )
    ssh_all = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "bert-v5p", "--worker=all"]
    # git archive ships the directory it runs in: the checkout's root, with
    # pyproject.toml and configs/ (not the bert_jax package alone).
    assert str(REPO) == launch.REPO_ROOT and (REPO / "pyproject.toml").is_file()
    assert launch.setup_commands(V5P, ref="v1.0") == [
        [
            *("git", "-C", launch.REPO_ROOT, "archive", "--format=tar.gz", "--prefix=bert_jax/"),
            *("--output=/tmp/bert_jax-bert-v5p.tar.gz", "v1.0"),
        ],
        [
            *("gcloud", "compute", "tpus", "tpu-vm", "scp", "/tmp/bert_jax-bert-v5p.tar.gz"),
            *("bert-v5p:bert_jax.tar.gz", "--worker=all", *WHERE),
        ],
        [*ssh_all, f"--command={install}", *WHERE],
    ]

    start = (
        'set -e; cd "$HOME"/bert_jax; . "$HOME"/bert_jax_venv/bin/activate; '
        f'export PYTHONUNBUFFERED=1; rm -f {EXIT}; {{ trap "" HUP; rc=0; python -m bert_jax.main '
        "--config=configs/pretrain.py:model=base --workdir=gs://my-bucket/runs/base "
        f"--config.seed=1 --jax_distributed || rc=$?; echo $rc > {EXIT}; }} "
        f"> {LOG} 2>&1 < /dev/null & echo $! > {PID}"
    )
    assert launch.run_commands(V5P, [*MAIN, WORKDIR, "--config.seed=1"]) == [
        [*ssh_all, f"--command={CLEAR}", *WHERE],
        [*ssh_all, f"--command={start}", *WHERE],
        [*ssh_all[:-1], "--worker=0", f"--command={FOLLOW}", *WHERE],
    ]
    assert launch.stop_commands(V5P) == [[*ssh_all, f"--command={CLEAR}", *WHERE]]
    assert launch.delete_commands(V5P) == [
        [*create[:4], "delete", "bert-v5p", "--force", "--quiet", *WHERE]
    ]


def test_dry_run_prints_each_command_shell_quoted(capsys):
    commands = launch.run_commands(V5P, [*MAIN, WORKDIR, HOSTILE])
    launch.execute(commands, dry_run=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [shlex.join(c) for c in commands]
    assert [shlex.split(line) for line in lines] == commands


def test_a_hostile_override_reaches_the_workers_as_one_argument():
    start = _remote(launch.run_commands(V5P, [*MAIN, WORKDIR, HOSTILE])[1])
    words = shlex.split(start)
    assert words.count(HOSTILE) == 1 and not any("-rf" in w for w in words if w != HOSTILE)
    assert words[words.index(HOSTILE) + 1] == "--jax_distributed"
    # Single-host slices run the command as given: no --jax_distributed, any workdir.
    v5p8 = Slice("one", "us-east5-a", "v5p-8")
    start = _remote(launch.run_commands(v5p8, [*MAIN, "--workdir", "/tmp/w", HOSTILE])[1])
    words = shlex.split(start)
    assert HOSTILE in words and "--jax_distributed" not in words and "/tmp/w" in words


@pytest.mark.parametrize(
    "make, value",
    [
        (lambda: Slice("t", "us-east5-a", "v7x-8"), "'v7x-8'"),
        (lambda: Slice("t", "us-east5-a", "v5p-12"), "'v5p-12'"),
        (lambda: Slice("t", "us-east5-a", "v6e-2"), "'v6e-2'"),
        (lambda: Slice("t", "us-east5-a", "tpu-v5p"), "'tpu-v5p'"),
        (lambda: Slice("t", "us-east5", "v5p-8"), "'us-east5'"),
        (lambda: Slice("t", "US-EAST5-A", "v5p-8"), "'US-EAST5-A'"),
        (lambda: Slice("Bert_v5p", "us-east5-a", "v5p-8"), "'Bert_v5p'"),
        (lambda: Slice("t", "us-east5-a", "v5p-8", project="a b"), "'a b'"),
        (lambda: Slice("t", "us-east5-a", "v5p-8", spot=True, reserved=True), "--reserved"),
        (lambda: launch.run_commands(V5P, [*MAIN, "--workdir=runs/x"]), "--workdir=runs/x"),
        (lambda: launch.run_commands(V5P, [*MAIN, "--workdir", "/w"]), "--workdir=/w"),
        (lambda: launch.run_commands(V5P, []), "no command to run"),
        (lambda: launch.run_commands(V5P, MAIN), "needs --workdir"),
        (lambda: launch.logs_command(V5P, worker=2), "worker 2"),
        (lambda: launch.setup_commands(V5P, ref="--output=/etc/x"), "--output=/etc/x"),
    ],
)
def test_bad_input_fails_naming_the_value(make, value):
    with pytest.raises(ValueError, match=re.escape(value)):
        make()


def test_an_unknown_type_lists_the_generations_and_the_name_format():
    with pytest.raises(ValueError) as e:
        Slice("t", "us-east5-a", "v7x-8")
    assert all(w in str(e.value) for w in ("v4", "v5p", "v5e", "v6e", "v5p-16"))


def _cli(*args: str, env=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bert_jax.experiments.launch", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_cli_dry_run_prints_the_commands():
    where = ["--tpu=bert-v5p", "--zone=us-east5-a", "--tpu_type=v5p-16", "--project=my-project"]
    out = _cli("run", *where, "--dry_run", "--", *MAIN, WORKDIR, HOSTILE)
    assert out.returncode == 0, out.stderr
    expected = launch.run_commands(V5P, [*MAIN, WORKDIR, HOSTILE])
    assert out.stdout.splitlines() == [shlex.join(c) for c in expected]
    out = _cli("create", *where, "--spot", "--dry_run")
    assert out.returncode == 0, out.stderr
    spot = Slice("bert-v5p", "us-east5-a", "v5p-16", project="my-project", spot=True)
    expected = [*launch.create_commands(spot), launch.describe_command(spot)]
    assert out.stdout.splitlines() == [shlex.join(c) for c in expected]


def test_cli_bad_input_exits_nonzero_with_the_message():
    out = _cli("delete", "--tpu=t", "--zone=us-east5-a", "--tpu_type=v7x-8", "--dry_run")
    assert out.returncode != 0 and not out.stdout
    assert "unknown TPU type 'v7x-8'" in out.stderr and "v5p-16" in out.stderr
    out = _cli("run", "--tpu=t", "--zone=us-east5-a", "--tpu_type=v5p-16", "--dry_run")
    assert out.returncode != 0 and "no command to run" in out.stderr


# ----------------------------------------------------------------------------
# Not a dry run: a fake gcloud on PATH records what it is asked.
# ----------------------------------------------------------------------------


@pytest.fixture
def fake_gcloud(tmp_path, monkeypatch):
    """gcloud that records its argv; `describe` answers FAKE_STATES in turn (the last
    one from then on); an argv holding FAKE_FAIL fails with exit status 7."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir()
    script = bin_dir / "gcloud"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "calls = os.environ['FAKE_CALLS']\n"
        "with open(calls, 'a') as f:\n"
        "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "if os.environ.get('FAKE_FAIL') in sys.argv:\n"
        "    sys.exit('fake gcloud: failing on purpose')\n"
        "if 'describe' in sys.argv:\n"
        "    states = os.environ.get('FAKE_STATES', 'ACTIVE').split(',')\n"
        "    n = sum('describe' in line for line in open(calls)) - 1\n"
        "    print(states[min(n, len(states) - 1)])\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.delenv("FAKE_FAIL", raising=False)

    def recorded() -> list[list[str]]:
        return [json.loads(line) for line in calls.read_text().splitlines()]

    return recorded


def test_execute_runs_each_command_and_waits_until_active(fake_gcloud, monkeypatch):
    monkeypatch.setenv("FAKE_STATES", "PROVISIONING,ACTIVE")
    launch.execute(launch.create_commands(V5P), dry_run=False)
    launch.wait_until_active(V5P, poll_s=0)
    commands = launch.run_commands(V5P, [*MAIN, WORKDIR, HOSTILE]) + launch.delete_commands(V5P)
    launch.execute(commands, dry_run=False)
    describe = launch.describe_command(V5P)
    expected = [*launch.create_commands(V5P), describe, describe, *commands]
    assert fake_gcloud() == [c[1:] for c in expected]


def test_a_failing_command_stops_execute_and_is_named(fake_gcloud, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "--worker=all")
    commands = launch.run_commands(V5P, [*MAIN, WORKDIR])
    with pytest.raises(RuntimeError, match="exit status 1") as e:
        launch.execute(commands, dry_run=False)
    assert shlex.join(commands[0]) in str(e.value)
    assert len(fake_gcloud()) == 1  # nothing after the failure


@pytest.mark.parametrize("state", ["FAILED", "SUSPENDED"])
def test_waiting_fails_on_a_failed_request(fake_gcloud, monkeypatch, state):
    monkeypatch.setenv("FAKE_STATES", f"WAITING_FOR_RESOURCES,{state}")
    with pytest.raises(RuntimeError, match=f"bert-v5p is {state}"):
        launch.wait_until_active(V5P, poll_s=0)


def test_waiting_gives_up_after_the_timeout(fake_gcloud, monkeypatch):
    monkeypatch.setenv("FAKE_STATES", "WAITING_FOR_RESOURCES")
    with pytest.raises(TimeoutError, match="still WAITING_FOR_RESOURCES after 0 min"):
        launch.wait_until_active(V5P, timeout_s=0, poll_s=0)


def test_cli_create_runs_gcloud(fake_gcloud, monkeypatch):
    where = ["--tpu=bert-v5p", "--zone=us-east5-a", "--tpu_type=v5p-16", "--project=my-project"]
    out = _cli("create", *where, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert "bert-v5p: ACTIVE (v5p-16, 2 workers)" in out.stderr
    expected = [*launch.create_commands(V5P), launch.describe_command(V5P)]
    assert fake_gcloud() == [c[1:] for c in expected]
    monkeypatch.setenv("FAKE_STATES", "FAILED")
    out = _cli("create", *where, env=dict(os.environ))
    assert out.returncode == 1 and "queued resource bert-v5p is FAILED" in out.stderr


# ----------------------------------------------------------------------------
# The remote scripts, run by bash here with HOME standing in for a worker's.
# ----------------------------------------------------------------------------


def _worker_home(tmp_path: Path) -> Path:
    """~/bert_jax and a ~/bert_jax_venv whose `python` prints its argv and working
    directory, waits until the file JOB_RELEASE exists and exits with JOB_RC."""
    home = tmp_path / "home"
    (home / "bert_jax").mkdir(parents=True)
    venv_bin = home / "bert_jax_venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "activate").write_text('PATH="$HOME/bert_jax_venv/bin:$PATH"; export PATH\n')
    python = venv_bin / "python"
    python.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys, time\n"
        "print(json.dumps(sys.argv[1:]))\n"
        "print('cwd', os.getcwd())\n"
        "while not os.path.exists(os.environ['JOB_RELEASE']):\n"
        "    time.sleep(0.05)\n"
        "sys.exit(int(os.environ['JOB_RC']))\n"
    )
    python.chmod(0o755)
    return home


def test_the_job_starts_detached_and_following_ends_with_its_status(tmp_path):
    home = _worker_home(tmp_path)
    nasty = ["--config.a=x'; touch \"$HOME\"/pwned; echo '", "--config.b=$(touch pwned)", "`id`"]
    commands = launch.run_commands(V5P, [*MAIN, WORKDIR, *nasty])
    release = tmp_path / "release"
    env = {**os.environ, "HOME": str(home), "JOB_RELEASE": str(release), "JOB_RC": "3"}
    try:
        # (The timeout turns a start that waits for the job, which waits for
        # `release`, into a failure instead of a hang.)
        out = subprocess.run(
            ["bash", "-c", _remote(commands[1])], env=env, capture_output=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        # The session returned while the job still runs: it waits for `release`,
        # which does not exist yet, so it has written no exit status.
        assert not (home / "bert_jax_run.log.exit").exists()
        _wait_for_file(home / "bert_jax_run.log.pid", "the job wrote its pid")
    finally:
        release.write_text("")  # the job ends, whatever happened here
    follow = subprocess.run(
        ["bash", "-c", _remote(commands[2])], env=env, capture_output=True, text=True, timeout=30
    )
    assert follow.returncode == 3, follow.stderr
    argv_line, cwd_line = follow.stdout.splitlines()[:2]
    assert json.loads(argv_line) == [*MAIN[1:], WORKDIR, *nasty, "--jax_distributed"]
    assert cwd_line == f"cwd {home / 'bert_jax'}"
    assert not list(home.rglob("pwned")) and not list(REPO.glob("pwned"))
    assert (home / "bert_jax_run.log.exit").read_text().strip() == "3"


def test_following_where_no_job_started_fails_clearly(tmp_path):
    home = _worker_home(tmp_path)
    env = {**os.environ, "HOME": str(home)}
    out = subprocess.run(
        ["bash", "-c", _remote(launch.logs_command(V5P))], env=env, capture_output=True, text=True
    )
    assert out.returncode == 1 and "no job was started here" in out.stdout


def _wait_for_file(path: Path, what: str, proc=None) -> None:
    """Waits for `path` to exist; the limit only turns a hang into a failure."""
    deadline = time.monotonic() + 120
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {path} after 120 s: {what} never happened")
        time.sleep(0.05)


def _holder(tmp_path: Path, on_sigterm: str) -> subprocess.Popen:
    """A stand-in for a trainer holding the TPU: on SIGTERM it writes `saved` and exits
    143, as `python -m bert_jax.main` checkpoints on a stop signal ("save"), or it
    ignores SIGTERM ("ignore"). Returned once its handler is installed."""
    ready, saved = tmp_path / "ready", tmp_path / "saved"
    script = (
        "import pathlib, signal, sys\n"
        "def save(signum, frame):\n"
        f"    pathlib.Path({str(saved)!r}).write_text('checkpoint')\n"
        "    sys.exit(143)\n"
        f"signal.signal(signal.SIGTERM, {'save' if on_sigterm == 'save' else 'signal.SIG_IGN'})\n"
        f"pathlib.Path({str(ready)!r}).write_text('')\n"
        "while True:\n"
        "    signal.pause()\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script])
    _wait_for_file(ready, "the holder installed its SIGTERM handler", holder)
    return holder


def _run_stop_script(tmp_path: Path, holder: subprocess.Popen, timeout_s: int):
    """`launch stop`'s remote script, run by bash here with a fake `lsof` that names
    `holder` and a `sudo` that runs commands as they are, except `rm`, which it only
    records (the real /tmp/libtpu_lockfile is not ours to delete)."""
    fake_bin, sudo_log = tmp_path / "bin", tmp_path / "sudo.log"
    fake_bin.mkdir()
    (fake_bin / "lsof").write_text('#!/bin/sh\necho "$HOLDER"\n')
    (fake_bin / "sudo").write_text(
        f'#!/bin/sh\nif [ "$1" = rm ]; then echo "$@" >> {sudo_log}; else exec "$@"; fi\n'
    )
    for f in fake_bin.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"}
    env["HOLDER"] = str(holder.pid)
    stop = _remote(launch.stop_commands(V5P, timeout_s=timeout_s)[0])
    out = subprocess.run(["bash", "-c", stop], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert sudo_log.read_text() == "rm -f /tmp/libtpu_lockfile\n"
    return out


def test_stopping_lets_the_trainer_checkpoint_before_it_exits(tmp_path):
    holder = _holder(tmp_path, "save")
    try:
        out = _run_stop_script(tmp_path, holder, timeout_s=600)
        # SIGTERM, and the script waited for the holder to save and exit by itself.
        assert holder.wait(timeout=60) == 143
        assert (tmp_path / "saved").read_text() == "checkpoint"
        assert f"stopping TPU holders (SIGTERM) {holder.pid}" in out.stdout
        assert "SIGKILL" not in out.stdout
    finally:
        holder.kill()


def test_stopping_kills_a_holder_that_ignores_sigterm_after_the_timeout(tmp_path):
    holder = _holder(tmp_path, "ignore")
    try:
        out = _run_stop_script(tmp_path, holder, timeout_s=1)
        assert holder.wait(timeout=60) == -9
        assert f"still running after 1 s, killing (SIGKILL) {holder.pid}" in out.stdout
        assert not (tmp_path / "saved").exists()
    finally:
        holder.kill()


def test_cli_stop_and_run_pass_the_stop_timeout():
    where = ["--tpu=bert-v5p", "--zone=us-east5-a", "--tpu_type=v5p-16", "--project=my-project"]
    out = _cli("stop", *where, "--stop_timeout=30", "--dry_run")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [shlex.join(launch.stop_commands(V5P, timeout_s=30)[0])]
    assert "kill -TERM" in out.stdout and "-lt 30 ]" in out.stdout
    out = _cli("run", *where, "--stop_timeout=5", "--dry_run", "--", *MAIN, WORKDIR)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first == shlex.join(launch.stop_commands(V5P, timeout_s=5)[0])
