"""What a data reader does with bad input: one keyword, `on_bad_input`, two values.

Every reader and command in `bert_jax.data` takes `on_bad_input`, default "fail":

  "fail"  raise ValueError naming the file and line (or the record) and the
          problem;
  "skip"  drop the bad item, count it in the reader's stats, and log a warning
          with the count once the input is read.

The bad items, per reader:
  * glue.read_tsv, text_classification.read_table: a malformed row (wrong
    column count, empty text, a label outside the label set, bytes that are
    not UTF-8, ...);
  * conll.read_conll: a malformed line; "skip" drops its whole sentence (a
    sentence missing a word would misalign everything after it);
  * squad.parse_squad: a question whose training answer is not the context's
    text at its answer_start;
  * corpus.text_file_documents (and so build_vocab and
    create_pretraining_data): a line that is not UTF-8.

An input that holds no item at all (an empty file, a SQuAD file without
questions) is bad input too: "fail" raises naming it; "skip" counts it, warns
and goes on, so that one empty shard among many files does not stop a run.
Empty documents of a text corpus (runs of blank lines, lines of characters the
tokenizer drops) are part of the BERT text format, not bad input: they are
dropped and counted under either value, as the original scripts drop them.

Never skipped, whatever the value: a bad argument, a missing file, and a
header without the columns the reader needs (every row of the file would be
bad, so skipping them would only hide the mistake).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator

from absl import logging

FAIL = "fail"
SKIP = "skip"
VALUES = (FAIL, SKIP)

# Locations of skipped items a reader's stats keep; the counts stay exact beyond.
MAX_PROBLEMS = 100


def check(value: str, name: str = "on_bad_input") -> str:
    """Returns `value` if it is one of `VALUES`; raises naming `name` otherwise.

    Args:
      value: the policy asked for.
      name: where it came from, for the message: the argument, flag or config
        key ("on_bad_input", "--on_bad_input", "data.on_bad_input").

    Raises:
      ValueError: `value` is not "fail" or "skip".
    """
    if value not in VALUES:
        allowed = " or ".join(repr(v) for v in VALUES)
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


@contextlib.contextmanager
def command_errors(prog: str) -> Iterator[None]:
    """Around a command's work: bad input exits with one line, no traceback.

    ValueError and FileNotFoundError are what the readers, config checks and
    checkpoint loaders raise for bad input, with messages that name the file
    and line or the config key; they end the command with exit status 1 and
    `<prog>: error: <message>`. The traceback is logged at --verbosity=1.
    """
    try:
        yield
    except (ValueError, FileNotFoundError) as e:  # CheckpointError is a ValueError
        logging.debug("bad input", exc_info=True)
        sys.exit(f"{prog}: error: {e}")


@contextlib.contextmanager
def interruptible(prog: str) -> Iterator[None]:
    """Around a command that writes its outputs through `files.atomic_paths`:
    SIGTERM (`kill`, a job scheduler) stops it as Ctrl-C does.

    Either signal raises KeyboardInterrupt where the command is, so the
    `atomic_paths` blocks it is in remove their temporary files (Python's
    default SIGTERM ends the process at once and leaves them); the command
    then exits with status 1 and `<prog>: error: interrupted by SIG...: no
    output written`.
    """
    received = []

    def stop(signum, frame):
        del frame
        received.append(signal.Signals(signum).name)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except KeyboardInterrupt:
        logging.debug("interrupted", exc_info=True)
        name = received[0] if received else "SIGINT"
        sys.exit(f"{prog}: error: interrupted by {name}: no output written")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
