"""results.md, results.csv, runs.csv and the plots of `bert_jax.experiments.results`.

The reading and choosing live in `bert_jax.experiments.results`; this module only
writes what it decided (tables per task, the GLUE average, every run, the
skipped workdirs).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bert_jax.experiments import paper_numbers
from bert_jax.experiments.paper_numbers import Score
from bert_jax.experiments.summary import (
    Run,
    Skipped,
    TaskResult,
    glue_average,
    series,
    setting_label,
)


def _num(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def _csv_num(x: float | None) -> str:
    return "" if x is None else repr(round(x, 6))


def _md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return lines


def task_rows(t: TaskResult) -> list[dict[str, Any]]:
    """One row per score of the task's chosen setting, with the BERT paper's number."""
    rows = []
    for score in t.scores:
        median = t.chosen.median(score)
        paper = paper_numbers.paper_number(t.task, score.key, t.paper_model)
        rows.append(
            {
                "task": t.name,
                "metric": score.label,
                "key": score.key,
                "setting": t.label(t.chosen),
                "seeds": len(t.chosen.values(score)),
                "median": median,
                "std": t.chosen.std(score),
                "paper": paper,
                "diff": None if paper is None or median is None else median - paper.value,
            }
        )
    return rows


def summary_table(results: Sequence[TaskResult]) -> str:
    """The per-task table (markdown): chosen setting, seeds, median, std, the BERT
    paper's number and the difference, a row per score."""
    rows = [
        [r["task"], r["metric"], r["setting"], r["seeds"], _num(r["median"]), _num(r["std"])]
        + [r["paper"].label if r["paper"] else "-", _num(r["diff"], signed=True)]
        for t in results
        for r in task_rows(t)
    ]
    headers = ["task", "metric", "chosen setting", "seeds", "median", "std", "BERT paper", "diff"]
    return "\n".join(_md_table(headers, rows))


def _other_published(t: TaskResult) -> list[tuple[Score, paper_numbers.Published]]:
    out = []
    for score in t.scores:
        paper = paper_numbers.paper_number(t.task, score.key, t.paper_model)
        out += [
            (score, p)
            for p in paper_numbers.published(t.task, score.key, t.paper_model)
            if p != paper
        ]
    return out


def markdown(
    dirs: Sequence[str],
    runs: Sequence[Run],
    skipped: Sequence[Skipped],
    results: Sequence[TaskResult],
    plots: Sequence[Path] = (),
    out: Path | None = None,
) -> str:
    """results.md."""
    lines = ["# Results", ""]
    sweeps = sorted({r.sweep for r in runs if r.sweep})
    lines += [
        f"Read from {', '.join(f'`{d}`' for d in dirs)}: {len(runs)} finished run(s), "
        f"{len(skipped)} skipped."
        + (f" Sweeps: {', '.join(f'`{s}`' for s in sweeps)}." if sweeps else ""),
        "",
        "Scores in percent, on dev. Per task the setting (all overrides but the seed) "
        "with the highest median of the paper's metric over seeds is chosen, as the BERT "
        "paper picks the learning rate on dev (section 4.1); median and sample standard "
        "deviation (n - 1) over that setting's seeds. The BERT paper column is its dev "
        "number where it has one, else test (GLUE is Table 1, test); diff = median - paper.",
        "",
        "## Per task",
        "",
    ]
    lines += [summary_table(results), ""]
    lines += [
        f"- {t.name}: compared with BERT-{t.paper_model} ({t.paper_model_reason})." for t in results
    ]

    avg = glue_average(results)
    if avg is not None:
        n = len(paper_numbers.GLUE_AVERAGE)
        lines += ["", "## GLUE average", ""]
        lines += _md_table(
            ["scores", "ours (dev)", f"BERT paper Table 1 ({'/'.join(avg.models)}, test)", "diff"],
            [[f"{len(avg.scores)} of {n}", _num(avg.ours), _num(avg.paper), _num(avg.diff, True)]],
        )
        lines += [
            "",
            "The paper's average: the mean of MNLI-m, MNLI-mm (two scores), QQP F1, QNLI, "
            "SST-2, CoLA MCC, STS-B Spearman, MRPC F1 and RTE; WNLI left out (Table 1 prints "
            "79.6 for base and 82.1 for large). Ours averages the chosen medians of the same "
            "scores.",
        ]
        if avg.missing:
            names = ", ".join(_glue_score_name(task, key) for task, key in avg.missing)
            lines += [
                "",
                f"Partial: {names} missing; the paper column averages Table 1's numbers for "
                "the same scores.",
            ]

    others = [(t, s, p) for t in results for s, p in _other_published(t)]
    if others:
        lines += ["", "## Other published numbers", ""]
        lines += _md_table(
            ["task", "metric", "ours (median)", "published", "model", "split", "source", "diff"],
            [
                [
                    t.name,
                    s.label,
                    _num(t.chosen.median(s)),
                    f"{p.value:g}",
                    p.model,
                    p.split,
                    p.source,
                    _num(_diff(t.chosen.median(s), p.value), True),
                ]
                for t, s, p in others
            ],
        )

    lines += ["", "## Settings per task", ""]
    for t in results:
        primary = t.scores[0]
        lines += [f"### {t.name} (by {primary.label})", ""]
        same = [k for k, _ in t.chosen.setting if k not in t.shown]
        if same:
            lines += [f"Same in every run: {setting_label(t.chosen.setting, same)}.", ""]
        lines += _md_table(
            ["setting", "runs", "seeds", "median", "std", "min", "max", ""],
            [
                [
                    t.label(g),
                    len(g.runs),
                    " ".join(map(str, g.seeds)),
                    _num(g.median(primary)),
                    _num(g.std(primary)),
                    _num(float(g.values(primary).min())),
                    _num(float(g.values(primary).max())),
                    "chosen" if g is t.chosen else "",
                ]
                for g in t.groups
            ],
        )
        lines.append("")

    lines += ["## Runs", ""]
    lines += _md_table(
        ["task", "setting", "seed", "dev scores", "steps", "workdir"],
        [
            [t.name, t.label(g), r.seed, _run_scores(t, r), r.step, f"`{r.workdir}`"]
            for t in results
            for g in t.groups
            for r in g.runs
        ],
    )
    lines += ["", "## Skipped", ""]
    if skipped:
        lines += _md_table(["workdir", "reason"], [[f"`{s.workdir}`", s.reason] for s in skipped])
    else:
        lines.append("None: every workdir found holds a finished run.")
    if plots:
        lines += ["", "## Plots", ""]
        for p in plots:
            rel = p.relative_to(out) if out is not None else p
            lines.append(f"![{p.stem}]({rel.as_posix()})")
    return "\n".join(lines) + "\n"


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _glue_score_name(task: str, key: str) -> str:
    score = next(s for s in paper_numbers.scores(task) if s.key == key)
    return f"{paper_numbers.task_name(task)} {score.label}"


