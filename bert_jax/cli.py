"""What every command line tool shares: its own log lines, one-line flag errors.

Every CLI (`bert_jax.main`, `tools.predict`, `tools.embed`, `tools.demo`,
`data.pretraining.create_pretraining_data`, `data.pretraining.build_vocab`,
and the `experiments` and `perf` commands) calls `quiet_logging()` in its
`__main__`, before `app.run`. At the default --verbosity (0) a command then
shows bert_jax's own lines (progress, INFO from bert_jax's modules, every
warning and error) and not its libraries' INFO lines: orbax logs some 50 of
them for one checkpoint save, TensorFlow's C++ code its start-up notices.
`--verbosity=1` (`-v 1`) shows everything, jax's backend and compile lines
too, as without this module. Not covered: libtpu's own C++ lines on a host
with jax[tpu] installed and no TPU (JAX_PLATFORMS=cpu avoids them).

`flags_parser(prog)` makes a bad flag one `<prog>: error: ...` line;
`unfinished(workdir)` names a workdir whose run has not finished (predict
and embed warn with it).

It sits in the bottom layer (setup.cfg's import contracts) so that `main` and
the data commands may call it; of bert_jax it imports only the configs'
override parser, for its error text.
"""

from __future__ import annotations

import json
import logging as std_logging
import os

from absl import app, flags, logging
from etils import epath

from bert_jax.configs import overrides

# A record's pathname is the file that logged it; bert_jax's own start with this.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# Read by TensorFlow's and XLA's C++ logging when their library loads (both load
# lazily, after the flags are parsed): "1" drops their INFO lines, keeps warnings.
TF_CPP_MIN_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
UNTRACKED_SAVE = "Requested `tracked_metric`; did not provide metrics."


def quiet_logging() -> None:
    """Quiet third-party INFO logging once the flags are parsed, unless --verbosity >= 1.

    Call in a CLI's `__main__` before `app.run` (after `cpu_env.apply()`).
    """
    app.call_after_init(_quiet_unless_verbose)


def _quiet_unless_verbose() -> None:
    if flags.FLAGS.verbosity >= 1:
        return
    # A user's own values win. TensorFlow only reads and writes files for bert_jax
    # (tf.data, TFRecords, TF checkpoints): its oneDNN math kernels, whose notice it
    # prints on import before its log level applies, never run.
    os.environ.setdefault(TF_CPP_MIN_LOG_LEVEL, "1")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    logging.get_absl_handler().addFilter(OwnLinesFilter())


class OwnLinesFilter(std_logging.Filter):
    """Passes bert_jax's records and every library's warnings and errors, except
    two known harmless warnings (`harmless_warning`)."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        if record.pathname.startswith(PACKAGE_DIR):
            return True
        return record.levelno >= std_logging.WARNING and not harmless_warning(record)


def harmless_warning(record: std_logging.LogRecord) -> bool:
    """Orbax's two warnings about healthy checkpoints.

    * "Metadata file does not exist" for an item of a complete checkpoint step.
      A training checkpoint is a step folder holding its items (`state`,
      `data_state`) and one `_CHECKPOINT_METADATA` for all of them. Loading a
      workdir (`pretrained.load`: predict, embed) restores the `state` item
      alone, and orbax then looks for that file inside the item, warns, and
      restores the item correctly without it. Dropped only where the step
      folder's own metadata file exists.
    * "Requested `tracked_metric`; did not provide metrics.": a run with a
      `best_metric` saves steps without an evaluation (the checkpoint cadence,
      a preemption, a run without a held-out set) on purpose;
      `bert_jax.checkpoint.Checkpointer` keeps them by recency, not rank.
    """
    if record.msg == UNTRACKED_SAVE:
        return True
    if record.msg != "Metadata file does not exist: %s" or not record.args:
        return False
    item_file = epath.Path(str(record.args[0]))
    return (item_file.parent.parent / item_file.name).exists()


def flags_parser(prog: str):
    """An `app.run(main, flags_parser=...)` parser whose flag errors are one line.

    absl's own prints "FATAL Flags parsing error" and a hint over two lines or
    more (a config file's traceback inside); this one ends the command with
    `<prog>: error: <message>` and exit status 1.
    """

    def parse(argv: list[str]) -> list[str]:
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            raise SystemExit(f"{prog}: error: {flag_error_text(e)}") from None
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            # ml_collections' config_flags raises these for a bad `--config.<key>`
            # override (an unknown key, "Did you mean ...", a value of the wrong
            # type); the message names the key.
            why = overrides.error_text(e)
            raise SystemExit(
                f"{prog}: error: a --config override: unknown or bad key {why}"
            ) from None

    return parse


def flag_error_text(error: BaseException) -> str:
    """absl's message for a bad flag on one line.

    ml_collections' config_flags puts the traceback of a config file that
    failed (`get_config` raised) into the message; the flag and the
    exception's own last line stay.
    """
    text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Traceback (most recent call last)" in text:
        flag = lines[0].removesuffix("Error whilst parsing config file:").strip()
        return f"{flag} {lines[-1]}"
    return ": ".join(lines)


def unfinished(workdir) -> str | None:
    """ "WORKDIR is unfinished: checkpoint at step S of N" for a training workdir
    without results.json (the trainer writes it last); None for a finished one
    or a directory that is not a workdir.

    Args:
      workdir: a local or gs:// directory.
    """
    wd = epath.Path(workdir)
    ckpts = wd / "checkpoints"
    if (wd / "results.json").exists() or not (wd / "config.json").exists() or not ckpts.is_dir():
        return None
    steps = [int(c.name) for c in ckpts.iterdir() if c.name.isdigit()]
    if not steps:
        return None  # no checkpoint: the loader names that
    total = json.loads((wd / "config.json").read_text()).get("num_train_steps")
    return f"{workdir} is unfinished: checkpoint at step {max(steps)} of {total}"
