"""Run a fine-tuned (or pretrained) model on new text: JSON lines out.

    python -m bert_jax.tools.predict --workdir=runs/sst2 --text="a gorgeous, witty film"
    python -m bert_jax.tools.predict --workdir=runs/mnli --input=pairs.tsv      # text_a<TAB>text_b
    python -m bert_jax.tools.predict --workdir=runs/ner --text="Angela Merkel visited Paris."
    python -m bert_jax.tools.predict --workdir=runs/squad --input=qa.jsonl # {"question", "context"}
    python -m bert_jax.tools.predict --workdir=runs/swag --input=mc.jsonl   # {"context", "endings"}
    python -m bert_jax.tools.predict --workdir=runs/tiny --text="The [MASK] is raised."  # fill-mask

The workdir's `config.json`, `task.json`, `vocab.txt` and newest checkpoint
define the task, model and tokenizer; the task's `predict` turns inputs into
results (`bert_jax/tasks/base.py`): classification {"label",
"probabilities"}, regression {"score"}, NER {"entities": [{"type", "text",
"start", "end"}]} (character offsets into the text), QA {"answer",
"probability", "start", "end"} (character offsets into the context; SQuAD
v2.0 adds "null_odds" and answers "" above the null threshold tuned on dev),
multiple choice {"choice", "probabilities"}, pretraining the top 5 tokens for
each [MASK].

A workdir without results.json (stopped, or still training) answers from its
newest checkpoint after a warning naming the step. An empty --text is
refused, blank --input lines are skipped (a warning counts them), and an
input the task cannot read ends the command with one line naming it
("--text 2: ...", "--input FILE:3: ...").
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from etils import epath

from bert_jax import cli, cpu_env, tasks
from bert_jax.checkpoints import formats as checkpoint_formats
from bert_jax.checkpoints import pretrained
from bert_jax.data import bad_input, files, glue, progress
from bert_jax.metrics import glue as glue_metrics

FLAGS = flags.FLAGS
PROG = "bert_jax.tools.predict"


def _define_flags() -> None:
    """The command's flags, defined only when it runs (the module is also imported)."""
    flags.DEFINE_string("workdir", None, "A training run's workdir.")
    flags.DEFINE_multi_string("text", [], "Input text (repeatable). Pairs: 'a<TAB>b'; QA: JSON.")
    flags.DEFINE_string("input", None, "A file with one input per line (as --text).")
    flags.DEFINE_integer("batch_size", 32, "Inputs per forward pass.")
    flags.DEFINE_string(
        "glue_submission",
        None,
        "GLUE runs: predict the test split(s) and write "
        "the leaderboard files (e.g. SST-2.tsv; MNLI-m/-mm and AX for MNLI) here.",
    )
    flags.mark_flag_as_required("workdir")


class Predictor:
    """A workdir as a function from inputs (strings) to JSON-able results.

    Builds the run's task from its config.json without reading any dataset,
    with the tokenizer and labels the run stored (its tokenizer files, task.json), and
    the model from its newest checkpoint. A workdir without results.json (a run
    stopped or still running) is used as it is, with a warning naming its step.
    """

    def __init__(self, workdir: str):
        wd = epath.Path(workdir)
        for name in ("config.json", "task.json"):
            if not (wd / name).exists():
                raise FileNotFoundError(f"{wd / name} not found: is {wd} a bert_jax workdir?")
        info = checkpoint_formats.read_json(wd / "task.json")
        self.config = ml_collections.ConfigDict(checkpoint_formats.read_json(wd / "config.json"))
        if (wd / "vocab.txt").exists():
            self.config.data.vocab_file = str(wd / "vocab.txt")
            self.config.data.do_lower_case = info.get("do_lower_case", True)
        elif any((wd / f).exists() for f in ("spiece.model", "vocab.json")):
            # An ALBERT or RoBERTa run: the workdir holds that tokenizer's files.
            self.config.data.vocab_file = ""
            self.config.data.tokenizer_dir = str(wd)
            self.config.data.do_lower_case = info.get("do_lower_case", True)
        if "labels" in self.config.data and info.get("labels"):
            self.config.data.labels = tuple(info["labels"])  # as trained, not re-read
        self.task = tasks.get(self.config)
        results = wd / "results.json"
        self.run_metrics = json.loads(results.read_text())["metrics"] if results.exists() else {}
        model, params = pretrained.load(wd)
        if unfinished := cli.unfinished(workdir):
            logging.warning("%s", unfinished)
        apply = jax.jit(lambda p, inputs: model.apply({"params": p}, **inputs))
        self.forward = lambda inputs: apply(params, {k: np.asarray(v) for k, v in inputs.items()})

    def __call__(self, inputs: Sequence[str]) -> list[dict]:
        return self.task.predict(self.forward, list(inputs), self.run_metrics)


