"""Training workdirs read back as runs, grouped per task and setting, against the papers.

`load` reads workdirs (as `bert_jax.train` and `bert_jax.experiments.sweep` write them) into
`Run`s; `summarize` groups them per task and hyperparameter setting and picks the setting
the paper's protocol picks. `bert_jax.experiments.results` (the command) writes the report;
`results_report` renders tables and `results_plots` the figures from what this module returns.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bert_jax.configs.model import SIZES
from bert_jax.experiments import paper_numbers
from bert_jax.experiments.paper_numbers import Score

LR = "optimizer.learning_rate"
# A run's setting without a sweep point, read from its config.json.
SETTING_KEYS = (LR, "num_train_epochs", "train_batch_size", "num_train_steps")
SETTING_KEYS += ("model.size", "init_checkpoint")
# Never part of a setting: the seed varies inside one, the others name the task.
NOT_SETTING = ("seed", "task", "glue_task", "version")
WORKDIR_FILES = ("config.json", "results.json", "sweep_point.json")
SHORT_NAMES = {LR: "lr", "num_train_epochs": "epochs", "train_batch_size": "batch"}


class ResultsError(Exception):
    """Bad input: a DIR that does not exist or holds no finished run, a bad flag."""


# ----------------------------------------------------------------- reading


@dataclasses.dataclass
class Run:
    """One finished workdir."""

    workdir: Path
    task: str  # "mrpc", "squad1.1", "ner", "pretraining", ...
    config: dict[str, Any]  # config.json
    metrics: dict[str, float]  # results.json's final eval metrics
    step: int
    seed: int
    overrides: dict[str, Any]  # sweep_point.json's, {} without one
    sweep: str  # the sweep that made it ("" without one)
    rows: list[dict[str, Any]]  # metrics.jsonl
    architecture: tuple[int, int] | None  # (hidden size, layers)

    def value(self, score: Score) -> float | None:
        """The score in percent, None when the run did not write it."""
        v = self.metrics.get(score.key)
        return None if v is None else float(v) * score.scale


@dataclasses.dataclass(frozen=True)
class Skipped:
    workdir: Path
    reason: str


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a workdir's metrics.jsonl (a torn or unparsable line is left out)."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the rows that hold `key`."""
    picked = [(int(r["step"]), float(r[key])) for r in rows if key in r]
    return [s for s, _ in picked], [v for _, v in picked]


def flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"optimizer.learning_rate": ..., ...}."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out |= flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def task_of(config: dict[str, Any]) -> str:
    """The task a config trains: the GLUE task, squad1.1/squad2.0, swag, ner, ..."""
    task = config.get("task") or "unknown"
    data = config.get("data") or {}
    if task == "glue":
        return str(config.get("glue_task") or "glue")
    if task == "squad":
        return f"squad{config.get('version', '1.1')}"
    if task == "multiple_choice":
        return "swag" if data.get("data_dir") else str(data.get("tfds_name") or task)
    if task == "classify":
        name = data.get("tfds_name") or Path(str(data.get("train_file") or "")).name
        return f"classify:{name}" if name else task
    return str(task)


