"""attention_impl="splash": the Pallas TPU kernel, run here through the Pallas
interpreter ("splash_interpret", the explicit value a CPU caller sets: the
model never asks for the platform), against the XLA path; its config rules;
its sharded form.

The TPU compile of the kernel inside the sharded train step is checked by
tests/perf/test_perf_tools.py (bert_jax.perf.aot with libtpu).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from bert_jax import sharding
from bert_jax.models.bert import BertModel, config_for_size
from bert_jax.models.heads import BertForPreTraining
from tests.numerics import assert_close

# 128 positions: the kernel's smallest block. Attention dropout off: the kernel has none.
XLA = config_for_size(
    "tiny", vocab_size=97, max_position_embeddings=128, attention_dropout=0.0, num_heads=4
)
# The kernel through the Pallas interpreter: the value a CPU test asks for.
SPLASH = dataclasses.replace(XLA, attention_impl="splash_interpret")
L = 128


def _batch(rng):
    ids = rng.randint(5, 97, size=(2, L)).astype(np.int32)
    mask = np.ones((2, L), np.int32)
    mask[0, 90:] = 0  # padding
    ids[mask == 0] = 0
    return ids, mask


def test_splash_equals_xla_on_real_tokens_with_gradients():
    rng = np.random.RandomState(0)
    ids, mask = _batch(rng)
    xla, splash = BertModel(XLA), BertModel(SPLASH)
    params = xla.init(jax.random.key(0), ids, None, mask)["params"]

    # A fixed random projection of the real tokens' outputs (a sum of squares of
    # LayerNorm outputs would be nearly constant, its gradients all rounding).
    proj = jnp.asarray(rng.normal(size=(2, L, XLA.hidden_size)), jnp.float32)

    def loss(model, p):
        out = model.apply({"params": p}, ids, None, mask)["sequence_output"]
        return jnp.sum(jnp.where(mask[..., None] > 0, out * proj, 0.0))

    want, grads_want = jax.value_and_grad(lambda p: loss(xla, p))(params)
    got, grads_got = jax.value_and_grad(lambda p: loss(splash, p))(params)
    real = mask > 0
    seq = lambda m: m.apply({"params": params}, ids, None, mask)["sequence_output"]  # noqa: E731
    assert_close(seq(splash)[real], seq(xla)[real], atol=2e-5)
    assert_close(got, want, rtol=1e-5)
    for g, w in zip(jax.tree.leaves(grads_got), jax.tree.leaves(grads_want), strict=True):
        assert_close(g, w, atol=1e-4, rtol=1e-4)


def test_splash_keeps_packed_examples_apart():
    """example_ids become the kernel's segment ids: the same outputs as the XLA mask."""
    rng = np.random.RandomState(1)
    ids, mask = _batch(rng)
    example_ids = np.zeros((2, L), np.int32)
    example_ids[0, :40], example_ids[0, 40:90] = 1, 2
    example_ids[1, :64], example_ids[1, 64:] = 1, 2
    starts = np.asarray([[0, 40], [0, 64]], np.int32)  # each example's [CLS]
    second = np.arange(L) >= starts[:, 1:]
    positions = np.where(second, np.arange(L) - starts[:, 1:], np.arange(L)).astype(np.int32)
    kw = dict(position_ids=positions, example_ids=example_ids, cls_positions=starts)
    xla, splash = BertForPreTraining(XLA), BertForPreTraining(SPLASH)
    params = xla.init(jax.random.key(0), ids, None, mask, **kw)["params"]
    want = xla.apply({"params": params}, ids, None, mask, **kw)
    got = splash.apply({"params": params}, ids, None, mask, **kw)
    real = example_ids > 0
    assert_close(got["sequence_output"][real], want["sequence_output"][real], atol=2e-5)
    assert_close(got["nsp_logits"], want["nsp_logits"], atol=2e-5)


def test_splash_under_a_mesh_runs_per_shard():
    """Inside `sharding.activate` the kernel runs under shard_map over batch x heads."""
    mesh = sharding.make_mesh((2, 2, 2))
    rng = np.random.RandomState(2)
    ids = rng.randint(5, 97, size=(4, L)).astype(np.int32)
    mask = np.ones((4, L), np.int32)
    mask[1, 100:] = 0
    xla, splash = BertModel(XLA), BertModel(SPLASH)
    params = xla.init(jax.random.key(0), ids, None, mask)["params"]
    want = xla.apply({"params": params}, ids, None, mask)["sequence_output"]
    batch_sh, whole = sharding.batch_sharding(mesh), NamedSharding(mesh, PartitionSpec())
    with sharding.activate(mesh):
        fn = jax.jit(
            lambda p, x, m: splash.apply({"params": p}, x, None, m)["sequence_output"],
            in_shardings=(whole, batch_sh, batch_sh),
            out_shardings=batch_sh,
        )
        assert "shard_map" in str(jax.make_jaxpr(fn)(params, ids, mask))
        got = fn(params, ids, mask)
    assert_close(np.asarray(got)[mask > 0], np.asarray(want)[mask > 0], atol=2e-5)


def test_splash_config_rules():
    for impl in ("splash", "splash_interpret"):
        with pytest.raises(ValueError, match=f"attention_impl '{impl}' has no attention dropout"):
            dataclasses.replace(XLA, attention_impl=impl, attention_dropout=0.1)
    with pytest.raises(ValueError, match="attention_impl 'flash' is not one of"):
        dataclasses.replace(XLA, attention_impl="flash")
    short = np.ones((1, 96), np.int32)
    with pytest.raises(ValueError, match="multiple of 128.*got 96"):
        BertModel(SPLASH).init(jax.random.key(0), short)
