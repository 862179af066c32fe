"""Schedules, the weight-decay mask, AdamW / original-BERT Adam / LAMB against float64 numpy
references, gradient accumulation, and config validation."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bert_jax import optim
from bert_jax.checkpoints.layout import stack_layers
from bert_jax.configs import common
from bert_jax.models.bert import config_for_size
from bert_jax.models.heads import BertForPreTraining
from tests.numerics import assert_close


def _cfg(**overrides):
    cfg = common.optimizer_config()
    cfg.update(overrides)
    return cfg


def _lrs(cfg, total, steps):
    schedule = optim.make_schedule(cfg, total)
    return np.array([float(schedule(s)) for s in steps])


# --- Schedules -------------------------------------------------------------------------


def test_linear_schedule_warms_up_then_decays_to_zero():
    cfg = _cfg(learning_rate=1e-3, warmup_steps=10)
    lrs = _lrs(cfg, 110, [0, 5, 10, 60, 110, 200])
    assert_close(lrs, [0.0, 5e-4, 1e-3, 5e-4, 0.0, 0.0], rtol=1e-6)
    assert lrs[4] == 0.0  # exactly zero at the last step


def test_cosine_and_constant_schedules():
    cos = _lrs(_cfg(learning_rate=1.0, warmup_steps=4, schedule="cosine"), 12, [2, 4, 8, 12])
    assert_close(cos, [0.5, 1.0, 0.5, 0.0], atol=1e-6)
    const = _lrs(_cfg(learning_rate=1.0, warmup_steps=4, schedule="constant"), 12, [2, 4, 12])
    assert_close(const, [0.5, 1.0, 1.0], atol=1e-7)
    no_warmup = _lrs(_cfg(learning_rate=1.0, warmup_steps=0), 10, [0, 5])
    assert_close(no_warmup, [1.0, 0.5], atol=1e-7)


def test_warmup_proportion():
    cfg = _cfg(learning_rate=1.0, warmup_steps=0, warmup_proportion=0.1)
    assert_close(_lrs(cfg, 200, [10, 20, 110]), [0.5, 1.0, 0.5], atol=1e-6)


# --- Weight-decay mask -----------------------------------------------------------------


@pytest.mark.parametrize("scan_layers", [False, True])
def test_decay_mask_on_bert_params(scan_layers):
    model = BertForPreTraining(config_for_size("tiny", vocab_size=100, scan_layers=scan_layers))
    ids = jnp.ones((1, 8), jnp.int32)
    params = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), ids)["params"])
    mask = optim.decay_mask(params)
    flat = {jax.tree_util.keystr(p): m for p, m in jax.tree_util.tree_leaves_with_path(mask)}
    assert set(map(type, flat.values())) == {bool}
    for path, decayed in flat.items():
        leaf = path.rsplit("'", 2)[-2]
        assert decayed == (leaf in ("kernel", "embedding")), path
    assert flat["['mlm']['bias']"] is False
    assert flat["['bert']['embeddings']['word_embeddings']['embedding']"] is True
    layer = "['layers']" if scan_layers else "['layer_0']"
    assert flat[f"['bert']['encoder']{layer}['mlp']['layer_norm']['scale']"] is False
    assert flat[f"['bert']['encoder']{layer}['attention']['query']['kernel']"] is True
    # 3 embedding tables, 6 kernels per layer (q, k, v, attention output, intermediate,
    # output), the pooler, MLM transform and NSP kernels.
    assert sum(flat.values()) == 3 + 6 * (1 if scan_layers else 2) + 3


# --- Update rules against float64 numpy references -------------------------------------

SHAPES = {
    "dense": {"kernel": (3, 4), "bias": (4,)},
    "layer_norm": {"scale": (4,), "bias": (4,)},
    "embed": {"embedding": (5, 4)},
}
MASK = {
    "dense": {"kernel": 1.0, "bias": 0.0},
    "layer_norm": {"scale": 0.0, "bias": 0.0},
    "embed": {"embedding": 1.0},
}
NUM_STEPS, TOTAL, LR, WD = 5, 6, 0.01, 0.01


def _params_and_grads(seed=0):
    rng = np.random.RandomState(seed)
    params = jax.tree.map(lambda s: rng.randn(*s), SHAPES, is_leaf=lambda s: isinstance(s, tuple))
    # Scales straddle the clip norm of 1.0: some steps are clipped, some are not.
    grads = [
        jax.tree.map(lambda p, s=s: s * rng.randn(*p.shape), params) for s in (3, 0.05, 1, 0.1, 2)
    ]
    return params, grads


def _np_lr(step, warmup):
    if step < warmup:
        return LR * step / warmup
    return LR * (TOTAL - step) / (TOTAL - warmup)


def _np_clip(grads, max_norm=1.0):
    norm = np.sqrt(sum(np.sum(g**2) for g in jax.tree.leaves(grads)))
    return jax.tree.map(lambda g: g * min(1.0, max_norm / norm), grads)


def _np_run(params, grads, warmup, direction):
    """Shared Adam-family loop; `direction(m, v, p, t)` returns the pre-lr update of a leaf."""
    params = jax.tree.map(np.float64, params)
    m = jax.tree.map(np.zeros_like, params)
    v = jax.tree.map(np.zeros_like, params)
    for step, g in enumerate(grads):
        g = _np_clip(g)
        m = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, m, g)
        v = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
        update = direction(m, v, params, step + 1)
        lr = _np_lr(step, warmup)
        params = jax.tree.map(lambda p, u, lr=lr: p - lr * u, params, update)
    return params


def _np_adamw(m, v, params, t):
    def leaf(m, v, p, decay):
        u = (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-6)
        return u + WD * p * decay

    return jax.tree.map(leaf, m, v, params, MASK)


def _np_original(m, v, params, t):
    # AdamWeightDecayOptimizer.apply_gradients: update = m / (sqrt(v) + eps);
    # if decay: update += wd * param.
    return jax.tree.map(lambda m, v, p, d: m / (np.sqrt(v) + 1e-6) + WD * p * d, m, v, params, MASK)


def _np_lamb(m, v, params, t):
    def leaf(u, p):
        # Trust ratio ||p|| / ||u||, 1 where either norm is 0 (You et al. 2020, Algorithm 2).
        pn, un = np.linalg.norm(p), np.linalg.norm(u)
        return u * (pn / un if pn > 0 and un > 0 else 1.0)

    return jax.tree.map(leaf, _np_adamw(m, v, params, t), params)


def _run(name, params, grads, warmup, tx=None):
    if tx is None:
        cfg = _cfg(name=name, learning_rate=LR, warmup_steps=warmup, weight_decay=WD)
        tx, _ = optim.make_optimizer(cfg, TOTAL)
    params = jax.tree.map(jnp.float32, params)
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update(jax.tree.map(jnp.float32, g), state, params)
        params = optax.apply_updates(params, updates)
    return params


def _close(actual, expected):
    jax.tree.map(lambda a, e: assert_close(a, e, rtol=2e-5, atol=1e-6), actual, expected)


@pytest.mark.parametrize("warmup", [0, 2])
@pytest.mark.parametrize(
    "name, direction",
    [("adamw", _np_adamw), ("adamw_original", _np_original), ("lamb", _np_lamb)],
)
def test_update_rules_match_numpy(name, direction, warmup):
    params, grads = _params_and_grads()
    _close(_run(name, params, grads, warmup), _np_run(params, grads, warmup, direction))


def test_bias_correction_changes_the_first_step():
    params, grads = _params_and_grads()
    new = _run("adamw", params, grads[:1], warmup=0)
    orig = _run("adamw_original", params, grads[:1], warmup=0)
    step_new = np.asarray(new["dense"]["kernel"]) - params["dense"]["kernel"]
    step_orig = np.asarray(orig["dense"]["kernel"]) - params["dense"]["kernel"]
    # Without bias correction the first step is ~ (1 - b1) / sqrt(1 - b2) = 3.16x larger.
    assert np.all(np.abs(step_orig) > 2 * np.abs(step_new))


@pytest.mark.parametrize("name", ["adamw", "lamb"])
def test_same_as_optax_reference(name):
    params, grads = _params_and_grads(1)
    cfg = _cfg(name=name, learning_rate=LR, warmup_steps=2, grad_clip_norm=0)
    ours = _run(name, params, grads, 2, optim.make_optimizer(cfg, TOTAL)[0])
    ref_fn = optax.adamw if name == "adamw" else optax.lamb
    ref = ref_fn(optim.make_schedule(cfg, TOTAL), eps=1e-6, weight_decay=WD, mask=optim.decay_mask)
    _close(ours, _run(name, params, grads, 2, ref))


def test_lamb_trust_ratio_is_per_layer_under_scan():
    # Two layers of different scale: one ratio for the whole stack would differ from both.
    rng = np.random.RandomState(2)
    loop = {
        f"layer_{i}": {"kernel": (i + 1) * rng.randn(3, 4), "bias": rng.randn(4)} for i in range(2)
    }
    loop_grads = [jax.tree.map(lambda p: rng.randn(*p.shape), loop) for _ in range(3)]
    scanned = _run("lamb", stack_layers(loop, 2), [stack_layers(g, 2) for g in loop_grads], 0)
    _close(scanned, stack_layers(_run("lamb", loop, loop_grads, 0), 2))


# --- Gradient accumulation -------------------------------------------------------------


def _linear_grad_fn():
    def loss_fn(params, batch, rng):
        pred = batch["x"] @ params["w"] + params["b"]
        loss = jnp.mean((pred - batch["y"]) ** 2)
        return loss, {"mae": jnp.mean(jnp.abs(pred - batch["y"])), "noise": jax.random.uniform(rng)}

    return jax.value_and_grad(loss_fn, has_aux=True)


def _linear_problem():
    rng = np.random.RandomState(0)
    params = {"w": jnp.asarray(rng.randn(5, 3), jnp.float32), "b": jnp.zeros(3, jnp.float32)}
    batch = {"x": rng.randn(16, 5).astype(np.float32), "y": rng.randn(16, 3).astype(np.float32)}
    return params, batch


def test_accumulated_gradients_equal_full_batch():
    grad_fn = _linear_grad_fn()
    params, batch = _linear_problem()
    rng = jax.random.key(0)
    (loss, aux), grads = grad_fn(params, batch, rng)
    accumulate = jax.jit(functools.partial(optim.accumulate_gradients, grad_fn, num_micro=4))
    (loss4, aux4), grads4 = accumulate(params, batch, rng=rng)
    assert_close(loss4, loss, rtol=1e-6, atol=1e-6)
    assert_close(aux4["mae"], aux["mae"], rtol=1e-6, atol=1e-6)
    jax.tree.map(lambda a, e: assert_close(a, e, rtol=1e-6, atol=1e-6), grads4, grads)
    # Microbatch i draws from fold_in(rng, i).
    noise = np.mean([jax.random.uniform(jax.random.fold_in(rng, i)) for i in range(4)])
    assert_close(aux4["noise"], noise, rtol=1e-6)


def test_accumulation_rejects_indivisible_batch():
    params, batch = _linear_problem()
    with pytest.raises(ValueError, match="optimizer.grad_accum_steps=3"):
        optim.accumulate_gradients(_linear_grad_fn(), params, batch, 3, jax.random.key(0))


# --- Validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, key",
    [
        (dict(name="sgd"), "optimizer.name"),
        (dict(schedule="step"), "optimizer.schedule"),
        (dict(warmup_steps=10, warmup_proportion=0.1), "optimizer.warmup_proportion"),
        (dict(warmup_steps=101), "optimizer.warmup_steps"),
        (dict(learning_rate=-1e-4), "optimizer.learning_rate"),
        (dict(grad_accum_steps=0), "optimizer.grad_accum_steps"),
    ],
)
def test_validation_errors(overrides, key):
    with pytest.raises(ValueError, match=key):
        optim.make_optimizer(_cfg(**overrides), 100)
