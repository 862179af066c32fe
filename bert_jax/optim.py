"""Learning-rate schedules, AdamW / original-BERT Adam / LAMB, the weight-decay mask, and
gradient accumulation over microbatches.

Defaults are BERT pretraining's: Adam with lr 1e-4, b1 0.9, b2 0.999, weight decay 0.01,
10k warmup steps then linear decay (Devlin et al. 2019, appendix A.2), eps 1e-6, global-norm
clipping at 1.0 and no decay on LayerNorm parameters or biases (google-research/bert
`optimization.py`, `create_optimizer`).

`optimizer.name` picks the update rule; every rule is preceded by clipping and scaled by the
schedule, which counts optimizer steps (accumulation happens inside one step):

  adamw           bias-corrected Adam + decoupled weight decay: exactly optax.adamw's chain.
  adamw_original  `AdamWeightDecayOptimizer` of the original `optimization.py`: the same but
                  without Adam's bias correction. For faithful reproduction of released runs.
  lamb            You et al. 2020 (arXiv 1904.00962): optax.lamb's chain, with one trust ratio
                  per layer also for layers stacked under nn.scan.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

NAMES = ("adamw", "adamw_original", "lamb")
SCHEDULES = ("linear", "cosine", "constant")
# Weight decay applies to leaves with these names only: dense kernels and embedding tables.
DECAYED_LEAVES = ("kernel", "embedding")
# The nn.scan module in models/bert.py `Encoder`; leaves under it have a leading layer axis.
STACKED_KEY = "layers"


def _warmup_steps(cfg: ml_collections.ConfigDict, num_train_steps: int) -> int:
    steps, proportion = cfg.warmup_steps or 0, cfg.warmup_proportion or 0.0
    if steps and proportion:
        raise ValueError(
            f"set at most one of optimizer.warmup_steps ({steps}) and "
            f"optimizer.warmup_proportion ({proportion})"
        )
    if steps < 0:
        raise ValueError(f"optimizer.warmup_steps must be >= 0, got {steps}")
    if not 0.0 <= proportion <= 1.0:
        raise ValueError(f"optimizer.warmup_proportion must be in [0, 1], got {proportion}")
    if proportion:
        steps = int(num_train_steps * proportion)  # as run_classifier.py
    if steps > num_train_steps:
        raise ValueError(
            f"optimizer.warmup_steps={steps} exceeds num_train_steps={num_train_steps}"
        )
    return steps


def make_schedule(cfg: ml_collections.ConfigDict, num_train_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `cfg.learning_rate`, then `cfg.schedule` over the other steps.

    'linear' decays linearly to exactly 0 at `num_train_steps`, 'cosine' follows half a cosine
    to 0, 'constant' holds the peak; steps past the end keep the final value. The decay starts
    at the peak, as HF's `get_linear_schedule_with_warmup`. (The original optimization.py
    instead decays from step 0 and overrides the first `warmup` steps with the ramp, so its
    lr right after warmup is lr * (1 - warmup / num_train_steps).)

    Args:
      cfg: the `optimizer` ConfigDict (learning_rate, schedule, warmup_steps or
        warmup_proportion).
      num_train_steps: optimizer steps in the run.

    Returns:
      step (int, optimizer steps from 0) -> learning rate (fp32 scalar).
    """
    if num_train_steps <= 0:
        raise ValueError(f"num_train_steps must be positive, got {num_train_steps}")
    if cfg.learning_rate < 0:
        raise ValueError(f"optimizer.learning_rate must be >= 0, got {cfg.learning_rate}")
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"optimizer.schedule {cfg.schedule!r} is not one of {SCHEDULES}")
    peak, kind = cfg.learning_rate, cfg.schedule
    warmup = _warmup_steps(cfg, num_train_steps)
    decay_steps = max(num_train_steps - warmup, 1)

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        ramp = peak * step / max(warmup, 1)
        progress = jnp.clip((step - warmup) / decay_steps, 0.0, 1.0)
        if kind == "linear":
            decay = 1.0 - progress
        elif kind == "cosine":
            decay = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        else:
            decay = jnp.ones_like(progress)
        return jnp.where(step < warmup, ramp, peak * decay)

    return schedule


def _dict_keys(path) -> list:
    # Skips GetAttrKey('value') of boxed (nn.Partitioned) leaves, so boxed trees work too.
    return [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]


def decay_mask(params: Any) -> Any:
    """True for the leaves that get weight decay: those named `kernel` or `embedding`.

    The original optimization.py decays every variable whose name contains none of
    "LayerNorm", "layer_norm", "bias". In this codebase's flax trees the same set is the
    leaves named `kernel` or `embedding`: LayerNorm leaves are `scale` and `bias`, and dense
    and MLM output biases are `bias`. Stacked (nn.scan) layers keep these leaf names.

    Args:
      params: a param pytree (dicts, FrozenDicts, boxed or not).

    Returns:
      A pytree of bools with the structure of `params`.
    """

    def decayed(path, _):
        keys = _dict_keys(path)
        return bool(keys) and keys[-1] in DECAYED_LEAVES

    return jax.tree_util.tree_map_with_path(decayed, params)


def _scale_by_adam_without_bias_correction(b1, b2, eps) -> optax.GradientTransformation:
    """`AdamWeightDecayOptimizer.apply_gradients` of the original optimization.py, pre decay:

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  update = m / (sqrt(v) + eps).
    The state is optax's ScaleByAdamState, so checkpoints have adamw's layout.
    """

    def init(params):
        zeros = optax.tree_utils.tree_zeros_like
        return optax.ScaleByAdamState(jnp.zeros([], jnp.int32), zeros(params), zeros(params))

    def update(updates, state, params=None):
        del params
        mu = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.mu, updates)
        nu = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * jnp.square(g), state.nu, updates)
        updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
        return updates, optax.ScaleByAdamState(optax.safe_increment(state.count), mu, nu)

    return optax.GradientTransformation(init, update)


