"""Run bert_jax on a Cloud TPU VM slice: create it, ship the code, run, follow, delete.

    # 1. Ask for a slice (a queued resource) and wait until it is ACTIVE.
    python -m bert_jax.experiments.launch create --tpu=bert-v5p --zone=us-east5-a \\
        --tpu_type=v5p-16 --spot

    # 2. Ship this checkout's HEAD to every worker and install it with jax[tpu].
    python -m bert_jax.experiments.launch setup --tpu=bert-v5p --zone=us-east5-a --tpu_type=v5p-16

    # 3. Run one command on all workers; follow worker 0's log until it ends.
    python -m bert_jax.experiments.launch run --tpu=bert-v5p --zone=us-east5-a \\
        --tpu_type=v5p-16 -- \\
        python -m bert_jax.main --config=configs/pretrain.py:model=base \\
        --workdir=gs://my-bucket/runs/base --config.optimizer.learning_rate=1e-4

    # Follow it again (Ctrl-C stops following, never the job); another worker: --worker=1.
    python -m bert_jax.experiments.launch logs --tpu=bert-v5p --zone=us-east5-a --tpu_type=v5p-16
    # Stop the job (SIGTERM: it checkpoints and exits; SIGKILL after --stop_timeout
    # seconds), keep the slice; the same `run` command resumes it.
    python -m bert_jax.experiments.launch stop --tpu=bert-v5p --zone=us-east5-a --tpu_type=v5p-16
    # Give the slice back.
    python -m bert_jax.experiments.launch delete --tpu=bert-v5p --zone=us-east5-a --tpu_type=v5p-16

Every action takes the same --tpu, --zone and --tpu_type (and --project, where
gcloud's default project is not the one). `--dry_run` prints the commands,
shell-quoted, one per line, and runs nothing. What each action runs:

* create: `gcloud compute tpus queued-resources create TPU --node-id=TPU
  --accelerator-type=... --runtime-version=...` (queued resources are what
  Google recommends for slices), with --spot or --reserved if given; then
  polls `queued-resources describe` every 30 s until the state is ACTIVE,
  failing on FAILED/SUSPENDED or after --wait_minutes. The runtime image
  follows the generation (`bert_jax.experiments.tpu_slices`); --runtime_version overrides.
* setup: `git archive` of --ref (default HEAD: commit what you want to run;
  uncommitted changes are not shipped), `tpu-vm scp --worker=all`, then on
  every worker: unpack into ~/bert_jax and install it (editable) with
  `jax[tpu]` into ~/bert_jax_venv, in one resolution so libtpu matches jax.
  The TPU runtime images come with Ubuntu 22.04's Python 3.10 and bert_jax
  needs 3.11+, so the venv is made by uv with its own Python 3.12 (the
  workers need internet access for pip, as for any jax[tpu] install).
* run: first, on every worker, stop the processes holding the TPU devices
  (/dev/accel*, /dev/vfio/N) as `stop` does and remove /tmp/libtpu_lockfile:
  a crashed or interrupted run leaves them behind and the next one fails with
  "TPU in use". Then on every worker, in ~/bert_jax with the venv active, start the
  command detached from the ssh session (SIGHUP ignored, output to
  ~/bert_jax_run.log), so a dropped connection never stops a run. Last,
  follow worker 0's log (`tail -F --pid`) until the job ends; the action
  exits with the job's exit status. `python -m bert_jax.main` gets
  --jax_distributed on multi-host slices, whose --workdir must be on gs://
  (every worker writes to it). Each argument reaches the workers as one
  word (quoted with shlex): overrides are data, never shell code.
* logs: follow a worker's log.
* stop: on every worker, SIGTERM to the processes holding the TPUs (the
  trainer checkpoints and exits, as on a preemption), up to --stop_timeout
  seconds (default 180) for them to end, then SIGKILL for what is left.
* delete: `queued-resources delete --force`, which deletes the TPU VMs too.

Python: `Slice`, `create_commands`, `setup_commands`, `run_commands`,
`delete_commands` build gcloud argv lists; `execute` runs (or prints) them;
`wait_until_active` polls. `bert_jax.experiments.sweep --run=tpu` uses these.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from absl import app, flags

from bert_jax import cli
from bert_jax.experiments.tpu_slices import Slice

__all__ = [
    "Slice",
    "create_commands",
    "delete_commands",
    "execute",
    "logs_command",
    "run_commands",
    "setup_commands",
    "stop_commands",
    "wait_until_active",
]

REPO_ROOT = str(Path(__file__).resolve().parents[2])  # the checkout: bert_jax/experiments/..
DEFAULT_LOG = "bert_jax_run.log"  # relative paths are under each worker's home
REMOTE_CODE = "bert_jax"  # ~/bert_jax on each worker
REMOTE_VENV = "bert_jax_venv"  # ~/bert_jax_venv
VENV_PYTHON = "3.12"
# Seconds `stop` (and `run`, for a job still running) leaves the trainer to
# checkpoint after SIGTERM before SIGKILL: a BERT-large state (params and Adam
# moments, ~4 GB) written to gs:// takes well under a minute.
STOP_TIMEOUT_S = 180
BAD_STATES = ("FAILED", "SUSPENDING", "SUSPENDED", "DELETING")


# ----------------------------------------------------------------------------
# Command builders: gcloud argv lists, nothing run.
# ----------------------------------------------------------------------------


def _gcloud(s: Slice, *args: str) -> list[str]:
    return ["gcloud", "compute", "tpus", *args, f"--zone={s.zone}"] + (
        [f"--project={s.project}"] if s.project else []
    )


def _ssh(s: Slice, worker: str, remote: str) -> list[str]:
    return _gcloud(s, "tpu-vm", "ssh", s.name, f"--worker={worker}", f"--command={remote}")


def create_commands(s: Slice) -> list[list[str]]:
    """The queued-resource request for the slice (wait with `wait_until_active`)."""
    cmd = _gcloud(
        s,
        "queued-resources",
        "create",
        s.name,
        f"--node-id={s.name}",
        f"--accelerator-type={s.accelerator_type}",
        f"--runtime-version={s.runtime}",
    )
    return [cmd + (["--spot"] if s.spot else []) + (["--reserved"] if s.reserved else [])]


def describe_command(s: Slice) -> list[str]:
    return _gcloud(s, "queued-resources", "describe", s.name, "--format=value(state.state)")


def archive_path(s: Slice) -> str:
    return f"/tmp/bert_jax-{s.name}.tar.gz"


def setup_commands(s: Slice, *, ref: str = "HEAD") -> list[list[str]]:
    """Archive `ref` of this checkout, copy it to every worker, install it there."""
    if not ref or ref.startswith("-") or any(c.isspace() for c in ref):
        raise ValueError(f"git ref {ref!r} is not a commit, branch or tag name")
    archive = archive_path(s)
    pack = [
        *("git", "-C", REPO_ROOT, "archive", "--format=tar.gz"),
        *(f"--prefix={REMOTE_CODE}/", f"--output={archive}", ref),
    ]
    copy = _gcloud(s, "tpu-vm", "scp", archive, f"{s.name}:{REMOTE_CODE}.tar.gz", "--worker=all")
    install = "; ".join(
        [
            'set -e; cd "$HOME"',
            f"rm -rf {REMOTE_CODE}",
            f"tar -xzf {REMOTE_CODE}.tar.gz",
            f"rm -f {REMOTE_CODE}.tar.gz",
            "python3 -m pip install --quiet --user --upgrade uv",
            f"[ -x {REMOTE_VENV}/bin/python ] || "
            f"python3 -m uv venv --python {VENV_PYTHON} {REMOTE_VENV}",
            f"python3 -m uv pip install --python {REMOTE_VENV}/bin/python "
            f'-e ./{REMOTE_CODE} "jax[tpu]"',
        ]
    )
    return [pack, copy, _ssh(s, "all", install)]


def _remote_path(path: str) -> str:
    """A shell word for `path` on a worker: relative (or ~/) paths are under $HOME."""
    if not path or path in ("~", "~/"):
        raise ValueError(f"log file {path!r}: give a file name, e.g. {DEFAULT_LOG}")
    if path.startswith("/"):
        return shlex.quote(path)
    return '"$HOME"/' + shlex.quote(path.removeprefix("~/"))


def _stop_tpu_holders(timeout_s: int) -> str:
    """Shell: stop whatever holds this worker's TPUs; remove libtpu's lock file.

    SIGTERM first: the trainer takes it as a preemption (it checkpoints and
    exits, bert_jax.checkpoint.PreemptionGuard), so a stopped run resumes where
    it stopped. What still runs after `timeout_s` seconds (a hung process, a
    stale holder that ignores SIGTERM) gets SIGKILL. A zombie (`ps` state Z)
    has exited: it holds nothing and is not waited for.
    """
    if timeout_s < 0:
        raise ValueError(f"stop timeout {timeout_s}: a number of seconds, 0 or more")
    alive = (
        'alive=""; for p in $pids; do s=$(ps -o stat= -p "$p" 2>/dev/null || true); '
        'case "$s" in ""|Z*) ;; *) alive="$alive $p";; esac; done'
    )
    return (
        "pids=$(sudo lsof -t /dev/accel* /dev/vfio/[0-9]* 2>/dev/null | sort -u || true); "
        'if [ -n "$pids" ]; then echo "$(hostname): stopping TPU holders (SIGTERM)" $pids; '
        f"sudo kill -TERM $pids 2>/dev/null || true; waited=0; {alive}; "
        f'while [ -n "$alive" ] && [ "$waited" -lt {timeout_s} ]; do sleep 1; '
        f"waited=$((waited + 1)); {alive}; done; "
        'if [ -n "$alive" ]; then echo "$(hostname): still running after '
        f'{timeout_s} s, killing (SIGKILL)" $alive; sudo kill -9 $alive 2>/dev/null || true; '
        "sleep 1; fi; fi; sudo rm -f /tmp/libtpu_lockfile"
    )


def stop_commands(s: Slice, *, timeout_s: int = STOP_TIMEOUT_S) -> list[list[str]]:
    """Stop the job (and any stale process holding a TPU) on every worker: SIGTERM,
    up to `timeout_s` seconds to checkpoint and exit, then SIGKILL."""
    return [_ssh(s, "all", _stop_tpu_holders(timeout_s))]


def _workdir(argv: Sequence[str]) -> str | None:
    for i, a in enumerate(argv):
        if a.startswith("--workdir="):
            return a.removeprefix("--workdir=")
        if a == "--workdir" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def logs_command(
    s: Slice, *, log_file: str = DEFAULT_LOG, worker: int = 0, lines: str = "100"
) -> list[str]:
    """Follow `worker`'s log (from its last `lines` lines, or "+1": from the start) until
    its job ends; the command exits with the job's exit status."""
    if not re.fullmatch(r"\+?[0-9]+", lines):
        raise ValueError(f"lines {lines!r}: a count, or +N to start at line N")
    if not 0 <= worker < s.workers:
        raise ValueError(f"worker {worker}: {s.tpu_type} has workers 0..{s.workers - 1}")
    log, pid, status = (_remote_path(log_file + ext) for ext in ("", ".pid", ".exit"))
    follow = (
        f'pid=$(cat {pid} 2>/dev/null) || {{ echo "no job was started here"; exit 1; }}; '
        f"tail -n {lines} -F --pid=$pid {log} 2>/dev/null; "
        f"exit $(cat {status} 2>/dev/null || echo 1)"
    )
    return _ssh(s, str(worker), follow)