def _architecture(wd: Path, config: dict[str, Any]) -> tuple[int, int] | None:
    """(hidden size, layers): set in the config, else task.json (the trainer writes
    the model it built there), else the config's model.size."""
    model = config.get("model") or {}
    if model.get("hidden_size") and model.get("num_layers"):
        return int(model["hidden_size"]), int(model["num_layers"])
    try:
        built = _read_json(wd / "task.json")["config"]
        return int(built["hidden_size"]), int(built["num_layers"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if model.get("size") and model["size"] in SIZES:
        layers, hidden, _ = SIZES[model["size"]]
        return hidden, layers
    return None


def newest_checkpoint(workdir: str | os.PathLike) -> int | None:
    """The step of the workdir's newest complete checkpoint (what a rerun resumes
    from), None without one. Complete: `checkpoints/<step>/` holds every file of
    `bert_jax.checkpoint.REQUIRED_FILES`; a save still in progress or cut short
    (`<step>.orbax-checkpoint-tmp-*`, a missing commit marker) is not."""
    root = Path(workdir) / "checkpoints"
    if not root.is_dir():
        return None
    # Imported here: it brings jax and orbax, which reading finished runs never needs.
    from bert_jax.checkpoint import REQUIRED_FILES

    steps = [int(d.name) for d in root.iterdir() if d.name.isdigit()]
    complete = [s for s in steps if all((root / str(s) / f).exists() for f in REQUIRED_FILES)]
    return max(complete, default=None)


def _unfinished(wd: Path, config: dict[str, Any] | None) -> str:
    """Where an unfinished run stands: its newest complete checkpoint (where a rerun
    goes on from) and, where it differs, the last step its metrics logged."""
    steps = [int(r["step"]) for r in read_metrics(wd)]
    logged = max(steps, default=None)
    saved = newest_checkpoint(wd)
    total = (config or {}).get("num_train_steps")
    of = f" of {total}" if total else ""
    if saved is not None:
        also = f", last logged step {logged}" if logged is not None and logged != saved else ""
        return f"no results.json: unfinished, checkpoint at step {saved}{of}{also}"
    if logged is None:
        return "no results.json: not started (no metrics.jsonl rows, no checkpoint)"
    return f"no results.json: unfinished at step {logged}{of}, no checkpoint (a rerun starts over)"


def load_run(workdir: str | os.PathLike) -> Run | Skipped:
    """A workdir as a finished Run, or Skipped with the reason."""
    wd = Path(workdir)
    point: dict[str, Any] = {}
    if (wd / "sweep_point.json").exists():
        try:
            point = _read_json(wd / "sweep_point.json")
        except (OSError, ValueError) as e:
            return Skipped(wd, f"sweep_point.json unreadable: {e}")
    config = None
    if (wd / "config.json").exists():
        try:
            config = _read_json(wd / "config.json")
        except (OSError, ValueError) as e:
            return Skipped(wd, f"config.json unreadable: {e}")
    if not (wd / "results.json").exists():
        if config is None and point:
            return Skipped(wd, "not started: sweep_point.json only")
        return Skipped(wd, _unfinished(wd, config))
    try:
        results = _read_json(wd / "results.json")
        metrics, step = results["metrics"], int(results["step"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        return Skipped(wd, f"results.json unreadable: {e!r}")
    config = config if config is not None else results.get("config")
    if not isinstance(config, dict):
        return Skipped(wd, "no config.json, and results.json holds no config")
    task = task_of(config)
    primary = paper_numbers.scores(task)[0]
    value = metrics.get(primary.key)
    if value is None:
        has = ", ".join(metrics) or "no metrics"
        return Skipped(wd, f"results.json has no {primary.key} (has {has})")
    if not math.isfinite(float(value)):
        return Skipped(wd, f"{primary.key} is {value}")
    return Run(
        workdir=wd,
        task=task,
        config=config,
        metrics={k: float(v) for k, v in metrics.items()},
        step=step,
        seed=int(config.get("seed", 0)),
        overrides=dict(point.get("overrides") or {}),
        sweep=str(point.get("sweep") or ""),
        rows=read_metrics(wd),
        architecture=_architecture(wd, config),
    )


def find_workdirs(root: str | os.PathLike) -> list[Path]:
    """Every workdir at or under `root` (not looking inside a workdir), sorted."""
    found = []
    for here, dirs, names in os.walk(root):
        if any(n in names for n in WORKDIR_FILES):
            found.append(Path(here))
            dirs[:] = []  # checkpoints/ and the rest belong to this run
        else:
            dirs.sort()
    return sorted(found)


def load(dirs: Iterable[str | os.PathLike]) -> tuple[list[Run], list[Skipped]]:
    """The finished runs and the skipped workdirs under `dirs`.

    Raises:
      ResultsError: a DIR does not exist or is not a folder, or holds no
        finished run (the message names it and why its workdirs were skipped).
    """
    runs, skipped, seen = [], [], set()
    for d in dirs:
        root = Path(d)
        if not root.exists():
            raise ResultsError(f"{d} does not exist")
        if not root.is_dir():
            raise ResultsError(f"{d} is not a folder")
        found = find_workdirs(root)
        loaded = [load_run(wd) for wd in found]
        if not any(isinstance(r, Run) for r in loaded):
            if not found:
                raise ResultsError(
                    f"no finished runs under {d}: no workdir (config.json or results.json) "
                    "found there"
                )
            why = "; ".join(f"{s.workdir}: {s.reason}" for s in loaded)
            raise ResultsError(
                f"no finished runs under {d}: {len(found)} workdir(s), all skipped ({why})"
            )
        for wd, r in zip(found, loaded, strict=True):
            if wd.resolve() not in seen:  # DIRs may overlap: each workdir once
                seen.add(wd.resolve())
                (runs if isinstance(r, Run) else skipped).append(r)
    return runs, skipped


# ------------------------------------------------------------- summarizing


@dataclasses.dataclass
class Group:
    """The runs of one setting of one task (its seeds)."""

    setting: tuple[tuple[str, Any], ...]  # (key, value) over the task's setting keys
    runs: list[Run]

    def values(self, score: Score) -> np.ndarray:
        """The score of each run that wrote it, in percent."""
        got = [r.value(score) for r in self.runs]
        return np.asarray([v for v in got if v is not None], np.float64)

    def median(self, score: Score) -> float | None:
        v = self.values(score)
        return float(np.median(v)) if len(v) else None

    def std(self, score: Score) -> float | None:
        """Sample standard deviation over seeds (n - 1); None for a single seed."""
        v = self.values(score)
        return float(np.std(v, ddof=1)) if len(v) > 1 else None

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs)

    @property
    def learning_rate(self) -> float | None:
        value = dict(self.setting).get(LR)
        return float(value) if isinstance(value, int | float) else None


@dataclasses.dataclass
class TaskResult:
    task: str
    scores: tuple[Score, ...]  # the first chooses the setting
    groups: list[Group]  # sorted by setting
    chosen: Group
    shown: tuple[str, ...]  # the setting keys that tell its groups apart (lr always)
    paper_model: str  # "base" | "large"
    paper_model_reason: str

    @property
    def name(self) -> str:
        return paper_numbers.task_name(self.task)

    def label(self, group: Group) -> str:
        return setting_label(group.setting, self.shown)


def _format_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return '""' if v == "" else str(v)


def setting_label(setting: Sequence[tuple[str, Any]], keys: Sequence[str]) -> str:
    values = dict(setting)
    return ", ".join(f"{SHORT_NAMES.get(k, k)}={_format_value(values.get(k))}" for k in keys)


def _sort_key(value: Any) -> tuple:
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, bool | int | float):
        return (1, float(value), "")
    return (2, 0.0, json.dumps(value, sort_keys=True, default=str))


def infer_paper_model(run: Run) -> tuple[str, str]:
    """("base" | "large", why) for a run's architecture."""
    if run.architecture is None:
        return "base", "architecture unknown: compared with BERT-base"
    hidden, layers = run.architecture
    if (hidden, layers) in ((768, 12), (1024, 24)):
        model = "base" if hidden == 768 else "large"
        return model, f"hidden {hidden}, {layers} layers: BERT-{model}"
    model = "large" if hidden >= 1024 or layers >= 24 else "base"
    return model, (
        f"hidden {hidden}, {layers} layers: not a BERT paper size, compared with BERT-{model}"
    )


def _summarize_task(task: str, runs: list[Run], paper_model: str | None) -> TaskResult:
    # The setting keys: those swept (any run's sweep point) and the defaults.
    keys = list(SETTING_KEYS)
    for r in runs:
        keys += [k for k in r.overrides if k not in keys]
    keys = [k for k in keys if k not in NOT_SETTING]

    def setting(r: Run) -> tuple[tuple[str, Any], ...]:
        config = flat(r.config)
        return tuple((k, config[k] if k in config else r.overrides.get(k)) for k in keys)

    by_setting: dict[str, Group] = {}
    for r in runs:
        s = setting(r)
        by_setting.setdefault(json.dumps(s, default=str), Group(s, [])).runs.append(r)
    groups = sorted(by_setting.values(), key=lambda g: [_sort_key(v) for _, v in g.setting])
    for g in groups:
        g.runs.sort(key=lambda r: (r.seed, str(r.workdir)))
    varying = [
        k for i, k in enumerate(keys) if len({json.dumps(g.setting[i][1]) for g in groups}) > 1
    ]
    shown = tuple(dict.fromkeys([LR, *varying]))
    scores = paper_numbers.scores(task)
    # Highest median of the paper's metric; ties: more seeds, then the first in order.
    rank = [(g.median(scores[0]), len(g.runs), -i) for i, g in enumerate(groups)]
    chosen = groups[rank.index(max(rank))]
    if paper_model:
        model, reason = paper_model, "--paper_model"
    else:
        model, reason = infer_paper_model(chosen.runs[0])
    return TaskResult(task, scores, groups, chosen, shown, model, reason)


def _task_order(task: str) -> tuple[int, str]:
    names = list(paper_numbers.TASK_NAMES)
    return (names.index(task), "") if task in names else (len(names), task)


def summarize(runs: Sequence[Run], paper_model: str | None = None) -> list[TaskResult]:
    """Per task (in the paper's order), the groups of runs and the chosen one.

    Args:
      runs: finished runs (`load`).
      paper_model: "base" or "large" to compare every task with; None infers
        it per task from the chosen runs' architecture.
    """
    if paper_model not in (None, "base", "large"):
        raise ResultsError(f"--paper_model={paper_model!r}: choose base or large")
    by_task: dict[str, list[Run]] = {}
    for r in runs:
        by_task.setdefault(r.task, []).append(r)
    order = sorted(by_task, key=_task_order)
    return [_summarize_task(task, by_task[task], paper_model) for task in order]


@dataclasses.dataclass
class GlueAverage:
    ours: float  # mean of the chosen medians (dev)
    paper: float  # mean of Table 1's numbers (test) for the same scores
    scores: list[tuple[str, str]]  # (task, key) averaged
    missing: list[tuple[str, str]]
    models: list[str]  # the paper sizes compared with

    @property
    def diff(self) -> float:
        return self.ours - self.paper


def glue_average(results: Sequence[TaskResult]) -> GlueAverage | None:
    """The GLUE average the paper's way (paper_numbers.GLUE_AVERAGE: nine scores,
    MNLI-m and -mm counted separately, F1 for QQP/MRPC, Spearman for STS-B, no
    WNLI) over the tasks present; None without any GLUE task."""
    by_task = {t.task: t for t in results}
    ours, paper, used, missing, models = [], [], [], [], []
    for task, key in paper_numbers.GLUE_AVERAGE:
        t = by_task.get(task)
        score = next((s for s in t.scores if s.key == key), None) if t else None
        median = t.chosen.median(score) if score else None
        if median is None:
            missing.append((task, key))
            continue
        published = paper_numbers.paper_number(task, key, t.paper_model)
        ours.append(median)
        paper.append(published.value)
        used.append((task, key))
        models.append(t.paper_model)
    if not used:
        return None
    return GlueAverage(
        float(np.mean(ours)), float(np.mean(paper)), used, missing, sorted(set(models))
    )


def best_run(t: TaskResult) -> Run:
    """The chosen setting's best run on dev (the paper keeps the best restart, 4.1)."""
    score = t.scores[0]
    return max(t.chosen.runs, key=lambda r: (r.value(score) or -math.inf, -r.seed))
