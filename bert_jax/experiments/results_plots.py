"""The figures of `bert_jax.experiments.results`, as PNG files.

Figures are built as `matplotlib.figure.Figure` objects and rendered by the
Agg canvas directly: no pyplot, so no global figure state and no display
backend (the same code runs in a terminal, in CI and in a notebook, which
shows the written files).

* `plot_curves`: one panel per metrics.jsonl key (training loss, learning
  rate, an eval metric) against the step, a line per run.
* `plot_score_vs_lr`: a task's dev score against the learning rate, every
  seed a point, each setting's median marked, the chosen setting circled.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bert_jax.experiments.summary import series, setting_label

if TYPE_CHECKING:
    from bert_jax.experiments.summary import Run, TaskResult

LINE_STYLES = ("-", "--", ":", "-.")
TITLES = {
    "train/loss": "training loss",
    "train/learning_rate": "learning rate",
    "eval/mlm_accuracy": "held-out MLM accuracy",
}


def save(fig: Figure, path: str | os.PathLike) -> Path:
    """Renders `fig` with Agg into a PNG at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig).print_png(str(path))
    return path


def curves_figure(
    runs: Sequence[Run],
    labels: Sequence[str],
    keys: Sequence[str],
    title: str = "",
    colors: Sequence[int] | None = None,
) -> Figure:
    """A panel per key, a line per run (its metrics.jsonl rows against the step).

    `colors`: a color index per run (runs of one setting share a color, and
    their seeds get different line styles); default one color per run.
    """
    colors = list(range(len(runs))) if colors is None else list(colors)
    styles = [colors[:i].count(c) for i, c in enumerate(colors)]  # nth run of its color
    fig = Figure(figsize=(4.2 * len(keys), 3.4), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys, strict=True):
        for run, label, c, n in zip(runs, labels, colors, styles, strict=True):
            steps, values = series(run.rows, key)
            if steps:
                ax.plot(
                    steps,
                    values,
                    color=f"C{c % 10}",
                    linestyle=LINE_STYLES[n % len(LINE_STYLES)],
                    marker="." if len(steps) < 30 else None,
                    label=label,
                )
        ax.set_title(TITLES.get(key, key))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if key == "train/learning_rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    if len(runs) <= 12 and axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def plot_curves(
    runs: Sequence[Run],
    labels: Sequence[str],
    path: str | os.PathLike,
    keys: Sequence[str] = ("train/loss", "train/learning_rate"),
    title: str = "",
    colors: Sequence[int] | None = None,
) -> Path:
    """`curves_figure` written to `path` (PNG)."""
    return save(curves_figure(runs, labels, keys, title, colors), path)


def score_vs_lr_figure(t: TaskResult) -> Figure:
    """The task's first score (the paper's metric) against the learning rate.

    Settings that differ in more than the learning rate are separate series;
    the seeds of a setting are points, its median a bar, the chosen one circled.
    """
    score = t.scores[0]
    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = fig.subplots()
    others = tuple(k for k in t.shown if k != "optimizer.learning_rate")
    series_of: dict[str, list] = {}
    for g in t.groups:
        series_of.setdefault(setting_label(g.setting, others), []).append(g)
    lrs = sorted({g.learning_rate for g in t.groups if g.learning_rate is not None})
    for i, (name, groups) in enumerate(series_of.items()):
        color = f"C{i % 10}"
        xs, medians = [], []
        for g in groups:
            x = g.learning_rate if g.learning_rate is not None else 0.0
            values = g.values(score)
            ax.scatter([x] * len(values), values, color=color, alpha=0.6, s=18)
            xs.append(x)
            medians.append(g.median(score))
            if g is t.chosen:
                ax.scatter([x], [g.median(score)], s=220, facecolors="none", edgecolors="black")
        ax.plot(xs, medians, color=color, marker="_", markersize=22, markeredgewidth=2.5)
        ax.plot([], [], color=color, marker="_", label=f"median, {name}" if others else "median")
    ax.scatter([], [], color="gray", alpha=0.6, s=18, label="a seed")
    ax.scatter([], [], s=220, facecolors="none", edgecolors="black", label="chosen")
    if len(lrs) > 1 and lrs[0] > 0:
        ax.set_xscale("log")
    if lrs:
        ax.set_xticks(lrs, [f"{x:g}" for x in lrs])
        ax.minorticks_off()
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"dev {score.label} (%)")
    ax.set_title(f"{t.name}: dev {score.label} per seed")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_score_vs_lr(t: TaskResult, path: str | os.PathLike) -> Path:
    """`score_vs_lr_figure` written to `path` (PNG)."""
    return save(score_vs_lr_figure(t), path)
