"""Sweeps: one config, many points of overrides, each in its own workdir.

    python -m bert_jax.experiments.sweep --sweep=experiments/glue_paper.py:task=mrpc \\
        --config=configs/glue.py --workdir_root=runs/mrpc [--run=local|print|tpu] \\
        [--config.init_checkpoint=/ckpt/bert-base --config.data.data_dir=/data/glue ...]

A sweep is a Python file anywhere with `get_sweep(arg) -> list[dict]`: one
dict of config overrides per point (keys as on the command line, without
`config.`), built with the helpers here, in the style of big_vision's
`get_hyper`:

    from bert_jax.experiments.sweep import product, sweep

    def get_sweep(arg=None):
        return product(
            sweep("optimizer.learning_rate", [5e-5, 4e-5, 3e-5, 2e-5]),
            sweep("seed", range(5)),
        )

Each point runs `python -m bert_jax.main --config=CONFIG --workdir=ROOT/NAME
--config.key=value ...`, where NAME is made from the point's overrides
(`optimizer.learning_rate=3e-05,seed=1`: readable, and unique within the
sweep; a hash is added where a value has characters a path should not).
Overrides given on the sweep's own command line apply to every point; one
of a key the sweep sets is refused (the workdir would be named for the
sweep's value while the run used another). Before anything runs, every
point's overrides are applied to the config (unknown keys and wrong types
fail naming the point and key, in one line, exit status 1). `--run=local`
runs the points one after another here, each in its own process, its output
in ROOT/NAME/run.log; `--run=print` prints the commands; `--run=tpu` runs
them one after another on one TPU slice through `bert_jax.experiments.launch`
(ROOT on gs://; --tpu, --zone and --tpu_type required). The workers run the
code `launch setup` shipped from this checkout, so a --config inside the
checkout is passed as its path relative to the checkout's root; one outside
it is refused.

Resuming: a point whose results.json exists is finished and skipped; an
unfinished one is started again and the trainer resumes it from its last
checkpoint. So an interrupted sweep is resumed by running the same command.
Ctrl-C or SIGTERM stops the running point as a preemption (it checkpoints)
and the sweep exits 130 (SIGINT) or 143 (SIGTERM); a point that exits 130 or
143 by itself (the trainer's status after a stop signal) stops the sweep the
same way, with that status: interrupted, not failed.

Overrides are data: each is one argv element, never parsed by a shell
(`--run=print` and the TPU launcher quote them).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from absl import app, flags, logging
from etils import epath

from bert_jax import cli
from bert_jax.configs import overrides as config_overrides
from bert_jax.data import bad_input, files

# ----------------------------------------------------------------------------
# Building sweeps (used by sweep files).
# ----------------------------------------------------------------------------


def sweep(key: str, values: Iterable[Any]) -> list[dict[str, Any]]:
    """One axis: [{key: v} for v in values]."""
    out = [{key: v} for v in values]
    if not out:
        raise ValueError(f"sweep({key!r}, ...) has no values")
    return out


def product(*axes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every combination of the axes' points (the last axis varies fastest)."""
    out = []
    for combo in itertools.product(*axes):
        point: dict[str, Any] = {}
        for part in combo:
            clash = set(point) & set(part)
            if clash:
                raise ValueError(f"product: key(s) {sorted(clash)} set by two axes")
            point.update(part)
        out.append(point)
    return out


