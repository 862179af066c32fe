"""Results tables from training workdirs, against the published numbers.

    python -m bert_jax.experiments.results runs/glue_paper runs/squad --out=results/
    python -m bert_jax.experiments.results runs/glue_paper --out=results/ --paper_model=large

Each DIR is a workdir or a folder of them, searched recursively (a workdir
holds config.json or results.json, or a sweep's sweep_point.json before its
run starts). Runs are grouped by task (the GLUE task, SQuAD v1.1/v2.0, NER,
...) and, within a task, by their setting: every override of the sweep point
but the seed (sweep_point.json), else the learning rate, epochs, batch size,
steps, model size and initial checkpoint of config.json. Per task the setting
with the highest median dev score over its seeds is chosen. The BERT paper
picks the learning rate on dev and, on small sets, the best of several
restarts (section 4.1); the median keeps a lucky seed from choosing the
setting and is what a rerun can expect.

OUT gets results.md (tables per task, the GLUE average, every run, the
skipped ones), results.csv (a row per task score and published number),
runs.csv (a row per run and score) and plots/ (training curves per task, the
dev score against the learning rate per task). Unfinished runs are listed as
skipped with the reason (the step of the newest complete checkpoint, which a
rerun resumes from, and the last logged step where it differs), on stdout and
in results.md. A DIR that does not exist, or holds no finished run, is an
error: one line, `bert_jax.experiments.results: error: ...`, exit status 1.

In Python, `bert_jax.experiments.summary`: `load(dirs)` gives the runs and the skipped workdirs,
`summarize(runs)` the per-task choice, and `read_metrics(workdir)` the rows of
metrics.jsonl (notebooks/pretraining_curves.ipynb uses them).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bert_jax.experiments import paper_numbers, results_report
from bert_jax.experiments.summary import (
    ResultsError,
    Skipped,
    TaskResult,
    best_run,
    glue_average,
    load,
    summarize,
)

PROG = "bert_jax.experiments.results"


def glue_submissions(results: Sequence[TaskResult], out_dir: str) -> list[str]:
    """The GLUE leaderboard files (test predictions) of each GLUE task's best run."""
    from bert_jax.tools.predict import Predictor, glue_submission

    written = []
    for t in results:
        run = best_run(t)
        if run.config.get("task") == "glue":
            written += glue_submission(Predictor(str(run.workdir)), out_dir)
    if not written:
        raise ResultsError("--glue_submission: no finished GLUE run to predict with")
    return written


def report(
    dirs: Sequence[str], out: str | os.PathLike, paper_model: str | None = None, plots: bool = True
) -> tuple[list[TaskResult], list[Skipped]]:
    """Reads `dirs`, writes OUT/results.md, results.csv, runs.csv and plots/.

    Raises:
      ResultsError: see `load` and `summarize`.
    """
    if not dirs:
        raise ResultsError("give one or more DIRs: workdirs, or folders of them")
    runs, skipped = load(dirs)
    results = summarize(runs, paper_model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pngs = results_report.write_plots(out, results) if plots else []
    (out / "results.md").write_text(
        results_report.markdown(dirs, runs, skipped, results, pngs, out), encoding="utf-8"
    )
    results_report.write_csv(out / "results.csv", results)
    results_report.write_runs_csv(out / "runs.csv", results)
    return results, skipped


def main(argv: Sequence[str]) -> None:
    from absl import flags

    FLAGS = flags.FLAGS
    dirs = list(argv[1:])
    try:
        results, skipped = report(dirs, FLAGS.out, FLAGS.paper_model, FLAGS.plots)
    except ResultsError as e:
        sys.exit(f"{PROG}: error: {e}")
    print(results_report.summary_table(results))
    avg = glue_average(results)
    if avg is not None:
        print(
            f"GLUE average ({len(avg.scores)} of {len(paper_numbers.GLUE_AVERAGE)} scores): "
            f"{avg.ours:.2f} dev vs {avg.paper:.2f} BERT paper test ({avg.diff:+.2f})"
        )
    for s in skipped:
        print(f"skipped {s.workdir}: {s.reason}")
    plots = ", plots/" if FLAGS.plots else ""
    print(f"wrote {Path(FLAGS.out) / 'results.md'}, results.csv, runs.csv{plots}")
    if FLAGS.glue_submission:
        try:
            for path in glue_submissions(results, FLAGS.glue_submission):
                print(f"wrote {path}")
        except ResultsError as e:
            sys.exit(f"{PROG}: error: {e}")


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("out", None, "Folder for results.md, results.csv, runs.csv, plots/.")
    flags.DEFINE_enum(
        "paper_model",
        None,
        ["base", "large"],
        "The BERT size to compare with (default: inferred per task from hidden size/layers).",
    )
    flags.DEFINE_bool("plots", True, "Write the PNG plots.")
    flags.DEFINE_string(
        "glue_submission",
        "",
        "Also write the GLUE leaderboard files (test-set predictions) of each GLUE "
        "task's best run (the chosen setting's best seed on dev) to this folder.",
    )
    flags.mark_flag_as_required("out")


if __name__ == "__main__":
    from absl import app

    from bert_jax import cli

    _define_flags()
    cli.quiet_logging()  # libraries' INFO lines only at --verbosity=1
    app.run(main, flags_parser=cli.flags_parser(PROG))