def run_commands(
    s: Slice,
    argv: Sequence[str],
    *,
    log_file: str = DEFAULT_LOG,
    follow: bool = True,
    stop_timeout_s: int = STOP_TIMEOUT_S,
) -> list[list[str]]:
    """gcloud argv lists that clear stale TPU processes and run `argv` on all workers.

    `argv` is the command as a list, e.g. `["python", "-m", "bert_jax.main",
    "--config=configs/glue.py", "--workdir=gs://b/runs/x", "--config.seed=1"]`;
    `python -m bert_jax.main` gets --jax_distributed on a multi-host slice.
    With `follow`, the last command follows worker 0's log until the job ends
    and exits with its status, so running the list runs the job to its end.
    The first command stops what holds the TPUs as `stop_commands` does.

    Raises:
      ValueError: no command; a multi-host slice with a workdir not on gs://.
    """
    argv = list(argv)
    if not argv:
        raise ValueError(
            "no command to run: give it after --, e.g. -- python -m bert_jax.main "
            "--config=configs/pretrain.py --workdir=gs://BUCKET/runs/NAME"
        )
    is_main = "bert_jax.main" in argv[:3]
    workdir = _workdir(argv)
    if is_main and workdir is None:
        raise ValueError(f"bert_jax.main needs --workdir (gs://... on a TPU slice): {argv}")
    if s.workers > 1 and workdir is not None and not workdir.startswith("gs://"):
        raise ValueError(
            f"--workdir={workdir}: {s.tpu_type} has {s.workers} workers, which all write one "
            "workdir; it must be on gs:// (e.g. --workdir=gs://BUCKET/runs/NAME)"
        )
    if is_main and s.workers > 1 and "--jax_distributed" not in argv:
        argv.append("--jax_distributed")
    log, pid, status = (_remote_path(log_file + ext) for ext in ("", ".pid", ".exit"))
    # The job runs in a background group with SIGHUP ignored and every stream
    # redirected: the ssh session returns at once and may drop at any time. The
    # group's pid and the job's exit status are what `logs_command` waits on.
    start = (
        f'set -e; cd "$HOME"/{REMOTE_CODE}; . "$HOME"/{REMOTE_VENV}/bin/activate; '
        f"export PYTHONUNBUFFERED=1; rm -f {status}; "
        f'{{ trap "" HUP; rc=0; {shlex.join(argv)} || rc=$?; echo $rc > {status}; }} '
        f"> {log} 2>&1 < /dev/null & echo $! > {pid}"
    )
    commands = [*stop_commands(s, timeout_s=stop_timeout_s), _ssh(s, "all", start)]
    if follow:
        commands.append(logs_command(s, log_file=log_file, lines="+1"))
    return commands