def zipped(*axes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The axes' points side by side (all axes the same length)."""
    lengths = {len(a) for a in axes}
    if len(lengths) > 1:
        raise ValueError(f"zipped: axes of different lengths {sorted(lengths)}")
    return [product(*[[p] for p in parts])[0] for parts in zip(*axes, strict=True)]


def chain(*sweeps: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The sweeps one after the other."""
    return [dict(p) for s in sweeps for p in s]


# ----------------------------------------------------------------------------
# Loading, checking and naming points.
# ----------------------------------------------------------------------------


def load_sweep(spec: str) -> list[dict[str, Any]]:
    """`"path/to/sweep.py[:arg]"` -> that file's `get_sweep(arg)`, checked non-empty."""
    from bert_jax import configs

    try:
        get_sweep, arg = configs.load_function(spec, "get_sweep", "sweep")
    except AttributeError as e:  # no get_sweep: bad input, named
        raise ValueError(str(e)) from None
    points = get_sweep(arg or None)
    if not points:
        raise ValueError(f"sweep {spec} is empty: get_sweep returned no points")
    bad = [i for i, p in enumerate(points) if not isinstance(p, Mapping)]
    if bad:
        raise ValueError(f"sweep {spec}: point {bad[0]} is not a dict of overrides")
    return [dict(p) for p in points]


_SAFE = re.compile(r"[A-Za-z0-9_.=+\-]+")


def point_name(overrides: Mapping[str, Any]) -> str:
    """`key=value,key=value` in the point's order; with a hash of the overrides when
    a value holds characters a directory name should not (or the name is long)."""
    text = config_overrides.format_value
    name = ",".join(f"{k}={text(v)}" for k, v in overrides.items()) or "default"
    parts = name.split(",")
    if all(_SAFE.fullmatch(p) for p in parts) and len(name) <= 150:
        return name
    digest = hashlib.sha256(json.dumps(overrides, sort_keys=True, default=str).encode())
    readable = ",".join(re.sub(r"[^A-Za-z0-9_.=+\-]+", "-", p) for p in parts)[:100]
    return f"{readable}-{digest.hexdigest()[:8]}"


def check_point(config, overrides: Mapping[str, Any], where: str) -> None:
    """Applies `overrides` to a copy of the config as `bert_jax.main` will (the
    `--config.key=value` text of `main_argv`, `bert_jax.configs.overrides`):
    unknown keys and wrong types raise a ValueError naming `where` and the key."""
    config_overrides.apply(config, overrides, where)


def plan(
    points: list[dict[str, Any]], config, global_overrides: Mapping[str, Any], sweep_spec: str
) -> list[tuple[str, dict[str, Any]]]:
    """(workdir name, overrides for main) per point, checked; names unique.

    Raises:
      ValueError: a point's bad key or value, repeated points, or a command-line
        override of a key the sweep sets (its workdir would be named for the
        sweep's value, holding a run of another).
    """
    out = []
    for i, point in enumerate(points):
        clash = [k for k in global_overrides if k in point]
        if clash:
            raise ValueError(
                f"--config.{clash[0]} is set by sweep {sweep_spec} too (point {i}: "
                f"{clash[0]}={config_overrides.format_value(point[clash[0]])}); its workdir "
                "would be named for the sweep's value: drop it from the command line or "
                "change the sweep"
            )
        name = point_name(point)
        merged = dict(point) | dict(global_overrides)
        check_point(config, merged, f"sweep {sweep_spec} point {i} ({name})")
        out.append((name, merged))
    names = [n for n, _ in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"sweep {sweep_spec}: points repeat ({dupes[0]} appears twice)")
    return out


def main_argv(
    config_spec: str, workdir: str, overrides: Mapping[str, Any], python: str = "python"
) -> list[str]:
    """The trainer command of one point, as an argv list (no shell)."""
    argv = [python, "-m", "bert_jax.main", f"--config={config_spec}", f"--workdir={workdir}"]
    text = config_overrides.format_value
    return argv + [f"--config.{k}={text(v)}" for k, v in overrides.items()]


# ----------------------------------------------------------------------------
# Running.
# ----------------------------------------------------------------------------


def _finished(workdir: epath.Path) -> bool:
    return (workdir / "results.json").exists()


def _write_point(workdir: epath.Path, record: dict) -> None:
    """sweep_point.json: which sweep and overrides made this workdir (bert_jax.experiments.results
    groups runs by it)."""
    workdir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=2, default=str).encode("utf-8")
    if "://" in os.fspath(workdir):  # object stores write whole objects
        (workdir / "sweep_point.json").write_bytes(text)
        return
    with files.atomic_write(workdir / "sweep_point.json") as f:
        f.write(text)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# What `python -m bert_jax.main` exits with after it checkpointed on a stop
# signal: 128 + signum (SIGINT, SIGTERM), as a shell reports a signalled job.
STOPPED = (128 + signal.SIGINT, 128 + signal.SIGTERM)


class Interrupted(Exception):
    """The sweep stops, resumable: a stop signal reached it, or a point exited on one.

    `status` is the sweep's exit status: 128 + the signal's number.
    """

    def __init__(self, status: int, why: str):
        super().__init__(why)
        self.status = status


def _raise_terminated(signum, frame):
    del frame
    raise Interrupted(128 + signum, "SIGTERM")


def run_local(root: epath.Path, planned, config_spec: str, record) -> list[str]:
    """Runs the unfinished points one after another; the names of the failed ones.

    Each point is its own process (a fresh runtime, its output in run.log). A
    Ctrl-C or SIGTERM stops the running point the way the trainer stops on
    preemption (it checkpoints), so the same command resumes the sweep.

    Raises:
      Interrupted: SIGTERM reached the sweep (status 143), or a point exited
        130 or 143 by itself (that status). Ctrl-C raises KeyboardInterrupt.
    """
    from bert_jax.data import progress

    failed = []
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        for name, overrides in progress.bar(planned, desc="sweep", unit="run"):
            wd = root / name
            if _finished(wd):
                logging.info("%s: finished, skipped", name)
                continue
            _write_point(wd, record(name, overrides))
            log_path = Path(os.fspath(wd)) / "run.log"
            argv = main_argv(config_spec, os.fspath(wd), overrides, sys.executable)
            logging.info("%s: running (log: %s)", name, log_path)
            with open(log_path, "ab") as log:
                # Its own session: a Ctrl-C reaches the sweep only, which then stops
                # the point as a preemption (SIGTERM: the trainer checkpoints).
                child = subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
                try:
                    rc = child.wait()
                except (KeyboardInterrupt, Interrupted):
                    child.send_signal(signal.SIGTERM)
                    child.wait()
                    raise
            if rc in STOPPED:
                raise Interrupted(rc, f"{name} stopped on a signal (exit {rc}; log: {log_path})")
            if rc or not _finished(wd):
                failed.append(name)
                why = f"exit {rc}" if rc else "exit 0 without results.json"
                logging.error(
                    "%s failed (%s); the end of %s:\n%s", name, why, log_path, _tail(log_path)
                )
            else:
                metrics = json.loads((wd / "results.json").read_text())["metrics"]
                logging.info("%s: %s", name, metrics)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return failed


def remote_config_spec(config_spec: str, repo_root: str, cwd: str | None = None) -> str:
    """`--config` as a TPU worker must read it: relative to the checkout's root.

    The workers run the code `launch setup` shipped from this checkout (a
    `git archive` unpacked in ~/bert_jax, the trainer's working directory), so
    a config file of the checkout is passed by its path inside it.

    Raises:
      ValueError: the config file is outside the checkout (the workers cannot
        read this machine's disk).
    """
    path, colon, arg = config_spec.partition(":")
    file = Path(cwd or os.getcwd(), os.path.expanduser(path)).resolve()
    root = Path(repo_root).resolve()
    if not file.is_relative_to(root):
        raise ValueError(
            f"--config={config_spec}: {file} is outside this checkout ({root}), and TPU "
            "workers run only the code `launch setup` ships from it: put the config file "
            "in the checkout (e.g. configs/) and commit it"
        )
    return file.relative_to(root).as_posix() + colon + arg


def run_tpu(root: epath.Path, planned, config_spec: str, record, tpu_slice, dry_run: bool):
    """Sends the unfinished points to one TPU slice in turn (bert_jax.experiments.launch).

    Every point's commands are built (and so checked) before the first runs.
    """
    from bert_jax.experiments import launch

    remote_config = remote_config_spec(config_spec, launch.REPO_ROOT)
    jobs = []
    for name, overrides in planned:
        wd = root / name
        argv = main_argv(remote_config, os.fspath(wd), overrides)
        jobs.append((name, overrides, wd, launch.run_commands(tpu_slice, argv)))
    for name, overrides, wd, commands in jobs:
        if not dry_run and _finished(wd):
            logging.info("%s: finished, skipped", name)
            continue
        if not dry_run:
            _write_point(wd, record(name, overrides))
        launch.execute(commands, dry_run=dry_run)


# ----------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------

FLAGS = flags.FLAGS
PROG = "bert_jax.experiments.sweep"


def _define_flags() -> None:
    from ml_collections import config_flags

    flags.DEFINE_string("sweep", None, "Sweep file and argument: path/to/sweep.py[:arg].")
    config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
    flags.DEFINE_string("workdir_root", None, "Each point runs in WORKDIR_ROOT/<name>.")
    flags.DEFINE_enum("run", "local", ["local", "print", "tpu"], "Where the points run.")
    flags.DEFINE_string("tpu", "", "--run=tpu: the TPU VM (slice) name.")
    flags.DEFINE_string("zone", "", "--run=tpu: its zone, e.g. us-east5-a.")
    flags.DEFINE_string("tpu_type", "", "--run=tpu: its type, e.g. v5p-16.")
    flags.DEFINE_string("project", "", "--run=tpu: the Google Cloud project (default: gcloud's).")
    flags.DEFINE_bool("dry_run", False, "--run=tpu: print the gcloud commands, run nothing.")


def main(argv) -> int:
    """The command; its exit status. Bad input (a sweep's unknown key, a missing
    --tpu, a failed gcloud command) ends it with one line: `PROG: error: ...`."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    with bad_input.command_errors(PROG):
        try:
            return _main()
        except (RuntimeError, TimeoutError) as e:  # launch: a gcloud command failed, named
            raise ValueError(str(e)) from None


def _main() -> int:
    from ml_collections import config_flags

    config_spec = config_flags.get_config_filename(FLAGS["config"])
    global_overrides = config_flags.get_override_values(FLAGS["config"])
    points = load_sweep(FLAGS.sweep)
    planned = plan(points, FLAGS.config, global_overrides, FLAGS.sweep)
    root = FLAGS.workdir_root
    root = epath.Path(root if "://" in root else os.path.abspath(os.path.expanduser(root)))

    def record(name, overrides):
        return {"sweep": FLAGS.sweep, "config": config_spec, "name": name, "overrides": overrides}

    if FLAGS.run == "print":
        for name, overrides in planned:
            print(shlex.join(main_argv(config_spec, os.fspath(root / name), overrides)))
        return 0
    if FLAGS.run == "tpu":
        from bert_jax.experiments import launch

        missing = [f"--{k}" for k in ("tpu", "zone", "tpu_type") if not FLAGS[k].value]
        if missing:
            raise ValueError(
                f"--run=tpu needs --tpu, --zone and --tpu_type (missing: {', '.join(missing)})"
            )
        tpu_slice = launch.Slice(
            name=FLAGS.tpu, zone=FLAGS.zone, tpu_type=FLAGS.tpu_type, project=FLAGS.project
        )
        run_tpu(root, planned, config_spec, record, tpu_slice, FLAGS.dry_run)
        return 0
    done = sum(_finished(root / n) for n, _ in planned)
    logging.info("sweep %s: %d points, %d finished before", FLAGS.sweep, len(planned), done)
    try:
        failed = run_local(root, planned, config_spec, record)
    except KeyboardInterrupt:
        logging.warning("sweep interrupted (Ctrl-C): the same command resumes it")
        return 130
    except Interrupted as e:
        logging.warning("sweep interrupted (%s): the same command resumes it", e)
        return e.status
    if failed:
        logging.error("%d of %d points failed: %s", len(failed), len(planned), failed)
        return 1
    logging.info("sweep %s: all %d points finished under %s", FLAGS.sweep, len(planned), root)
    return 0


if __name__ == "__main__":
    _define_flags()
    flags.mark_flags_as_required(["sweep", "config", "workdir_root"])
    cli.quiet_logging()  # libraries' INFO lines only at --verbosity=1
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=cli.flags_parser(PROG))
