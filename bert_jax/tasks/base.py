"""The contract between the trainer and a task family: all `train.run` knows of a task.

A task turns a config into a model with its head, batches, a loss, and
metrics; it is built by `bert_jax.tasks.get(config)` and must be cheap to
build: data is read only when `train_source` or `eval_sets` is called, so a
workdir's task can be rebuilt for prediction without any dataset. A task
keeps no state between calls: what evaluation needs after the forward passes
(SQuAD's feature windows, NER's word maps) travels in the `EvalSet` that
`eval_sets` returns.

Call order in `train.run`: `model`, `frozen`, `dummy_batch`/`model_inputs`
(to plan the state), `initial_params` (a fresh run), `train_source`,
`eval_sets`; per step `model_inputs`, `frozen_outputs` and `loss` inside the
jitted step; per evaluation `eval_stats` (jitted) on every batch, then
`finalize` on the host.

A task family subclasses `Task`: the last three members (`frozen`,
`frozen_outputs`, `initial_params`) have defaults that do nothing, so only a
task with a second, fixed model (distillation's teacher) writes them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from bert_jax.data.array_source import ArraySource

Batch = Mapping[str, np.ndarray]  # host-local rows: name -> (local batch, ...)
# The model applied with fixed parameters: model inputs -> output dict.
Forward = Callable[[Mapping[str, np.ndarray]], Mapping[str, jax.Array]]


@runtime_checkable
class BatchSource(Protocol):
    """Endless, resumable training batches of this host's rows."""

    num_examples: int | None  # examples per epoch (None: a stream of unknown length)

    def __iter__(self) -> Iterator[Batch]: ...

    def get_state(self) -> dict:
        """JSON-able position, saved in every checkpoint."""
        ...

    def set_state(self, state: dict) -> None:
        """Continue exactly after the batch `get_state` was taken at."""
        ...


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """One held-out set and what turning its outputs into metrics needs.

    Attributes:
      source: every row once (`one_epoch()`), padded rows marked `valid` = 0.
      suffix: appended to its metric names ("_mm": MNLI mismatched).
      context: what `finalize` needs beside the stats (task-defined, e.g.
        SQuAD's examples and feature windows); never changed by `finalize`.
    """

    source: ArraySource
    suffix: str = ""
    context: Any = None


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Metrics of one evaluation, and files the run writes if it is the final one.

    Attributes:
      metrics: name -> value, without the "eval/" prefix.
      files: workdir file name -> text (e.g. SQuAD's predictions.json).
    """

    metrics: Mapping[str, float]
    files: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class FrozenModel:
    """A second model a task trains against but never trains (a distillation teacher).

    The trainer places `params` with the same logical-axis rules as the
    trained params (`module.init` on `inputs` names their axes) and keeps them
    in `TrainState.frozen`: no gradient, no optimizer state, not in the run's
    checkpoints (they are read again from their own checkpoint at every start).

    Attributes:
      module: the model; its params' logical axes come from `module.init`.
      inputs: its keyword inputs for a dummy batch (planning only).
      params: its parameters (host arrays), as `module.apply` takes them.
    """

    module: nn.Module
    inputs: Mapping[str, Any]
    params: Any


@runtime_checkable
class Task(Protocol):
    """A task family: model head, batches, loss, metrics, prediction on new text."""

    config: ml_collections.ConfigDict
    # Class names in output order (written to task.json); None for regression
    # and tasks without labels.
    labels: tuple[str, ...] | None

    def model(self) -> nn.Module:
        """The encoder with this task's head, its architecture from the config."""
        ...

    def tokenizer(self):
        """The tokenizer the data and predictions use, or None (pretraining from
        records without a vocabulary file). Written to the workdir as vocab.txt."""
        ...

    def dummy_batch(self) -> dict[str, np.ndarray]:
        """A one-row batch with the training batches' keys, shapes and dtypes."""
        ...

    def model_inputs(self, batch: Batch) -> dict[str, Any]:
        """The model's keyword inputs from a batch (traced inside jit).

        Named as the model's arguments (`input_ids`, `token_type_ids`,
        `attention_mask`, `masked_positions`); `bert_jax.flops.batch_cost`
        counts tokens and FLOPs from their shapes.
        """
        ...

    def loss(self, outputs: Mapping[str, jax.Array], batch: Batch):
        """(scalar loss, {name: scalar} parts for train/ metrics), traced inside jit."""
        ...

    def train_source(self, process_index: int, process_count: int) -> BatchSource:
        """This host's training batches (reads the training data)."""
        ...

    def eval_sets(self, process_index: int, process_count: int) -> Sequence[EvalSet]:
        """The held-out sets (read once, evaluated at every eval); may be empty."""
        ...

    def eval_stats(self, outputs: Mapping[str, jax.Array], batch: Batch) -> dict[str, jax.Array]:
        """Per batch, traced inside jit: scalars are summed over batches, arrays
        with a batch dimension concatenated (`valid` marks padded rows)."""
        ...

    def finalize(self, eval_set: EvalSet, stats: Mapping[str, Any]) -> EvalResult:
        """Metrics (and output files) from one set's summed/concatenated stats."""
        ...

    def predict(
        self, forward: Forward, inputs: Sequence[str], run_metrics: Mapping[str, float]
    ) -> list[dict]:
        """JSON-able results for new inputs (one string each, format per task).

        `run_metrics` are the run's final eval metrics (results.json), for
        settings tuned on dev (SQuAD v2.0's null threshold).
        """
        ...

    # --- optional: a second, fixed model (defaults: none) -----------------------
    def frozen(self) -> FrozenModel | None:
        """The model this task trains against without training it (a distillation
        teacher), or None. Called once per run."""
        return None

    def frozen_outputs(self, params, batch: Batch) -> dict[str, jax.Array]:
        """Traced inside the step: what the frozen model (`params`: `frozen().params`,
        None without one) adds to each microbatch before `loss` (e.g. the teacher's
        logits), without gradients."""
        return {}

    def initial_params(self, params):
        """A fresh run's params (after `init_checkpoint`, if any): `params` unchanged,
        or e.g. a student made from its teacher's layers. Not called on resume."""
        return params