def delete_commands(s: Slice) -> list[list[str]]:
    """Delete the queued resource and, with --force, its TPU VMs."""
    return [_gcloud(s, "queued-resources", "delete", s.name, "--force", "--quiet")]


# ----------------------------------------------------------------------------
# Running them.
# ----------------------------------------------------------------------------


def _run(cmd: list[str], capture: bool = False) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, check=True, capture_output=capture, text=True)
    except FileNotFoundError:
        raise RuntimeError(
            f"{cmd[0]} is not on PATH (the Google Cloud CLI: https://cloud.google.com/sdk); "
            f"command: {shlex.join(cmd)}"
        ) from None
    except subprocess.CalledProcessError as e:
        detail = f"\n{e.stderr.strip()}" if capture and e.stderr else ""
        raise RuntimeError(
            f"command failed (exit status {e.returncode}): {shlex.join(cmd)}{detail}"
        ) from None


def execute(commands: list[list[str]], dry_run: bool) -> None:
    """Run each command in turn (stopping at the first that fails, with a RuntimeError
    naming it), or print each shell-quoted, one per line, when `dry_run`."""
    for cmd in commands:
        if dry_run:
            print(shlex.join(cmd), flush=True)
            continue
        print("+", shlex.join(cmd), file=sys.stderr, flush=True)
        _run(cmd)


