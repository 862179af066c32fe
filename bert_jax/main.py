"""Entry point: flags -> config -> train.run(config, workdir).

    python -m bert_jax.main --config=configs/pretrain.py:model=tiny,tiny \
        --workdir=runs/tiny [--config.optimizer.learning_rate=3e-5 ...]

The config file may live anywhere (`--config=~/exp/my_glue.py:arg`); the
pieces configs share come from the installed package (`bert_jax.configs`).
A workdir belongs to one config: rerunning it resumes (or, when finished,
returns its results) only with the same config; `--allow_config_changes`
permits the changes in `bert_jax.workdir_config.SAFE_CHANGES`. SIGTERM or
Ctrl-C saves the step reached and exits 143 or 130 (128 + the signal, as a shell
reports a killed command), never 0; rerunning the command resumes.

Where JAX runs on the CPU the command starts with `bert_jax.cpu_env`'s settings:
it restarts itself once, before any work, with glibc malloc tunables that reuse
freed step buffers (BERT_JAX_MALLOC_REUSE=0 turns it off; huge pages instead,
BERT_JAX_MALLOC_HUGEPAGES=0), and on x86-64 puts XLA:CPU's matrix multiplies in
oneDNN (BERT_JAX_XLA_CPU_ONEDNN=0 keeps XLA's default). On GPU and TPU hosts it
changes nothing.

Multi-host (TPU pod slices, several GPU hosts): pass --jax_distributed; on
TPU VMs and Slurm jax finds the coordinator by itself, elsewhere give
--coordinator_address, --num_processes and --process_id.
"""

import json
import os
import sys

import jax
from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

from bert_jax import cli, cpu_env, train
from bert_jax.data import bad_input

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory (local or gs://) for checkpoints and metrics.")
flags.DEFINE_bool(
    "allow_config_changes",
    False,
    "Resume a workdir whose config differs only in keys that do not change what is "
    "trained (logging, eval and checkpoint cadence, mesh, data locations).",
)
flags.DEFINE_bool("jax_distributed", False, "Call jax.distributed.initialize (multi-host).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")


def main(argv):
    if len(argv) > 1:
        sys.exit(f"bert_jax.main: error: unexpected arguments: {argv[1:]}")
    if FLAGS.jax_distributed:
        jax.distributed.initialize(
            coordinator_address=FLAGS.coordinator_address,
            num_processes=FLAGS.num_processes,
            process_id=FLAGS.process_id,
        )
    logging.info(
        "process %d/%d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    results = epath.Path(FLAGS.workdir) / "results.json"
    # Bad input (a config value, a data file, a workdir): one line naming it.
    with bad_input.command_errors("bert_jax.main"):
        before = results.read_text() if results.exists() else None
        try:
            train.run(FLAGS.config, FLAGS.workdir, allow_config_changes=FLAGS.allow_config_changes)
        except train.Stopped as e:  # SIGTERM/Ctrl-C: saved; exit 128 + signum, not 0
            e.exit("bert_jax.main")
    if jax.process_index() == 0:
        print(closing_line(results, before), flush=True)


def closing_line(results: epath.Path, before: str | None) -> str:
    """Where a finished run's results and checkpoints are; `before`: results.json's
    text before the run (unchanged: the workdir had finished already)."""
    text = results.read_text()
    done = "already finished" if text == before else "done"
    step = json.loads(text)["step"]
    return (
        f"bert_jax.main: {done} at step {step}: results in {results}, "
        f"checkpoints in {results.parent / 'checkpoints'}"
    )


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, each error one message, no traceback: a config file that is
    not there or fails, a bad `--config.<key>` override, any other bad flag.

    `--config.key=value` goes through ml_collections' config_flags, the parser
    `bert_jax.configs.overrides.apply` uses for bench's --set and sweep points.
    """
    return cli.flags_parser("bert_jax.main")(_expand_home(argv))


def _expand_home(argv: list[str]) -> list[str]:
    """argv with `~` and `~user` expanded in --config's file and --workdir.

    A shell expands `~` only at the start of a word, so `--config=~/exp/my.py`
    reaches the command as typed, and config_flags would look for a folder
    named `~`. A config file that is not there ends the command here, naming it.
    """
    out = list(argv)
    for i, arg in enumerate(out):
        name, eq, value = arg.partition("=")
        flag = name.lstrip("-")
        if not name.startswith("-") or flag not in ("config", "workdir"):
            continue
        if not eq:  # `--config FILE`
            if i + 1 == len(out):
                continue  # absl names the missing value
            value = out[i + 1]
        if flag == "workdir":
            value = os.path.expanduser(value)
        else:
            path, colon, config_arg = value.partition(":")  # FILE[:arg], as config_flags splits
            path = os.path.expanduser(path)
            if not os.path.isfile(path):
                file = os.path.abspath(path)
                sys.exit(f"bert_jax.main: error: --config: config file {file} does not exist")
            value = path + colon + config_arg
        if eq:
            out[i] = f"{name}={value}"
        else:
            out[i + 1] = value
    return out


if __name__ == "__main__":
    cpu_env.apply()  # on the CPU backend: malloc tunables, oneDNN dots (docs/performance.md)
    cli.quiet_logging()  # libraries' INFO lines only at --verbosity=1
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=_parse_flags)
