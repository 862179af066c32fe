"""metrics.jsonl + TensorBoard, written by process 0 only."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
from etils import epath

from bert_jax.data import files


class MetricWriter:
    """Appends one JSON object per call to metrics.jsonl and mirrors it to TensorBoard.

    Args:
      workdir: the run's directory.
      start_time: wall_time 0 of the rows.
      resume_step: the step the run starts from (0 for a fresh run). Rows of
        later steps, written by an earlier process that stopped after its
        last checkpoint, are dropped: the resumed run writes them again, so
        metrics.jsonl holds every step once.
      redo_evals: the resumed run evaluates `resume_step` again (it is the
        final step, whose eval follows the loop): its eval rows are dropped too.
    """

    def __init__(
        self,
        workdir: str,
        start_time: float | None = None,
        resume_step: int = 0,
        redo_evals: bool = False,
    ):
        self.enabled = jax.process_index() == 0
        self.start = start_time if start_time is not None else time.time()
        self.path = epath.Path(workdir) / "metrics.jsonl"
        self.workdir = str(workdir)
        self._tb = None  # made at the first row: a run that writes none leaves no event file
        if self.enabled:
            self._drop_rows_after(resume_step, redo_evals)

    def _drop_rows_after(self, step: int, redo_evals: bool) -> None:
        if not self.path.exists():
            return
        lines = self.path.read_text().splitlines()

        def kept(line: str) -> bool:
            s = _row_step(line)  # None: a torn last line (process killed mid-write)
            if s is None or s > step:
                return False
            return not (redo_evals and s == step and '"eval/' in line)

        keep = [line for line in lines if kept(line)]
        if len(keep) != len(lines):
            with files.atomic_write(os.fspath(self.path)) as f:
                f.write("".join(line + "\n" for line in keep).encode("utf-8"))

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), "wall_time": round(time.time() - self.start, 3)}
        row |= {k: float(v) for k, v in metrics.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is None:
            from tensorboardX import SummaryWriter  # event files without a TF graph

            self._tb = SummaryWriter(self.workdir, flush_secs=30)
        for k, v in metrics.items():
            self._tb.add_scalar(k, float(v), int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _row_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None
