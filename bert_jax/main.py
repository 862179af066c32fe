"""Entry point: flags -> config -> train.run(config, workdir).

    python -m bert_jax.main --config=configs/pretrain.py:model=tiny,tiny \
        --workdir=runs/tiny [--config.optimizer.learning_rate=3e-5 ...]

The config file may live anywhere (`--config=~/exp/my_glue.py:arg`); the
pieces configs share come from the installed package (`bert_jax.configs`).
A workdir belongs to one config: rerunning it resumes (or, when finished,
returns its results) only with the same config; `--allow_config_changes`
permits the changes in `bert_jax.workdir_config.SAFE_CHANGES`.

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

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from bert_jax import cpu_env, train
from bert_jax.configs import overrides
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
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
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
    # Bad input (a config value, a data file, a workdir): one line naming it.
    with bad_input.command_errors("bert_jax.main"):
        train.run(FLAGS.config, FLAGS.workdir, allow_config_changes=FLAGS.allow_config_changes)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, with a bad `--config.<key>` override as one message, no traceback.

    `--config.key=value` goes through ml_collections' config_flags, the parser
    `bert_jax.configs.overrides.apply` uses for bench's --set and sweep points.
    """
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        # config_flags raises these for an unknown key ("Did you mean ...") or a value
        # of the wrong type; the message names the key.
        why = overrides.error_text(e)
        sys.exit(f"bert_jax.main: error: a --config override: unknown or bad key {why}")


if __name__ == "__main__":
    cpu_env.apply()  # on the CPU backend: malloc tunables, oneDNN dots (docs/performance.md)
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=_parse_flags)
