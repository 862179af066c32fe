"""Entry point: flags -> config -> train.run(config, workdir).

    python -m bert_jax.main --config=configs/pretrain.py:model=tiny,tiny \
        --workdir=runs/tiny [--config.optimizer.learning_rate=3e-5 ...]

Multi-host (TPU pod slices, several GPU hosts): pass --jax_distributed; on
TPU VMs and Slurm jax finds the coordinator by itself, elsewhere give
--coordinator_address, --num_processes and --process_id.
"""

import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory (local or gs://) for checkpoints and metrics.")
flags.DEFINE_bool("jax_distributed", False, "Call jax.distributed.initialize (multi-host).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])

# Config files import `configs.common`: make the repository root importable
# wherever the command is run from.
for arg in sys.argv:
    if arg.startswith("--config="):
        cfg_path = Path(arg.split("=", 1)[1].split(":", 1)[0]).resolve()
        sys.path.insert(0, str(cfg_path.parent.parent))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import jax

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
    from bert_jax import train

    train.run(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