def wait_until_active(
    s: Slice, *, timeout_s: float = 3600.0, poll_s: float = 30.0, dry_run: bool = False
) -> None:
    """Poll the queued resource until ACTIVE.

    Raises:
      RuntimeError: it FAILED or is SUSPENDED (or being deleted), or describe failed.
      TimeoutError: still not ACTIVE after `timeout_s` (the request stays queued).
    """
    cmd = describe_command(s)
    if dry_run:
        print(shlex.join(cmd), flush=True)
        return
    deadline = time.monotonic() + timeout_s
    while True:
        state = _run(cmd, capture=True).stdout.strip()
        if state == "ACTIVE":
            print(f"{s.name}: ACTIVE ({s.tpu_type}, {s.workers} workers)", file=sys.stderr)
            return
        details = shlex.join(_gcloud(s, "queued-resources", "describe", s.name))
        if state in BAD_STATES:
            raise RuntimeError(f"queued resource {s.name} is {state}; see: {details}")
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"queued resource {s.name} still {state or 'unknown'} after {timeout_s / 60:g} "
                f"min; it stays queued (check: {details}; give up: "
                f"python -m bert_jax.experiments.launch "
                f"delete --tpu={s.name} --zone={s.zone} --tpu_type={s.tpu_type})"
            )
        print(f"{s.name}: {state or 'unknown'}; waiting", file=sys.stderr, flush=True)
        time.sleep(poll_s)


