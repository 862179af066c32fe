"""Save, prune and resume the train state with orbax; stop cleanly on preemption.

Layout (ARCHITECTURE.md): `<workdir>/checkpoints/<step>/` with two orbax items,
`state` (the train state pytree: step, params, optimizer state, typed PRNG key;
sharded arrays are written shard by shard) and `data_state` (the input
iterator position, opaque JSON). Orbax writes each step into
`<step>.orbax-checkpoint-tmp-*` (or, on GCS, without `commit_success.txt`) and
renames it only when complete, so a run killed mid-save leaves nothing that
`latest_step` or `restore` will pick up.

In the trainer::

    ckpt = checkpoint.Checkpointer(workdir, every=config.checkpoint_every)
    if ckpt.latest_step() is not None:
        state, data_state = ckpt.restore(abstract_state)  # same shardings as planned
    with checkpoint.PreemptionGuard() as guard:
        for step in range(start, total + 1):
            ...
            stop = guard.should_stop()
            ckpt.save(step, state, it.state(), metrics, force=stop or step == total)
            if stop:
                break
    ckpt.close()  # waits for the last async save

Saves are asynchronous: `save` copies the arrays to host memory and returns, the
files are written by a background thread (so donating the state to the next
step is safe). The next `save` or `wait`/`close` waits for the previous one.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as policies

PyTree = Any


def _path_str(path) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/")


def _stored_shape(leaf) -> tuple[int, ...]:
    """The shape orbax stores for a target leaf: typed PRNG keys go to disk as key_data."""
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype))
    return tuple(leaf.shape)


class Checkpointer:
    """Orbax CheckpointManager at `<workdir>/checkpoints`: async saves, last-K (+ best) kept.

    Args:
      workdir: the run's directory, local or `gs://`.
      every: save when `step % every == 0` (orbax `FixedIntervalPolicy`), or when
        the JAX preemption service reports a sync point (multi-host TPU); any
        other step is saved only with `save(..., force=True)` (end of training,
        SIGTERM).
      keep: how many of the newest checkpoints to keep.
      best_metric: if set (e.g. "eval/mlm_accuracy"), the best checkpoint by this
        metric is kept too, however old; `keep` newest + 1 best in all.
      best_mode: "max" or "min" for `best_metric`.
      async_save: write in a background thread (the step loop does not wait).
    """

    def __init__(
        self,
        workdir: str | epath.PathLike,
        *,
        every: int = 1000,
        keep: int = 3,
        best_metric: str | None = None,
        best_mode: str = "max",
        async_save: bool = True,
    ):
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        # orbax needs an absolute path; a local workdir may be given relative.
        root = str(workdir)
        if "://" not in root:
            root = os.path.abspath(root)
        self.directory = epath.Path(root) / "checkpoints"
        self._best_metric = best_metric
        preserve = [policies.LatestN(n=keep)]
        best_fn = None
        if best_metric is not None:
            # A stored step whose metrics lack the key (best_metric renamed) ranks last.
            worst = float("-inf") if best_mode == "max" else float("inf")
            best_fn = lambda metrics: metrics.get(best_metric, worst)
            # BestN sorts ascending and keeps the tail, so "min" needs reverse. Saves without
            # the metric must not be pinned forever: LatestN already covers the recent ones.
            preserve.append(
                policies.BestN(
                    get_metric_fn=best_fn,
                    reverse=best_mode == "min",
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=policies.AnySavePolicy(
                [policies.FixedIntervalPolicy(every), policies.PreemptionCheckpointingPolicy()]
            ),
            preservation_policy=policies.AnyPreservationPolicy(preserve),
            # best_fn is still needed beside preservation_policy: orbax only writes the
            # metrics file (which BestN reads back after a restart) when it is set.
            best_fn=best_fn,
            best_mode=best_mode,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,  # half-written steps of a killed run
            # Nothing is created until the first save: a run that fails its
            # checks leaves no empty checkpoints/ behind.
            create=False,
        )
        # Naming the handlers lets a fresh manager read step metadata before any save.
        registry = ocp.handlers.create_default_handler_registry(
            state=ocp.StandardCheckpointHandler(), data_state=ocp.JsonCheckpointHandler()
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, handler_registry=registry
        )

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> Sequence[int]:
        return self._manager.all_steps()

    def best_step(self) -> int | None:
        """The best step by `best_metric` (the latest one when no metric is tracked)."""
        return self._manager.best_step()

    def should_save(self, step: int) -> bool:
        """Whether `save(step, ...)` without force would write (an interval or preemption step)."""
        return int(step) not in self._manager.all_steps() and self._manager.should_save(int(step))

    def save(
        self,
        step: int,
        state: PyTree,
        data_state: dict | list,
        metrics: dict | None = None,
        force: bool = False,
    ) -> bool:
        """Starts saving `state` and `data_state` as `step` if due (or `force`); True if saving.

        Call it on every host every step; it returns at once when no save is due.
        `metrics` may hold any values; only `best_metric`, when present, is kept with the
        checkpoint, so pass eval metrics at the step they were computed. A step that is
        already saved (e.g. resumed at the final step) is skipped.
        """
        step = int(step)
        if step in self._manager.all_steps():
            return False
        tracked = None
        if self._best_metric is not None and metrics and self._best_metric in metrics:
            tracked = {self._best_metric: float(metrics[self._best_metric])}
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), data_state=ocp.args.JsonSave(data_state)
        )
        return self._manager.save(step, args=args, metrics=tracked, force=force)

    def restore(self, abstract_state: PyTree, step: int | None = None) -> tuple[PyTree, Any]:
        """Restores `(state, data_state)` from `step` (default: the latest complete one).

        Args:
          abstract_state: the planned state, e.g. `jax.eval_shape(init)` with a
            `NamedSharding` on each leaf; arrays come back with those shardings,
            typed PRNG keys as typed keys. A leaf without a sharding comes back as
            a numpy array.
          step: which checkpoint; None for the latest.

        Raises:
          FileNotFoundError: no complete checkpoint exists.
          ValueError: the checkpoint's parameter paths or shapes differ from
            `abstract_state` (e.g. a checkpoint of another model size).
        """
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        self._check_shapes(step, abstract_state)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data_state=ocp.args.JsonRestore(),
            ),
        )
        logging.info("Restored checkpoint %d from %s", step, self.directory)
        return restored.state, restored.data_state

    def _check_shapes(self, step: int, abstract_state: PyTree) -> None:
        """Raises one ValueError naming every path whose stored shape differs from the target."""
        stored = self._manager.metadata(step).item_metadata["state"].tree
        stored = {_path_str(p): tuple(m.shape) for p, m in jax.tree.leaves_with_path(stored)}
        target = {
            _path_str(p): _stored_shape(x) for p, x in jax.tree.leaves_with_path(abstract_state)
        }
        problems = [
            f"  {k}: checkpoint {stored.get(k, 'missing')} vs target {target.get(k, 'missing')}"
            for k in {**target, **stored}
            if stored.get(k) != target.get(k)
        ]
        if problems:
            more = [f"  ... and {len(problems) - 20} more"] if len(problems) > 20 else []
            raise ValueError(
                f"checkpoint {self.directory / str(step)} does not fit the model's state "
                f"({len(problems)} mismatches):\n" + "\n".join(problems[:20] + more)
            )

    def wait(self) -> None:
        """Blocks until the pending async save (if any) is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and deletions, then releases orbax's threads."""
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PreemptionGuard:
    """Turns SIGTERM (TPU VM preemption, `kill`) into a flag the step loop polls.

    The handler only records the signal, so the process keeps running until the loop
    calls `should_stop()`, saves a checkpoint and exits. Handlers are installed on
    `__enter__` (from the main thread) and the previous ones restored on `__exit__`.

    Multi-host: a signal may reach only some hosts, so `should_stop()` ORs the flag
    over all processes (`multihost_utils.process_allgather`); it is a collective, so
    every host must call it at the same steps. On TPU pods with
    `jax.distributed.initialize()` the JAX preemption service offers the same
    agreement through `jax.experimental.multihost_utils.reached_preemption_sync_point`,
    which `Checkpointer.save` already consults (orbax `PreemptionCheckpointingPolicy`).

    Args:
      signals: which signals to catch; add `signal.SIGINT` to save on Ctrl-C too.
    """

    def __init__(self, signals: Sequence[int] = (signal.SIGTERM,)):
        self._signals = tuple(signals)
        self._previous: dict[int, Any] = {}
        self._received = threading.Event()
        self.signum: int | None = None  # the signal that arrived, for the log

    def _handle(self, signum, frame) -> None:
        del frame
        self.signum = signum
        self._received.set()

    def __enter__(self) -> PreemptionGuard:
        for sig in self._signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def should_stop(self) -> bool:
        """True once any process has received one of the signals."""
        stop = self._received.is_set()
        if jax.process_count() > 1:
            stop = bool(np.any(multihost_utils.process_allgather(np.array(stop))))
        if stop:
            logging.warning("Preemption signal received: saving and stopping.")
        return stop