def glue_submission(predictor: Predictor, out_dir: str, batch_size: int = 64) -> list[str]:
    """Predict a GLUE run's test split(s) and write the submission files.

    MNLI writes MNLI-m.tsv and MNLI-mm.tsv and, with the same model, AX.tsv
    (the diagnostic set, scored by GLUE with MCC) when `diagnostic/` exists.
    """
    c = predictor.config
    if c.task != "glue":
        raise ValueError(f"--glue_submission needs a GLUE run, this one is {c.task!r}")
    data_dir = c.data.data_dir or None
    jobs = [(c.glue_task, s) for s in glue.get_task(c.glue_task).submissions]
    if c.glue_task == "mnli" and data_dir and epath.Path(data_dir, "diagnostic").is_dir():
        jobs.append(("ax", "test"))
    written = []
    for task, split in jobs:
        examples = glue.load_split(task, split, data_dir)
        lines = [e.text_a + ("\t" + e.text_b if e.text_b else "") for e in examples]
        starts = progress.bar(
            range(0, len(lines), batch_size), desc=f"{task} {split}", unit="batch"
        )
        rows = [r for i in starts for r in predictor(lines[i : i + batch_size])]
        preds = [r["score"] if "score" in r else r["label"] for r in rows]
        indices = [e.index if e.index is not None else i for i, e in enumerate(examples)]
        written.append(
            str(glue_metrics.write_submission(task, preds, out_dir, indices, split=split))
        )
    return written


def read_inputs(path: str) -> list[str]:
    """The non-blank lines of an --input file (see `gather_inputs`)."""
    return gather_inputs([], path)[0]


def gather_inputs(texts: Sequence[str], path: str | None) -> tuple[list[str], list[str]]:
    """The inputs of --text and --input, and where each came from ("--text 2", "FILE:3").

    An empty --text is refused; the blank lines of a file are skipped (one warning
    counts them), and a file without other lines is refused. Errors name the
    flag, or the file and line (a line that is not UTF-8).
    """
    lines, where = [], []
    for number, text in enumerate(texts, 1):
        if not text.strip():
            raise ValueError(f"--text {number}: empty text (give the words to predict on)")
        lines.append(text)
        where.append(f"--text {number}")
    if path:
        found = blank = 0
        try:
            for number, line in files.numbered_lines(path):
                if isinstance(line, UnicodeDecodeError):
                    raise ValueError(f"--input {path}:{number}: not UTF-8 ({line.reason})")
                if not line.strip():
                    blank += 1
                    continue
                lines.append(line)
                where.append(f"--input {path}:{number}")
                found += 1
        except FileNotFoundError:
            raise FileNotFoundError(f"--input {path}: no such file") from None
        if not found:
            raise ValueError(f"--input {path}: no text (the file is empty or blank)")
        if blank:
            logging.warning("--input %s: skipped %d blank line(s)", path, blank)
    if not lines:
        raise ValueError("give --text or --input")
    return lines, where


def _located(error: ValueError, where: Sequence[str]) -> ValueError:
    """A task's "input I: ..." (I counts within one batch) as "--text 2: ..." or
    "--input FILE:3: ..."."""
    m = re.fullmatch(r"input (\d+): (.*)", str(error), re.DOTALL)
    if not m or int(m.group(1)) >= len(where):
        return error
    return ValueError(f"{where[int(m.group(1))]}: {m.group(2)}")


def main(argv):
    if len(argv) > 1:
        raise SystemExit(f"{PROG}: error: unexpected arguments: {argv[1:]}")
    with bad_input.command_errors(PROG):
        # Bad input before the model loads.
        lines, where = ([], []) if FLAGS.glue_submission else gather_inputs(FLAGS.text, FLAGS.input)
        predictor = Predictor(FLAGS.workdir)
        if FLAGS.glue_submission:
            for path in glue_submission(predictor, FLAGS.glue_submission, FLAGS.batch_size):
                print(f"wrote {path}")
            return
        starts = range(0, len(lines), FLAGS.batch_size)
        for i in progress.bar(starts, desc="predict", unit="batch"):
            try:
                rows = predictor(lines[i : i + FLAGS.batch_size])
            except ValueError as e:  # an input the task cannot read (e.g. no [MASK])
                raise _located(e, where[i : i + FLAGS.batch_size]) from e
            progress.write("\n".join(json.dumps(row) for row in rows))  # above the bar


if __name__ == "__main__":
    # The CPU settings `python -m bert_jax.main` starts with (docs/performance.md).
    cpu_env.apply()
    cli.quiet_logging()  # libraries' INFO lines only at --verbosity=1
    _define_flags()
    app.run(main, flags_parser=cli.flags_parser(PROG))