# ----------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------

PROG = "bert_jax.experiments.launch"
ACTIONS = ("create", "setup", "run", "logs", "stop", "delete")
FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_string("tpu", None, "TPU VM (slice) name, e.g. bert-v5p.")
    flags.DEFINE_string("zone", None, "Zone, e.g. us-east5-a.")
    flags.DEFINE_string("tpu_type", None, "Slice type: v5p-16, v5e-8, v6e-8, v4-32, ...")
    flags.DEFINE_string("project", "", "Google Cloud project (default: gcloud's).")
    flags.DEFINE_bool("spot", False, "create: Spot capacity (preemptible).")
    flags.DEFINE_bool("reserved", False, "create: reserved capacity.")
    flags.DEFINE_string("runtime_version", "", "create: TPU runtime image (default: by type).")
    flags.DEFINE_float("wait_minutes", 60, "create: how long to wait for ACTIVE.")
    flags.DEFINE_string("ref", "HEAD", "setup: the git commit, branch or tag to ship.")
    flags.DEFINE_string("log_file", DEFAULT_LOG, "run/logs: the log on each worker (~-relative).")
    flags.DEFINE_bool("follow", True, "run: follow worker 0's log until the job ends.")
    flags.DEFINE_integer("worker", 0, "logs: which worker's log.")
    flags.DEFINE_integer(
        "stop_timeout",
        STOP_TIMEOUT_S,
        "stop/run: seconds the job has to checkpoint and exit after SIGTERM before SIGKILL.",
        lower_bound=0,
    )
    flags.DEFINE_bool("dry_run", False, "Print the commands, one per line; run nothing.")
    flags.mark_flags_as_required(["tpu", "zone", "tpu_type"])


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in ACTIONS:
        raise app.UsageError(f"give an action first, one of: {', '.join(ACTIONS)}")
    action, command = argv[1], argv[2:]
    if command and action != "run":
        raise app.UsageError(f"unexpected arguments for {action}: {command}")
    try:
        s = Slice(
            name=FLAGS.tpu,
            zone=FLAGS.zone,
            tpu_type=FLAGS.tpu_type,
            project=FLAGS.project,
            spot=FLAGS.spot,
            reserved=FLAGS.reserved,
            runtime_version=FLAGS.runtime_version,
        )
        if action == "create":
            execute(create_commands(s), FLAGS.dry_run)
            wait_until_active(s, timeout_s=FLAGS.wait_minutes * 60, dry_run=FLAGS.dry_run)
        elif action == "setup":
            execute(setup_commands(s, ref=FLAGS.ref), FLAGS.dry_run)
        elif action == "run":
            commands = run_commands(
                s,
                command,
                log_file=FLAGS.log_file,
                follow=FLAGS.follow,
                stop_timeout_s=FLAGS.stop_timeout,
            )
            execute(commands, FLAGS.dry_run)
        elif action == "logs":
            logs = logs_command(s, log_file=FLAGS.log_file, worker=FLAGS.worker)
            execute([logs], FLAGS.dry_run)
        elif action == "stop":
            execute(stop_commands(s, timeout_s=FLAGS.stop_timeout), FLAGS.dry_run)
        else:
            execute(delete_commands(s), FLAGS.dry_run)
    except KeyboardInterrupt:
        if action not in ("run", "logs"):
            raise
        where = f"--tpu={FLAGS.tpu} --zone={FLAGS.zone} --tpu_type={FLAGS.tpu_type}"
        print(
            "\nstopped following the log; the job goes on. Follow it again: python -m "
            f"bert_jax.experiments.launch logs {where}; end it: "
            f"python -m bert_jax.experiments.launch stop {where}",
            file=sys.stderr,
        )
        sys.exit(130)
    except (ValueError, RuntimeError, TimeoutError) as e:
        sys.exit(f"{PROG}: error: {action}: {e}")


if __name__ == "__main__":
    _define_flags()
    cli.quiet_logging()  # libraries' INFO lines only at --verbosity=1
    app.run(main, flags_parser=cli.flags_parser(PROG))