def _run_scores(t: TaskResult, r: Run) -> str:
    return "; ".join(f"{s.label} {_num(r.value(s))}" for s in t.scores if r.value(s) is not None)


def write_csv(path: Path, results: Sequence[TaskResult]) -> None:
    """results.csv: a row per task score and published number (no number: one row,
    empty reference), then the GLUE average."""
    header = ["task", "metric", "key", "setting", "seeds", "median", "std"]
    header += ["reference", "reference_model", "reference_split", "reference_source", "diff"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for t in results:
            for row, score in zip(task_rows(t), t.scores, strict=True):
                base = [row["task"], row["metric"], row["key"], row["setting"], row["seeds"]]
                base += [_csv_num(row["median"]), _csv_num(row["std"])]
                refs = paper_numbers.published(t.task, score.key, t.paper_model)
                # The BERT paper's number first, as in results.md.
                refs.sort(key=lambda p: p != row["paper"])
                for p in refs or [None]:
                    if p is None:
                        w.writerow(base + ["", "", "", "", ""])
                    else:
                        diff = _diff(row["median"], p.value)
                        w.writerow(base + [p.value, p.model, p.split, p.source, _csv_num(diff)])
        avg = glue_average(results)
        if avg is not None:
            metric = f"average of {len(avg.scores)} of {len(paper_numbers.GLUE_AVERAGE)} scores"
            w.writerow(
                ["GLUE", metric, "", "", "", _csv_num(avg.ours), ""]
                + [_csv_num(avg.paper), "/".join(avg.models), "test"]
                + ["BERT paper Table 1", _csv_num(avg.diff)]
            )


def write_runs_csv(path: Path, results: Sequence[TaskResult]) -> None:
    """runs.csv: a row per run and score."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["task", "setting", "seed", "metric", "key", "value", "step", "workdir"])
        for t in results:
            for g in t.groups:
                for r in g.runs:
                    for s in t.scores:
                        v = r.value(s)
                        if v is not None:
                            row = [t.name, t.label(g), r.seed, s.label, s.key, _csv_num(v)]
                            w.writerow(row + [r.step, str(r.workdir)])


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_")


def write_plots(out: Path, results: Sequence[TaskResult]) -> list[Path]:
    """plots/<task>_curves.png and plots/<task>_dev_vs_lr.png per task."""
    from bert_jax.experiments import results_plots

    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for t in results:
        runs = [r for g in t.groups for r in g.runs]
        labels = [f"{t.label(g)}, seed {r.seed}" for g in t.groups for r in g.runs]
        colors = [i for i, g in enumerate(t.groups) for _ in g.runs]  # one per setting
        keys = ["train/loss", "train/learning_rate"]
        primary = t.scores[0]
        if any(len(series(r.rows, primary.key)[0]) > 1 for r in runs):
            keys.append(primary.key)  # evaluated during training too
        written.append(
            results_plots.plot_curves(
                runs, labels, folder / f"{_slug(t.task)}_curves.png", keys, t.name, colors
            )
        )
        written.append(results_plots.plot_score_vs_lr(t, folder / f"{_slug(t.task)}_dev_vs_lr.png"))
    return written
