"""models/dropout.py: the 16-bit masks' hash, rates, scaling and sharding,
mask_bits=32 as flax's nn.Dropout bit for bit, and the default per platform."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.random import threefry2x32_p
from jax.sharding import NamedSharding, PartitionSpec

from bert_jax.models.dropout import Dropout, keep_mask, threefry2x32
from tests.numerics import assert_close, assert_equal


def test_hash_is_jax_threefry2x32_bit_for_bit():
    k0, k1 = np.uint32(0x12345678), np.uint32(0x9ABCDEF0)
    x0 = jnp.arange(1000, dtype=jnp.uint32) * jnp.uint32(2654435761)
    x1 = jnp.arange(1000, dtype=jnp.uint32)
    ours = jax.jit(threefry2x32)(k0, k1, x0, x1)
    ref = threefry2x32_p.bind(jnp.uint32(k0), jnp.uint32(k1), x0, x1)
    for a, b in zip(ours, ref, strict=True):
        assert_equal(np.asarray(a), np.asarray(b))
    # Known answer (Salmon et al. 2011's Random123 kat_vectors, threefry2x32_20,
    # key and counter all zero; JAX's own known-answer test uses it too).
    zero = jnp.zeros((1,), jnp.uint32)
    got = threefry2x32(jnp.uint32(0), jnp.uint32(0), zero, zero)
    assert [int(w[0]) for w in got] == [0x6B200159, 0x99BA4EFE]


def _apply(module, x, seed, **kw):
    return module.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(seed, **kw)})


def test_rate_scaling_and_independence():
    x = jnp.ones((64, 128, 129))  # odd width: the last hash's unused halves dropped
    y = np.asarray(_apply(Dropout(0.1), x, 0))
    threshold = round(0.9 * 2**16)
    kept = y != 0
    n = kept.size
    p_drop = 1 - threshold / 2**16  # 0.100006
    sigma = np.sqrt(p_drop * (1 - p_drop) / n)
    assert abs((1 - kept.mean()) - p_drop) < 5 * sigma, kept.mean()
    # Kept values are scaled by the exact inverse keep probability: E[y] = x.
    assert_close(y[kept], np.full(kept.sum(), 2**16 / threshold, np.float32), rtol=1e-6)
    assert abs(y.mean() - 1.0) < 5 * sigma / 0.9
    # Each of the four 16-bit lanes of a hash drops at the rate, and lanes of
    # the same hash are not correlated (pairs dropped together at p^2).
    dropped = ~kept[..., :128].reshape(64, 128, 32, 4)
    for lane in range(4):
        m = dropped[..., lane].mean()
        assert abs(m - p_drop) < 5 * np.sqrt(p_drop * (1 - p_drop) / dropped[..., 0].size), lane
    both = (dropped[..., 0] & dropped[..., 1]).mean()
    assert abs(both - p_drop**2) < 5 * np.sqrt(p_drop**2 / dropped[..., 0].size), both
    # Neighbouring rows draw different masks (the row counter is in the hash).
    assert (kept[0] != kept[1]).mean() > 0.1


def test_same_key_same_mask_and_new_key_new_mask():
    x = jnp.ones((8, 256))
    a, b, c = (np.asarray(_apply(Dropout(0.3), x, s)) for s in (5, 5, 6))
    assert_equal(a, b)
    assert (a != c).mean() > 0.2


def test_edge_rates_deterministic_and_gradient():
    x = jnp.arange(1.0, 17.0).reshape(2, 8)
    assert_equal(np.asarray(_apply(Dropout(0.0), x, 0)), np.asarray(x))
    assert_equal(np.asarray(_apply(Dropout(1.0), x, 0)), np.zeros((2, 8)))
    out = Dropout(0.5).apply({}, x, deterministic=True)
    assert_equal(np.asarray(out), np.asarray(x))
    # The gradient is the mask times the scale: zero where dropped.
    g = jax.grad(lambda v: _apply(Dropout(0.5), v, 3).sum())(x)
    y = _apply(Dropout(0.5), x, 3)
    assert_close(np.asarray(g), np.where(np.asarray(y) != 0, 2.0, 0.0).astype(np.float32))
    assert 0 < (np.asarray(g) == 0).sum() < 16
    with pytest.raises(ValueError, match="mask_bits must be one of"):
        _apply(Dropout(0.1, mask_bits=8), x, 0)


def test_other_generators_and_scalars():
    x = jnp.ones((32, 1000))
    y = np.asarray(_apply(Dropout(0.25), x, 0, impl="rbg"))
    assert abs((y == 0).mean() - 0.25) < 0.01
    s = _apply(Dropout(0.5), jnp.float32(3.0), 0)
    assert s.shape == () and float(s) in (0.0, 6.0)
    assert keep_mask(jax.random.key(0), (3, 5), 2**15).shape == (3, 5)


def test_mask_bits_32_is_flax_dropout_bit_for_bit():
    x = jax.random.normal(jax.random.key(0), (4, 16, 32))
    ours = _apply(Dropout(0.1, mask_bits=32), x, 7)
    flax = _apply(nn.Dropout(0.1), x, 7)
    assert_equal(np.asarray(ours), np.asarray(flax))
    assert (np.asarray(ours) == 0).any()


def test_default_is_16_bits_on_cpu_and_flax_elsewhere(monkeypatch):
    from bert_jax.models import dropout

    x = jax.random.normal(jax.random.key(0), (4, 16, 32))
    assert_equal(np.asarray(_apply(Dropout(0.1), x, 3)), np.asarray(_apply(Dropout(0.1, 16), x, 3)))
    monkeypatch.setattr(dropout, "traced_platform", lambda: "tpu")
    assert dropout.mask_bits_for(0) == 32 and dropout.mask_bits_for(16) == 16
    ours = np.asarray(_apply(Dropout(0.1), x, 3))
    assert_equal(ours, np.asarray(_apply(nn.Dropout(0.1), x, 3)))
    assert (ours == 0).any()


def test_sharded_input_draws_the_unsharded_mask():
    # 8 host devices (tests/conftest.py): the counters are iotas, so GSPMD
    # partitions the hash and every shard draws its own slice of the same mask.
    mesh = jax.make_mesh((4, 2), ("data", "model"))
    x = jnp.ones((8, 16, 64))
    f = jax.jit(lambda v: _apply(Dropout(0.1), v, 11))
    whole = np.asarray(f(x))
    spec = NamedSharding(mesh, PartitionSpec("data", None, "model"))
    sharded = f(jax.device_put(x, spec))
    assert_equal(np.asarray(sharded), whole)
    assert (whole == 0).any()


def test_too_many_rows_is_a_clear_error():
    big = jax.ShapeDtypeStruct((2**17, 2**16, 4), jnp.float32)
    with pytest.raises(ValueError, match="more than 2\\*\\*32 rows"):
        jax.eval_shape(lambda v: _apply(Dropout(0.1), v, 0), big)


def test_config_key_reaches_the_model():
    from bert_jax import configs
    from bert_jax.models.bert import BertConfig
    from bert_jax.tasks.model_setup import model_config

    c = configs.load(f"{configs.repository_config('pretrain.py')}:model=tiny")
    assert model_config(c).dropout_mask_bits == 0  # per platform
    c.model.dropout_mask_bits = 32
    assert model_config(c).dropout_mask_bits == 32
    with pytest.raises(ValueError, match="dropout_mask_bits must be one of"):
        BertConfig(dropout_mask_bits=8)


def test_the_hash_runs_once_outside_the_selects():
    """Forward and backward read one computed byte per hash: no fusion that
    applies a mask holds the hash (XLA:CPU recomputed it in both before)."""
    module = Dropout(0.1, 16)

    def loss(x):
        y = module.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
        return jnp.sum(jnp.sin(y))

    x = jnp.linspace(0.1, 1.0, 8 * 128 * 64).reshape(8, 128, 64)  # no zeros: kept = nonzero
    hlo = jax.jit(jax.grad(loss)).lower(x).compile().as_text()
    bodies = [b for b in hlo.split("\n\n") if "select(" in b]
    assert bodies and all("xor(" not in b for b in bodies), "the hash is fused into a select"
    assert "conditional(" in hlo and hlo.count("xor(") > 0
    grad = jax.jit(jax.grad(loss))(x)
    kept = np.asarray(_apply(module, x, 0)) != 0
    scale = 2**16 / round(0.9 * 2**16)
    assert_close(
        np.asarray(grad),
        np.where(kept, np.cos(np.asarray(_apply(module, x, 0))) * scale, 0.0),
        rtol=1e-5,
    )
