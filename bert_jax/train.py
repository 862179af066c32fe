"""The one training loop: mesh, data, sharded state, jitted step, checkpoints, evals.

Every task (pretraining, GLUE, SQuAD, ...) runs through `run`; a task only
contributes its model, input pipeline, loss and metrics (`bert_jax.tasks`).
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from etils import epath
from flax import struct
from jax.sharding import NamedSharding, PartitionSpec

from bert_jax import checkpoint, optim, pretrained, sharding, tasks
from bert_jax.metrics_writer import MetricWriter, peak_flops_per_device


class TrainState(struct.PyTreeNode):
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


# ----------------------------------------------------------------------------
# Validation: fail before any compute, with the config key in the message.
# ----------------------------------------------------------------------------


def validate(config: ml_collections.ConfigDict, workdir: str, mesh, model) -> None:
    dp = sharding.data_parallel_size(mesh)
    for key in ("train_batch_size", "eval_batch_size"):
        if config[key] % dp:
            raise ValueError(
                f"{key}={config[key]} is not divisible by the data-parallel size "
                f"{dp} (mesh data x fsdp = {mesh.shape['data']} x "
                f"{mesh.shape['fsdp']})"
            )
        if config[key] % jax.process_count():
            raise ValueError(f"{key}={config[key]} is not divisible by {jax.process_count()} hosts")
    accum = config.optimizer.grad_accum_steps
    if (config.train_batch_size // dp) % accum:
        raise ValueError(
            f"optimizer.grad_accum_steps={accum} does not divide the per-device "
            f"batch {config.train_batch_size // dp}"
        )
    mc = model.config
    tp = mesh.shape["tensor"]
    for key in ("num_heads", "intermediate_size"):
        if getattr(mc, key) % tp:
            raise ValueError(
                f"model.{key}={getattr(mc, key)} is not divisible by the tensor-"
                f"parallel size {tp} (mesh_shape[2])"
            )
    if config.max_seq_length > mc.max_position_embeddings:
        raise ValueError(
            f"max_seq_length={config.max_seq_length} exceeds the model's "
            f"max_position_embeddings={mc.max_position_embeddings}"
        )
    wd = epath.Path(workdir)
    try:
        wd.mkdir(parents=True, exist_ok=True)
        probe = wd / f".write_probe_{jax.process_index()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"workdir {workdir} is not writable ({e})") from e


# ----------------------------------------------------------------------------
# State: planned with eval_shape, created already sharded.
# ----------------------------------------------------------------------------


def _init_params(model, dummy, rng):
    return model.init({"params": rng}, **dummy)["params"]


def plan_state(model, tx, dummy, mesh, rng):
    """(abstract state, state shardings); nothing is allocated."""
    boxed = jax.eval_shape(functools.partial(_init_params, model, dummy), rng)
    param_sh = sharding.params_sharding(boxed, mesh)
    params = nn.meta.unbox(boxed)
    abstract_opt = jax.eval_shape(tx.init, params)
    replicated = NamedSharding(mesh, PartitionSpec())
    # Optimizer moments mirror the params; counters are replicated.
    opt_sh = optax.tree_map_params(
        tx, lambda _, s: s, abstract_opt, param_sh, transform_non_params=lambda _: replicated
    )
    shardings = TrainState(step=replicated, params=param_sh, opt_state=opt_sh, rng=replicated)
    abstract = TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32),
        params=params,
        opt_state=abstract_opt,
        rng=jax.eval_shape(lambda r: r, rng),
    )
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    return abstract, shardings


def create_state(model, tx, dummy, shardings, rng) -> TrainState:
    def init(rng):
        init_rng, state_rng = jax.random.split(rng)
        params = nn.meta.unbox(_init_params(model, dummy, init_rng))
        return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), state_rng)

    return jax.jit(init, out_shardings=shardings)(rng)


def load_pretrained(state: TrainState, path: str, shardings: TrainState) -> TrainState:
    """Copy encoder (and matching head) weights from a checkpoint into `state`.

    Parameters are matched by path and shape; the rest keep their fresh
    initialisation and are logged. The optimizer state stays fresh.
    """
    _, loaded = pretrained.load(path)
    if "bert" not in loaded:  # a bare encoder checkpoint
        loaded = {"bert": loaded}
    flat_new = {
        tuple(k.key for k in p): v for p, v in jax.tree_util.tree_flatten_with_path(state.params)[0]
    }
    flat_old = {
        tuple(k.key for k in p): v for p, v in jax.tree_util.tree_flatten_with_path(loaded)[0]
    }
    merged, fresh = {}, []
    for path, new in flat_new.items():
        old = flat_old.get(path)
        if old is not None and tuple(old.shape) == tuple(new.shape):
            merged[path] = np.asarray(old, dtype=new.dtype)
        else:
            merged[path], _ = new, fresh.append("/".join(path))
    logging.info(
        "init_checkpoint %s: loaded %d params; %d not loaded (fresh init): %s",
        path,
        len(merged) - len(fresh),
        len(fresh),
        fresh,
    )
    leaves = [
        merged[tuple(k.key for k in p)]
        for p, _ in jax.tree_util.tree_flatten_with_path(state.params)[0]
    ]
    params = jax.tree.unflatten(jax.tree.structure(state.params), leaves)
    params = jax.device_put(params, shardings.params)
    return state.replace(params=params)


# ----------------------------------------------------------------------------
# The step.
# ----------------------------------------------------------------------------


def train_step(state: TrainState, batch, *, model, task, tx, schedule, accum: int):
    rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params, micro, rng):
        out = model.apply(
            {"params": params},
            **task.model_inputs(micro),
            deterministic=False,
            rngs={"dropout": rng},
        )
        return task.loss(out, micro)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, parts), grads = optim.accumulate_gradients(grad_fn, state.params, batch, accum, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss,
        **parts,
        "learning_rate": schedule(state.step),
        "grad_norm": optax.global_norm(grads),
        "param_norm": optax.global_norm(params),
    }
    new = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new, metrics


def eval_step(params, batch, *, model, task):
    out = model.apply({"params": params}, **task.model_inputs(batch), deterministic=True)
    return task.eval_stats(out, batch)


def evaluate(eval_fn, params, source, batch_sharding) -> dict[str, Any] | None:
    """One pass over the held-out source.

    The task's `eval_stats` returns scalars (summed over batches: counts and
    loss sums) and per-example arrays (concatenated: predictions and labels
    for metrics that do not decompose, like MCC or Spearman); `valid` marks
    the padding rows of the last batch.
    """
    if source is None:
        return None
    sums: dict[str, float] = {}
    parts: dict[str, list[np.ndarray]] = {}
    for batch in source.one_epoch():
        out = jax.device_get(eval_fn(params, global_batch(batch, batch_sharding)))
        for k, v in out.items():
            v = np.asarray(v)
            if v.ndim == 0:
                sums[k] = sums.get(k, 0.0) + float(v)
            else:
                parts.setdefault(k, []).append(v)
    return sums | {k: np.concatenate(v) for k, v in parts.items()}


def check_token_ids(local: dict[str, np.ndarray], model_config) -> None:
    """Ids past the embedding tables would not fail: XLA gathers NaN for them."""
    for key, size, setting in (
        ("input_ids", model_config.vocab_size, "vocab_size"),
        ("token_type_ids", model_config.type_vocab_size, "type_vocab_size"),
    ):
        if key in local and local[key].size and int(local[key].max()) >= size:
            raise ValueError(
                f"the training data has {key} up to {int(local[key].max())} but "
                f"model.{setting} is {size}: the data was made with another vocabulary "
                "than the model's (match model.vocab_size, data.vocab_file or init_checkpoint)"
            )


def global_batch(local: dict[str, np.ndarray], batch_sharding) -> dict[str, jax.Array]:
    """Host-local rows -> global arrays sharded over the batch axes."""
    return {
        k: jax.make_array_from_process_local_data(batch_sharding, np.asarray(v))
        for k, v in local.items()
    }


# ----------------------------------------------------------------------------
# The loop.
# ----------------------------------------------------------------------------


def run(config: ml_collections.ConfigDict, workdir: str, task=None, devices=None):
    """Train (and evaluate) as `config` says.

    `task` replaces the one named by `config.task` and `devices` restricts the
    mesh to a subset of `jax.devices()` (tests use both).

    Returns:
      (final TrainState, last eval metrics dict).
    """
    start = time.time()
    # --- Setup ------------------------------------------------------------
    task = task or tasks.get(config)
    model = task.model()
    mesh = sharding.make_mesh(config.mesh_shape, config.dcn_mesh_shape, devices)
    validate(config, workdir, mesh, model)
    wd = epath.Path(workdir)
    train_source = task.train_source(jax.process_index(), jax.process_count())
    if config.get("num_train_epochs"):
        # Fine-tuning counts epochs; as run_classifier.py: int(N / batch * epochs).
        steps = int(task.num_train_examples() / config.train_batch_size * config.num_train_epochs)
        with config.unlocked():
            config.num_train_steps = max(steps, 1)
    if jax.process_index() == 0:
        (wd / "config.json").write_text(config.to_json_best_effort(indent=2))
        write_task_info(wd, task, model)
    tx, schedule = optim.make_optimizer(config.optimizer, config.num_train_steps)
    batch_sh = sharding.batch_sharding(mesh)
    writer = MetricWriter(workdir, start)

    with mesh, nn.logical_axis_rules(sharding.LOGICAL_RULES):
        # --- State: restore, or fresh (+ pretrained weights) ------------
        rng = jax.random.key(config.seed)
        dummy = task.model_inputs(task.dummy_batch())
        abstract, state_sh = plan_state(model, tx, dummy, mesh, rng)
        ckpt = checkpoint.Checkpointer(
            wd,
            every=config.checkpoint_every,
            keep=config.keep_checkpoints,
            best_metric=config.best_metric or None,
            best_mode=config.best_mode,
        )
        if ckpt.latest_step() is not None:
            state, data_states = ckpt.restore(abstract)
            # Every host's state was saved; each source takes its own part
            # (a data shard may have moved host if the host count changed).
            merged = {}
            for d in data_states:
                merged.update(d)
            train_source.set_state(merged)
            logging.info("resumed from step %d", int(state.step))
        else:
            state = create_state(model, tx, dummy, state_sh, rng)
            if config.init_checkpoint:
                state = load_pretrained(state, config.init_checkpoint, state_sh)
        eval_source = task.eval_source(jax.process_index(), jax.process_count())

        # --- Compiled functions ------------------------------------------
        step_fn = jax.jit(
            functools.partial(
                train_step,
                model=model,
                task=task,
                tx=tx,
                schedule=schedule,
                accum=config.optimizer.grad_accum_steps,
            ),
            in_shardings=(state_sh, batch_sh),
            out_shardings=(state_sh, None),
            donate_argnums=0,
        )
        # Replicated outputs: every host can read all of them (multi-host).
        eval_fn = jax.jit(
            functools.partial(eval_step, model=model, task=task),
            in_shardings=(state_sh.params, batch_sh),
            out_shardings=NamedSharding(mesh, PartitionSpec()),
        )

        def run_eval(step):
            sources = eval_source if isinstance(eval_source, dict) else {"": eval_source}
            m = {}
            for suffix, source in (sources or {}).items():
                totals = evaluate(eval_fn, state.params, source, batch_sh)
                if totals is not None:
                    m |= {f"eval/{k}{suffix}": v for k, v in task.finalize(totals).items()}
            if m:
                writer.write(step, m)
                logging.info("step %d eval %s", step, m)
            return m

        def save(step, metrics=None, force=False):
            data_states = gather_data_states(train_source.get_state())
            ckpt.save(step, state, data_states, metrics=metrics, force=force)

        # --- Loop --------------------------------------------------------
        guard = checkpoint.PreemptionGuard()
        # Per batch width: with data.length_bucket batches are cut to their longest row.
        flops = functools.cache(task.flops_per_example)
        tokens = functools.cache(task.tokens_per_example)
        peak = peak_flops_per_device()
        first = int(state.step)
        step = first
        last_metrics: dict[str, float] = {}
        it = iter(train_source)
        t_log, n_log = time.time(), 0
        pending, widths = [], []
        with guard:
            while step < config.num_train_steps:
                local = next(it)
                if step == first:
                    check_token_ids(local, model.config)
                batch = global_batch(local, batch_sh)
                state, metrics = step_fn(state, batch)
                step += 1
                n_log += 1
                pending.append(metrics)
                widths.append(batch["input_ids"].shape[-1])
                if step % config.log_every == 0 or step == config.num_train_steps:
                    rows = jax.device_get(pending)
                    now = time.time()
                    seconds = max(now - t_log, 1e-9)
                    rate = n_log / seconds
                    per_second = config.train_batch_size / seconds
                    m = {f"train/{k}": float(np.mean([r[k] for r in rows])) for k in rows[0]}
                    m["train/learning_rate"] = float(rows[-1]["learning_rate"])
                    if not np.isfinite(m["train/loss"]):
                        # Nothing good comes after: stop rather than train on NaN.
                        ckpt.close()  # finishes the saves in flight
                        writer.close()
                        raise FloatingPointError(
                            f"train/loss is {m['train/loss']} at step {step} (steps "
                            f"{step - n_log + 1}..{step}); lower optimizer.learning_rate or "
                            "check the data"
                        )
                    m["perf/steps_per_second"] = rate
                    m["perf/tokens_per_second"] = per_second * sum(map(tokens, widths))
                    if peak:
                        work = per_second * sum(map(flops, widths))
                        m["perf/mfu"] = work / (peak * jax.device_count())
                    pending, widths = [], []
                    writer.write(step, m)
                    eta = (config.num_train_steps - step) / max(rate, 1e-9)
                    if jax.process_index() == 0:
                        print(
                            f"step {step}/{config.num_train_steps} loss {m['train/loss']:.4f} "
                            f"{rate:.2f} steps/s eta {eta:.0f}s",
                            flush=True,
                        )
                    t_log, n_log = time.time(), 0
                eval_metrics = None
                if (
                    config.eval_every
                    and step % config.eval_every == 0
                    and step < config.num_train_steps
                ):
                    eval_metrics = run_eval(step)
                    last_metrics = eval_metrics or last_metrics
                stop = guard.should_stop()
                # The last step is saved after the final eval, with its metrics.
                if stop or (ckpt.should_save(step) and step < config.num_train_steps):
                    save(step, eval_metrics, force=stop)
                if stop:
                    logging.warning("preemption signal: saved step %d, exiting", step)
                    ckpt.close()
                    writer.close()
                    return state, last_metrics
        # --- End: final eval and checkpoint ------------------------------
        if step > first or not last_metrics:
            last_metrics = run_eval(step) or last_metrics
        save(step, last_metrics or None, force=True)  # skipped if this step is saved
        ckpt.close()
    writer.close()
    if jax.process_index() == 0 and hasattr(task, "write_predictions"):
        task.write_predictions(wd)  # e.g. SQuAD predictions.json from the final eval
    if jax.process_index() == 0 and last_metrics:
        results = {
            "step": step,
            "metrics": last_metrics,
            "init_checkpoint": config.init_checkpoint,
            "config": json.loads(config.to_json_best_effort()),
        }
        (wd / "results.json").write_text(json.dumps(results, indent=2))
    return state, last_metrics


def write_task_info(wd: epath.Path, task, model) -> None:
    """task.json (model class, architecture, labels) and vocab.txt, so the
    workdir alone serves `pretrained.load` and `bert_jax.predict`."""
    info = {
        "model": type(model).__name__,
        "config": model.config.to_dict(),
        "model_kwargs": pretrained.model_kwargs(model),
        "labels": list(task.labels) if getattr(task, "labels", None) else None,
    }
    tok = getattr(task, "tok", None)
    if tok is not None:
        info["do_lower_case"] = tok.do_lower_case
        (wd / "vocab.txt").write_text(
            "".join(t + "\n" for t in tok.convert_ids_to_tokens(range(tok.vocab_size)))
        )
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
