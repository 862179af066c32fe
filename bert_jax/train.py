"""The one training loop: mesh, data, sharded state, jitted step, checkpoints, evals.

Every task (pretraining, GLUE, SQuAD, ...) runs through `run`; a task only
contributes what `bert_jax.tasks.base.Task` lists: its model, batches, loss
and metrics.

A workdir belongs to one config. Before anything is written to it, the
config is compared with the one stored there (config.json) and a checkpoint
found there is checked against the model; a rerun of a finished workdir with
the same config returns its results without training or writing.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import signal
import sys
import time
from typing import Any, NoReturn

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec

from bert_jax import checkpoint, config_checks, flops, optim, sharding, tasks, workdir_config
from bert_jax.checkpoints import pretrained
from bert_jax.data import progress
from bert_jax.metrics_writer import MetricWriter
from bert_jax.tasks.base import EvalResult, EvalSet, FrozenModel, Task


class Stopped(Exception):
    """`run` stopped at a SIGTERM (preemption) or Ctrl-C, its checkpoint saved and on disk.

    Not a return: a caller (`bert_jax.main` exits 128 + signum, as a shell does)
    must not take an interrupted run for a finished one.
    """

    def __init__(self, step: int, signum: int, workdir: str):
        self.step, self.signum, self.workdir = step, signum, workdir
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} at step {step}; checkpoint saved in {workdir}")

    def exit(self, prog: str) -> NoReturn:
        """Ends a command as a shell ends one killed by the signal (130 for SIGINT, 143
        for SIGTERM), so `main && predict` stops; one stderr line says how to resume."""
        print(f"{prog}: {self}; rerun the same command to resume", file=sys.stderr, flush=True)
        sys.exit(128 + self.signum)


@jax.tree_util.register_pytree_with_keys_class
@dataclasses.dataclass(frozen=True)
class TrainState:
    """What the step carries from one step to the next.

    `frozen` holds the params of the task's frozen model (`Task.frozen`, e.g. a
    distillation teacher): placed like `params`, but no gradient, no optimizer
    state, and never checkpointed (`without_frozen`; it is read again from its
    own checkpoint at every start). Without one it is None and the state's
    pytree is just step, params, opt_state and rng, the tree every checkpoint
    holds (orbax would record even a None field).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    frozen: Any = None

    replace = dataclasses.replace

    def tree_flatten_with_keys(self):
        names = ("step", "params", "opt_state", "rng")
        names += ("frozen",) if self.frozen is not None else ()
        return [(jax.tree_util.GetAttrKey(n), getattr(self, n)) for n in names], None

    @classmethod
    def tree_unflatten(cls, _, children):
        return cls(*children)

    def without_frozen(self) -> TrainState:
        """What a checkpoint holds (and `create_state`'s init makes)."""
        return self.replace(frozen=None)


# ----------------------------------------------------------------------------
# State: planned with eval_shape, created already sharded.
# ----------------------------------------------------------------------------


def seed_key(config: ml_collections.ConfigDict) -> jax.Array:
    """The run's root PRNG key: parameter init, then (folded with the step) dropout.

    `rng_impl` picks the generator (jax.random.key's impl): "threefry2x32"
    (JAX's default), or "rbg"/"unsafe_rbg", which draw dropout masks with
    XLA's RngBitGenerator, faster where threefry is slow (CPU; see
    docs/performance.md).
    """
    return jax.random.key(config.seed, impl=config.get("rng_impl") or None)


def _init_params(model, dummy, rng):
    return model.init({"params": rng}, **dummy)["params"]