def _scale_by_layerwise_trust_ratio() -> optax.GradientTransformation:
    """LAMB's trust ratio ||param|| / ||update||, 1 where either is 0 (You et al. 2020, Alg. 2).

    As optax.scale_by_trust_ratio, except that a leaf under `layers` (stacked by nn.scan,
    layer axis first) gets one ratio per layer, not one for the whole stack, so LAMB's update
    does not depend on `scan_layers`.
    """

    def update(updates, state, params):
        def scale(path, u, p):
            axis = tuple(range(1, u.ndim)) if STACKED_KEY in _dict_keys(path) else None
            p_norm = jnp.sqrt(jnp.sum(jnp.square(p), axis=axis, keepdims=True))
            u_norm = jnp.sqrt(jnp.sum(jnp.square(u), axis=axis, keepdims=True))
            ratio = jnp.where((p_norm == 0) | (u_norm == 0), 1.0, p_norm / u_norm)
            return u * ratio.astype(u.dtype)

        return jax.tree_util.tree_map_with_path(scale, updates, params), state

    return optax.GradientTransformation(optax.init_empty_state, update)


def make_optimizer(
    cfg: ml_collections.ConfigDict, num_train_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optax transformation named by `cfg.name` (see the module docstring).

    Chain: global-norm clipping -> Adam scaling -> decoupled weight decay on `decay_mask`
    leaves (`update += wd * param`, before the lr, as both optax.adamw and the original) ->
    [LAMB trust ratio] -> times -schedule(step).

    Args:
      cfg: the `optimizer` ConfigDict (`bert_jax.configs.common.optimizer_config`).
      num_train_steps: optimizer steps in the run.

    Returns:
      (tx, schedule); `schedule(step)` is the learning rate of optimizer step `step`, for
      logging.
    """
    if cfg.name not in NAMES:
        raise ValueError(f"optimizer.name {cfg.name!r} is not one of {NAMES}")
    if cfg.grad_accum_steps < 1:
        raise ValueError(f"optimizer.grad_accum_steps must be >= 1, got {cfg.grad_accum_steps}")
    clip = cfg.grad_clip_norm or 0.0
    if clip < 0:
        raise ValueError(f"optimizer.grad_clip_norm must be >= 0, got {clip}")
    schedule = make_schedule(cfg, num_train_steps)
    steps = [optax.clip_by_global_norm(clip)] if clip else []
    if cfg.name == "adamw_original":
        steps.append(_scale_by_adam_without_bias_correction(cfg.b1, cfg.b2, cfg.eps))
    else:
        steps.append(optax.scale_by_adam(cfg.b1, cfg.b2, cfg.eps))
    steps.append(optax.add_decayed_weights(cfg.weight_decay, decay_mask))
    if cfg.name == "lamb":
        steps.append(_scale_by_layerwise_trust_ratio())
    steps.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*steps), schedule


def accumulate_gradients(
    grad_fn: Callable, params: Any, batch: Any, num_micro: int, rng: jax.Array
) -> tuple[tuple[jax.Array, dict], Any]:
    """Loss, aux metrics and gradients averaged over `num_micro` microbatches, in one step.

    Every optimizer step sees the whole batch (unlike optax.MultiSteps, which steps every
    k-th call). Microbatches run sequentially under `jax.lax.scan`, so activation memory is
    that of one microbatch; gradients are summed in at least fp32.

    Args:
      grad_fn: (params, microbatch, rng) -> ((loss, aux dict), grads), e.g.
        `jax.value_and_grad(loss_fn, has_aux=True)`. The result is the plain mean over
        microbatches, which is the full-batch value when the loss is a mean over a fixed
        number of examples; a loss divided by a per-microbatch count (masked tokens) becomes
        a mean of per-microbatch means unless grad_fn divides by the global count.
      params: the param pytree.
      batch: a pytree of arrays with a common leading batch dimension B.
      num_micro: `optimizer.grad_accum_steps`; must divide B. Static under jit.
      rng: microbatch i gets `fold_in(rng, i)`; with num_micro 1, grad_fn gets `rng` as is.

    Returns:
      ((loss, aux), grads) with grad_fn's structure and dtypes.
    """
    if num_micro == 1:
        return grad_fn(params, batch, rng)
    for size in {x.shape[0] for x in jax.tree.leaves(batch)}:
        if size % num_micro:
            raise ValueError(
                f"batch size {size} is not divisible by optimizer.grad_accum_steps={num_micro}"
            )

    # (B, ...) -> (num_micro, B / num_micro, ...), microbatch i = examples i, i + n, i + 2n ...
    # A strided split leaves each device's shard of a batch-sharded array equally in every
    # microbatch with no data movement; a contiguous split would put each microbatch on a
    # fraction of the devices.
    def split(x):
        return x.reshape(x.shape[0] // num_micro, num_micro, *x.shape[1:]).swapaxes(0, 1)

    micro = jax.tree.map(split, batch)
    shapes = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro), rng)
    zeros = jax.tree.map(
        lambda s: jnp.zeros(s.shape, jnp.promote_types(s.dtype, jnp.float32)), shapes
    )

    def body(total, xs):
        i, mb = xs
        out = grad_fn(params, mb, jax.random.fold_in(rng, i))
        return jax.tree.map(jnp.add, total, out), None

    total, _ = jax.lax.scan(body, zeros, (jnp.arange(num_micro), micro))
    return jax.tree.map(lambda t, s: (t / num_micro).astype(s.dtype), total, shapes)
