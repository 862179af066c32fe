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

Faults (docs/reliability.md): `restore_latest` skips a newest checkpoint that
lacks its commit marker or a file, whose files differ from the CRC-32 manifest
written at save time (cut short, or bytes changed in place:
`bert_jax.checkpoints.checksums`), or that cannot be read, saying which
directory and what is wrong, moves it to `<workdir>/bad_checkpoints/` and
resumes from the previous one; it never starts over silently. A checkpoint of
another model is refused (`CheckpointMismatchError`), and a failed save (a
full disk) raises `CheckpointSaveError` naming the step and the intact
checkpoint before it.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as policies

from bert_jax.checkpoints import checksums

PyTree = Any

# What every complete step directory holds (orbax writes the commit markers
# last, just before the rename; on GCS they are the only sign of completion).
REQUIRED_FILES = (
    "commit_success.txt",
    "_CHECKPOINT_METADATA",
    "state/commit_success.txt",
    "state/_METADATA",
    "state/manifest.ocdbt",
    "data_state/commit_success.txt",
    "data_state/metadata",
)
BAD_DIR = "bad_checkpoints"  # beside checkpoints/: unusable steps are moved here


class CheckpointMismatchError(ValueError):
    """A checkpoint whose tensors do not fit the model's state (another model or config)."""


class CheckpointSaveError(RuntimeError):
    """Writing a checkpoint failed (e.g. a full disk); the earlier ones are untouched."""


class NoUsableCheckpointError(RuntimeError):
    """Every checkpoint in the workdir is damaged: the run refuses to start over by itself."""