def plan_state(model, tx, dummy, mesh, rng, frozen: FrozenModel | None = None):
    """(abstract state, state shardings); nothing is allocated.

    The params of `frozen` (`Task.frozen`) get the same logical-axis rules as
    the trained params.
    """
    boxed = jax.eval_shape(functools.partial(_init_params, model, dummy), rng)
    param_sh = sharding.params_sharding(boxed, mesh)
    params = sharding.unboxed(boxed)
    frozen_abstract, frozen_sh = None, None
    if frozen is not None:
        fboxed = jax.eval_shape(functools.partial(_init_params, frozen.module, frozen.inputs), rng)
        frozen_sh = sharding.params_sharding(fboxed, mesh)
        frozen_abstract = jax.tree.map(
            lambda p: jax.ShapeDtypeStruct(np.shape(p), p.dtype), frozen.params
        )
    abstract_opt = jax.eval_shape(tx.init, params)
    replicated = NamedSharding(mesh, PartitionSpec())
    # Optimizer moments mirror the params; counters are replicated.
    opt_sh = optax.tree_map_params(
        tx, lambda _, s: s, abstract_opt, param_sh, transform_non_params=lambda _: replicated
    )
    shardings = TrainState(replicated, param_sh, opt_sh, replicated, frozen_sh)
    abstract = TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32),
        params=params,
        opt_state=abstract_opt,
        rng=jax.eval_shape(lambda r: r, rng),
        frozen=frozen_abstract,
    )
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    return abstract, shardings


def create_state(model, tx, dummy, shardings, rng) -> TrainState:
    """A fresh state, made already sharded; `frozen` is left for `with_frozen`."""

    def init(rng):
        init_rng, state_rng = jax.random.split(rng)
        params = sharding.unboxed(_init_params(model, dummy, init_rng))
        return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), state_rng)

    return jax.jit(init, out_shardings=shardings.without_frozen())(rng)


def with_frozen(state: TrainState, frozen: FrozenModel | None, shardings) -> TrainState:
    """`state` with `frozen`'s params (`Task.frozen`) placed as `plan_state` planned.

    They come from the frozen model's own checkpoint at every start, fresh or
    resumed: the run's checkpoints never hold them.
    """
    params = None if frozen is None else frozen.params
    return state.replace(frozen=jax.device_put(params, shardings.frozen))


def load_pretrained(
    state: TrainState, path: str, shardings: TrainState, model_config
) -> TrainState:
    """`state` with its parameters from a checkpoint (`pretrained.load_into` rules).

    The optimizer state stays fresh: its moments are zeros whatever the params.
    """
    vocab = model_config.vocab_size
    params, report = pretrained.load_into(state.params, path, vocab_size=vocab)
    logging.info("%s", report.summary())
    return state.replace(params=jax.device_put(params, shardings.params))


# ----------------------------------------------------------------------------
# The step.
# ----------------------------------------------------------------------------


def train_step(
    state: TrainState,
    batch,
    *,
    model,
    task,
    tx,
    schedule,
    accum: int,
    skip_nonfinite: bool = False,
):
    rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params, micro, rng):
        out = model.apply(
            {"params": params},
            **task.model_inputs(micro),
            deterministic=False,
            rngs={"dropout": rng},
        )
        # What the task's frozen model (a distillation teacher) adds; most add nothing.
        micro = {**micro, **task.frozen_outputs(state.frozen, micro)}
        return task.loss(out, micro)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, parts), grads = optim.accumulate_gradients(grad_fn, state.params, batch, accum, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.global_norm(grads)
    # A NaN/inf loss or gradient (the norm is NaN/inf if any element is).
    nonfinite = ~(jnp.isfinite(loss) & jnp.isfinite(grad_norm))
    if skip_nonfinite:  # config.skip_nonfinite_updates: keep the state as it was
        params, opt_state = keep_if_nonfinite(
            nonfinite, (params, opt_state), (state.params, state.opt_state)
        )
    metrics = {
        "loss": loss,
        **parts,
        "learning_rate": schedule(state.step),
        "grad_norm": grad_norm,
        "param_norm": optax.global_norm(params),
        # Real tokens etc., for perf/ metrics (flops.train_flops); not a train/ metric.
        "cost": flops.token_counts(task.model_inputs(batch)),
        "nonfinite": nonfinite,  # read on the host (check_finite, log_row)
    }
    new = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new, metrics


def keep_if_nonfinite(nonfinite: jax.Array, new, old):
    """`old` where the step was not finite, else `new` (optax.apply_if_finite's
    rule, without its give-up count, over params and optimizer state alike)."""
    return jax.tree.map(lambda n, o: jnp.where(nonfinite, o, n), new, old)


def jit_train_step(
    model,
    task,
    tx,
    schedule,
    accum: int,
    state_sh,
    batch_sh,
    skip_nonfinite: bool = False,
):
    """`train_step` as the trainer runs it: sharded in and out, the state donated.

    Also what `bert_jax.perf.bench` times and `bert_jax.perf.aot` compiles for a TPU slice.
    """
    step = functools.partial(
        train_step,
        model=model,
        task=task,
        tx=tx,
        schedule=schedule,
        accum=accum,
        skip_nonfinite=skip_nonfinite,
    )
    return jax.jit(
        step,
        in_shardings=(state_sh, batch_sh),
        out_shardings=(state_sh, None),
        donate_argnums=0,
    )


def jit_eval_step(model, task, state_sh, batch_sh):
    """`eval_step` with replicated outputs: every host can read all of them (multi-host)."""
    return jax.jit(
        functools.partial(eval_step, model=model, task=task),
        in_shardings=(state_sh.params, batch_sh),
        out_shardings=NamedSharding(batch_sh.mesh, PartitionSpec()),
    )


def eval_step(params, batch, *, model, task):
    out = model.apply({"params": params}, **task.model_inputs(batch), deterministic=True)
    return task.eval_stats(out, batch)


def evaluate(
    eval_fn, params, eval_set: EvalSet, batch_sharding, model_config=None
) -> dict[str, Any]:
    """One pass over a held-out set: the task's `eval_stats` summed (scalars:
    counts, loss sums) or concatenated (per-example arrays: predictions and
    labels for metrics that do not decompose, like MCC or Spearman)."""
    sums: dict[str, float] = {}
    parts: dict[str, list[np.ndarray]] = {}
    batches = progress.bar(
        eval_set.source.one_epoch(),
        total=eval_set.source.batches_per_epoch,
        desc=f"eval{eval_set.suffix}",
        unit="batch",
    )
    for i, batch in enumerate(batches):
        if model_config is not None:
            check_token_ids(batch, model_config, f"eval{eval_set.suffix} batch {i}")
        out = jax.device_get(eval_fn(params, global_batch(batch, batch_sharding)))
        for k, v in out.items():
            v = np.asarray(v)
            if v.ndim == 0:
                sums[k] = sums.get(k, 0.0) + float(v)
            else:
                parts.setdefault(k, []).append(v)
    return sums | {k: np.concatenate(v) for k, v in parts.items()}


def check_token_ids(local: dict[str, np.ndarray], model_config, where: str = "") -> None:
    """Ids outside the embedding tables would not fail: XLA gathers NaN for them.

    Run on every batch on the host (a min and a max over host-local ints: cheap
    beside the step), so a bad row anywhere in the data is caught where it is.
    """
    for key, size, setting in (
        ("input_ids", model_config.vocab_size, "vocab_size"),
        ("token_type_ids", model_config.type_vocab_size, "type_vocab_size"),
    ):
        if key not in local or not np.size(local[key]):
            continue
        hi, lo = int(np.max(local[key])), int(np.min(local[key]))
        at = f" ({where})" if where else ""
        if lo < 0:
            raise ValueError(f"the data has a negative {key} ({lo}){at}")
        if hi >= size:
            raise ValueError(
                f"the data has {key} up to {hi} but model.{setting} is {size}{at}: "
                "the data was made with another vocabulary than the model's (match "
                "model.vocab_size, data.vocab_file or init_checkpoint)"
            )


def check_finite(rows: list[dict], last_step: int, skip_nonfinite: bool) -> None:
    """Stops the run at a non-finite loss or gradient (or parameters), naming the step.

    `rows` are the host values of `train_step`'s metrics for the steps up to
    `last_step`. With `skip_nonfinite` (config.skip_nonfinite_updates) such
    steps left the state as it was, so only non-finite parameters stop the run.
    """
    first = last_step - len(rows) + 1
    for i, r in enumerate(rows):
        k = first + i
        if skip_nonfinite or not r["nonfinite"]:
            if not np.isfinite(r["param_norm"]):  # a finite update that overflowed
                raise FloatingPointError(
                    f"train/param_norm is {r['param_norm']} at step {k}: its update made the "
                    f"parameters non-finite; nothing after step {k - 1} is saved. Lower "
                    "optimizer.learning_rate"
                )
            continue
        what = (
            f"train/loss is {r['loss']}"
            if not np.isfinite(r["loss"])
            else f"the gradient norm is {r['grad_norm']} (train/loss {r['loss']})"
        )
        raise FloatingPointError(
            f"{what} at step {k} (steps {first}..{last_step} checked); nothing after step "
            f"{k - 1} is saved. Lower optimizer.learning_rate, check the data, or set "
            "skip_nonfinite_updates=True to skip such steps"
        )


def global_batch(local: dict[str, np.ndarray], batch_sharding) -> dict[str, jax.Array]:
    """Host-local rows -> global arrays sharded over the batch axes."""
    return {
        k: jax.make_array_from_process_local_data(batch_sharding, np.asarray(v))
        for k, v in local.items()
    }


def log_row(rows: list[dict], seconds: float, model_config, skipped_updates: bool = False) -> dict:
    """The train/ and perf/ metrics of the steps since the last log row (host values
    of `train_step`'s metrics). MFU counts real tokens (`bert_jax.flops`).
    `skipped_updates`: add train/skipped_updates, the steps of these rows whose
    update was skipped as non-finite (config.skip_nonfinite_updates)."""
    costs = [r["cost"] for r in rows]
    # Skipped (non-finite) steps, if any, are counted and left out of the means.
    finite = [r for r in rows if not r.get("nonfinite", False)]
    keys = [k for k in rows[0] if k not in ("cost", "nonfinite")] if finite else []
    m = {f"train/{k}": float(np.mean([r[k] for r in finite])) for k in keys}
    if skipped_updates:
        m["train/skipped_updates"] = float(len(rows) - len(finite))
    m["train/learning_rate"] = float(rows[-1]["learning_rate"])
    m["perf/steps_per_second"] = len(rows) / seconds
    m["perf/tokens_per_second"] = sum(float(c["tokens"]) for c in costs) / seconds
    peak = flops.peak_flops_per_device()
    if peak:
        work = sum(flops.train_flops(model_config, c) for c in costs)
        m["perf/mfu"] = work / seconds / (peak * jax.device_count())
    return m


# ----------------------------------------------------------------------------
# The loop.
# ----------------------------------------------------------------------------


def run(
    config: ml_collections.ConfigDict,
    workdir: str,
    task: Task | None = None,
    devices=None,
    allow_config_changes: bool = False,
):
    """Train (and evaluate) as `config` says.

    Args:
      config: a training config (configs/, `bert_jax.configs`).
      workdir: where config.json, checkpoints, metrics and results go.
      task: replaces the one named by `config.task`.
      devices: restricts the mesh to a subset of `jax.devices()`.
      allow_config_changes: resume a workdir whose stored config differs
        from `config` in `workdir_config.SAFE_CHANGES` only (else an error).

    Returns:
      (final TrainState, final eval metrics dict).

    Raises:
      Stopped: a SIGTERM or Ctrl-C arrived; the step reached is saved (the
        checkpointer closed) and a rerun resumes from it.
    """
    start = time.time()
    # --- Setup: everything checked before anything is written ----------
    config_checks.check(config)  # the values alone, before the task reads a file
    task = task or tasks.get(config)
    model = task.model()
    mesh = sharding.make_mesh(config.mesh_shape, config.dcn_mesh_shape, devices)
    config_checks.check_fits(config, mesh, model.config)  # before any state exists
    workdir_config.check_writable(workdir)  # leaves the disk as it was
    # The data, read and checked before the workdir exists: a bad file leaves nothing.
    train_source = task.train_source(jax.process_index(), jax.process_count())
    eval_sets = task.eval_sets(jax.process_index(), jax.process_count())
    config = workdir_config.resolve_steps(config, train_source.num_examples)
    tx, schedule = optim.make_optimizer(config.optimizer, config.num_train_steps)
    # Made now, and removed again if the setup fails before config.json is written.
    new_workdir = workdir_config.NewWorkdir(workdir)
    wd = epath.Path(workdir)
    ckpt = checkpoint.Checkpointer(
        wd,
        every=config.checkpoint_every,
        keep=config.keep_checkpoints,
        best_metric=config.best_metric or None,
        best_mode=config.best_mode,
    )
    resumed = ckpt.latest_step()
    changes = workdir_config.check_resume(wd, config, resumed, allow_config_changes)
    batch_sh = sharding.batch_sharding(mesh)

    # SIGTERM (preemption) and a first Ctrl-C save and stop at the next step;
    # the guard outlives the checkpointer, whose close waits for the last save.
    stop_signals = (signal.SIGTERM, signal.SIGINT)
    with (
        new_workdir,
        checkpoint.PreemptionGuard(stop_signals) as guard,
        ckpt,
        sharding.activate(mesh),
    ):
        # --- State: restore, or fresh (+ pretrained weights) ------------
        rng = seed_key(config)
        dummy = task.model_inputs(task.dummy_batch())
        frozen = task.frozen()  # a model trained against, never trained; mostly None
        abstract, state_sh = plan_state(model, tx, dummy, mesh, rng, frozen)
        if resumed is not None:
            # The newest usable checkpoint: damaged ones are logged and set aside.
            resumed, state, data_states = ckpt.restore_latest(abstract.without_frozen())
            # Every host's state was saved; each source takes its own part
            # (a data shard may have moved host if the host count changed).
            train_source.set_state({k: v for d in data_states for k, v in d.items()})
            logging.info("resumed from step %d", resumed)
        else:
            state = create_state(model, tx, dummy, state_sh, rng)
            if config.init_checkpoint:
                state = load_pretrained(state, config.init_checkpoint, state_sh, model.config)
            params = task.initial_params(state.params)  # e.g. a student from teacher layers
            state = state.replace(params=jax.device_put(params, state_sh.params))
        state = with_frozen(state, frozen, state_sh)
        finished = workdir_config.finished_metrics(wd, resumed, config.num_train_steps)
        if finished is not None:
            logging.info("%s finished at step %d: nothing to do", workdir, resumed)
            return state, finished
        if jax.process_index() == 0:
            workdir_config.write(wd, config, changes, resumed or 0)
            write_task_info(wd, task, model)
        new_workdir.keep()  # the run's record from here on, whatever happens

        # --- Compiled functions ------------------------------------------
        accum = config.optimizer.grad_accum_steps
        skip = config.get("skip_nonfinite_updates", False)
        step_fn = jit_train_step(
            model, task, tx, schedule, accum, state_sh, batch_sh, skip_nonfinite=skip
        )
        eval_fn = jit_eval_step(model, task, state_sh, batch_sh)

        def run_eval(step) -> tuple[dict[str, float], dict[str, str]]:
            metrics, files = {}, {}
            for eval_set in eval_sets:
                stats = evaluate(eval_fn, state.params, eval_set, batch_sh, model.config)
                result: EvalResult = task.finalize(eval_set, stats)
                metrics |= {f"eval/{k}{eval_set.suffix}": v for k, v in result.metrics.items()}
                files |= result.files
            if metrics:
                writer.write(step, metrics)
                logging.info("step %d eval %s", step, metrics)
            return metrics, files

        def save(step, metrics=None, force=False):
            data_states = gather_data_states(train_source.get_state())
            ckpt.save(step, state.without_frozen(), data_states, metrics=metrics, force=force)

        # --- Loop --------------------------------------------------------
        first = step = int(state.step)
        last_metrics: dict[str, float] = {}
        it = iter(train_source)
        t_log, pending = time.time(), []
        stopped = False
        mc = model.config
        # A run resumed at its last step (stopped between the final checkpoint and
        # results.json) evaluates that step again: its old eval rows go.
        final = first == config.num_train_steps
        with (
            MetricWriter(workdir, start, resume_step=first, redo_evals=final) as writer,
            progress.bar(
                total=config.num_train_steps, initial=first, desc="train", unit="step"
            ) as bar,
        ):
            while step < config.num_train_steps:
                local = next(it)
                check_token_ids(local, mc, f"the batch of step {step + 1}")
                batch = global_batch(local, batch_sh)
                state, metrics = step_fn(state, batch)
                step += 1
                bar.update()
                pending.append(metrics)
                if step % config.log_every == 0 or step == config.num_train_steps:
                    rows = jax.device_get(pending)
                    # Nothing good comes after a NaN: stop rather than train on it.
                    check_finite(rows, step, skip)
                    m = log_row(rows, max(time.time() - t_log, 1e-9), mc, skipped_updates=skip)
                    writer.write(step, m)
                    loss = f"loss {m['train/loss']:.4f}" if "train/loss" in m else "skipped"
                    bar.set_postfix_str(loss, refresh=False)
                    if jax.process_index() == 0:
                        eta = (config.num_train_steps - step) / m["perf/steps_per_second"]
                        progress.write(
                            f"step {step}/{config.num_train_steps} {loss} "
                            f"{m['perf/steps_per_second']:.2f} steps/s eta {eta:.0f}s"
                        )
                    t_log, pending = time.time(), []
                eval_metrics = None
                # The final step's eval comes after the loop (it also writes files).
                due = config.eval_every and step % config.eval_every == 0
                if due and step < config.num_train_steps:
                    eval_metrics, _ = run_eval(step)
                    last_metrics = eval_metrics or last_metrics
                stopped = guard.should_stop()
                # The last step is saved after the final eval, with its metrics.
                if stopped or (ckpt.should_save(step) and step < config.num_train_steps):
                    # A state after a non-finite step never replaces a good checkpoint.
                    check_finite(jax.device_get(pending), step, skip)
                    save(step, eval_metrics, force=stopped)
                if stopped:
                    logging.warning("preemption signal: saved step %d, exiting", step)
                    break
            if not stopped:
                # --- End: final eval, checkpoint, outputs -------------------
                last_metrics, files = run_eval(step)
                save(step, last_metrics or None, force=True)  # skipped if this step is saved
    if stopped:  # raised only now: the checkpointer has closed, the save is on disk
        # A host that got no signal itself stops because another host did.
        raise Stopped(step, guard.signum or signal.SIGTERM, workdir)
    if jax.process_index() == 0:
        for name, text in files.items():
            (wd / name).write_text(text)
        workdir_config.write_results(wd, step, last_metrics, config)
    return state, last_metrics


def write_task_info(wd: epath.Path, task: Task, model) -> None:
    """task.json (model class, architecture, labels) and the tokenizer's files
    (vocab.txt, spiece.model or vocab.json + merges.txt), so the workdir alone
    serves `pretrained.load`, `bert_jax.tools.predict` and `bert_jax.tools.embed`."""
    info = {
        "model": type(model).__name__,
        "config": model.config.to_dict(),
        "model_kwargs": pretrained.model_kwargs(model),
        "labels": list(task.labels) if task.labels else None,
    }
    tok = task.tokenizer()
    if tok is not None:
        info["do_lower_case"] = tok.do_lower_case
        tok.save(wd)
    (wd / "task.json").write_text(json.dumps(info, indent=2))


def gather_data_states(local_state: dict) -> list[dict]:
    """Every host's iterator state, in process order, identical on all hosts."""
    if jax.process_count() == 1:
        return [local_state]
    from jax.experimental import multihost_utils

    text = json.dumps(local_state)
    if len(text) > 65536:  # allgather needs one fixed size on every host
        raise ValueError(f"data iterator state of {len(text)} bytes exceeds 65536")
    encoded = np.frombuffer(text.ljust(65536).encode(), np.uint8)
    everyone = multihost_utils.process_allgather(encoded)
    return [json.loads(bytes(row).decode()) for row in np.asarray(everyone)]