def _out_of_memory(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in text or "out of memory" in text


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
            # The checksum manifest goes into the step's directory on process 0 once
            # every host's files are written, before orbax commits (renames) it.
            async_options=(
                ocp.AsyncOptions(post_finalization_callback=self._write_manifest)
                if async_save
                else None
            ),
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
        self._pending: int | None = None  # the step of the async save in flight
        self._writing: int | None = None  # the step `_write_manifest` is for
        self._async = async_save

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
        if not (force or self._manager.should_save(step)):
            return False
        # An error of the previous (background) save surfaces here: name its step.
        self.wait()
        self._writing = step
        try:
            started = self._manager.save(step, args=args, metrics=tracked, force=force)
            if started and not self._async and jax.process_index() == 0:
                checksums.write(self.directory / str(step))
        except Exception as e:
            raise self._save_error(step, e) from e
        if started:
            self._pending = step
        return started

    def _write_manifest(self) -> None:
        """orbax's post-finalization callback (process 0, background thread): every
        host's files of step `_writing` are written, the directory not yet renamed."""
        step = self._writing
        tmp = [p for p in self.directory.glob(f"{step}.orbax-checkpoint-tmp*") if p.is_dir()]
        # On GCS orbax writes the final directory directly (commit_success.txt commits it).
        checksums.write(tmp[0] if len(tmp) == 1 else self.directory / str(step))

    def _save_error(self, step: int, error: BaseException) -> CheckpointSaveError:
        cause, chain = error, []
        while cause is not None:
            chain.append(cause)
            cause = cause.__cause__ or cause.__context__
        full = any(isinstance(c, OSError) and c.errno == errno.ENOSPC for c in chain)
        what = "the disk is full (No space left on device)" if full else f"{error!r}"
        try:
            good = [s for s in self._manager.all_steps(read=True) if s != step]
        except Exception:  # noqa: BLE001 - the message matters more than the listing
            good = []
        kept = (
            f"the previous checkpoint {self.directory / str(max(good))} is intact and a "
            "rerun resumes from it"
            if good
            else "no earlier checkpoint exists"
        )
        return CheckpointSaveError(
            f"saving checkpoint step {step} to {self.directory / str(step)} failed: {what}; {kept}"
        )

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
            raise CheckpointMismatchError(
                f"checkpoint {self.directory / str(step)} does not fit the model's state "
                f"({len(problems)} mismatches; first: {problems[0].strip()}); it was written "
                "for another model or config:\n" + "\n".join(problems[:20] + more)
            )

    def problem(self, step: int) -> str | None:
        """What makes step `step`'s directory incomplete (a missing commit marker or
        file), or None. Cheap: no array is read (`restore_latest` reads them)."""
        d = self.directory / str(step)
        missing = [f for f in REQUIRED_FILES if not (d / f).exists()]
        if "commit_success.txt" in missing:
            return "it has no commit marker (commit_success.txt): its save never finished"
        if missing:
            return f"{', '.join(missing)} is missing"
        return None

    def damage(self, step: int) -> str | None:
        """What differs from the checksums written at save time (a file whose bytes
        changed in place), or None; decided on process 0 for every host (it reads
        every file once). A checkpoint saved without checksums passes, with a note."""
        d = self.directory / str(step)
        why = None
        if jax.process_index() == 0:
            if not checksums.has_manifest(d):
                logging.info("checkpoint %s has no checksums (an older save): not verified", d)
            why = checksums.problem(d)
        if jax.process_count() > 1:
            bad = multihost_utils.broadcast_one_to_all(np.int32(why is not None))
            if bad and why is None:
                why = "its files do not match their checksums (process 0 logs which)"
        return why

    def restore_latest(self, abstract_state: PyTree) -> tuple[int, PyTree, Any]:
        """`(step, state, data_state)` of the newest usable checkpoint.

        A checkpoint that is incomplete (`problem`), whose files differ from their
        checksums (`damage`: bytes changed in place) or cannot be read (a file cut
        short, a corrupt manifest) is logged with its directory and what is wrong,
        moved to `<workdir>/bad_checkpoints/<step>` (so the resumed run can save
        that step again) and the previous one is tried.

        Raises:
          CheckpointMismatchError: a checkpoint of another model (never skipped).
          NoUsableCheckpointError: no checkpoint is usable (the run does not start
            from scratch by itself).
        """
        failures = []
        for step in sorted(self.all_steps(), reverse=True):
            why = self.problem(step) or self.damage(step)
            if why is None:
                try:
                    state, data_state = self.restore(abstract_state, step)
                except CheckpointMismatchError:
                    raise
                except Exception as e:  # noqa: BLE001 - orbax/TensorStore raise many types
                    if _out_of_memory(e):  # the machine's fault, not the checkpoint's
                        raise
                    first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
                    why = f"it cannot be read ({type(e).__name__}: {first})"
                else:
                    if failures:
                        logging.warning("resuming from step %d, the newest usable checkpoint", step)
                    return step, state, data_state
            failures.append(f"{self.directory / str(step)}: {why}")
            moved = self._set_aside(step, why)
            logging.warning(
                "checkpoint %s is unusable: %s; moved to %s, trying the previous one",
                self.directory / str(step),
                why,
                moved,
            )
        raise NoUsableCheckpointError(
            f"no usable checkpoint in {self.directory} ("
            + "; ".join(failures)
            + f"). The damaged ones are in {self.directory.parent / BAD_DIR}. Not starting "
            "from scratch in a workdir that held a run: use a new workdir to start over"
        )

    def _set_aside(self, step: int, why: str) -> epath.Path:
        """Moves step `step` out of checkpoints/ (process 0; every host waits)."""
        bad = self.directory.parent / BAD_DIR
        dest = bad / str(step)
        if jax.process_index() == 0:
            bad.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                dest = bad / f"{step}.{time.time_ns()}"
            (self.directory / str(step)).rename(dest)
            (bad / f"{dest.name}.reason.txt").write_text(why + "\n")
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"bert_jax set aside checkpoint {step}")
        self._manager.reload()
        return dest

    def wait(self) -> None:
        """Blocks until the pending async save (if any) is on disk.

        Raises:
          CheckpointSaveError: the pending save failed (naming its step).
        """
        try:
            self._manager.wait_until_finished()
        except Exception as e:
            raise self._save_error(self._pending, e) from e

    def close(self) -> None:
        """Waits for pending saves and deletions, then releases orbax's threads.

        Raises:
          CheckpointSaveError: the pending save failed (naming its step).
        """
        failed = None
        try:
            self.wait()
        except CheckpointSaveError as e:
            failed = e
        try:
            self._manager.close()
        except Exception:
            if failed is None:
                raise
            logging.warning("closing orbax after the failed save", exc_info=True)
        if failed is not None:
            raise failed

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # the error in flight is the one to report; a failed save is logged
            self.close()
        except Exception as e:  # noqa: BLE001
            logging.error("%s", e)


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
      signals: which signals to catch; add `signal.SIGINT` to save on Ctrl-C too
        (the trainer does): a second Ctrl-C then raises KeyboardInterrupt.
    """

    def __init__(self, signals: Sequence[int] = (signal.SIGTERM,)):
        self._signals = tuple(signals)
        self._previous: dict[int, Any] = {}
        self._received = threading.Event()
        self.signum: int | None = None  # the signal that arrived, for the log

    def _handle(self, signum, frame) -> None:
        del frame
        if signum == signal.SIGINT and self._received.is_set():
            # A second Ctrl-C: stop now, as Python would (orbax removes the
            # half-written step at the next start).
            raise KeyboardInterrupt
        self.signum = signum
        self._received.set()
        if signum == signal.SIGINT:
            logging.warning("Ctrl-C: saving a checkpoint and stopping (again to stop at once)")

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
