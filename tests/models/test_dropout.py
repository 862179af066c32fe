"""One BERT on every platform: dropout is flax's nn.Dropout (Threefry bits, the
same on CPU, GPU and TPU), bit for bit against a jax.random.bernoulli
reference; nothing under bert_jax/models asks which platform it runs on; a
stored config with a removed field still loads."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.models import bert
from bert_jax.models.bert import BertConfig, EncoderLayer, Mlp, config_for_size
from bert_jax.models.heads import BertForPreTraining
from tests.numerics import assert_close, assert_differ, assert_equal

CFG = config_for_size("tiny", vocab_size=97, max_position_embeddings=64)
MODELS = Path(bert.__file__).resolve().parent


class _Rng(nn.Module):
    """The dropout rng a module named `Dropout_0` gets at the top level, as flax derives it."""

    @nn.compact
    def __call__(self):
        return _MakeRng(name="Dropout_0")()


class _MakeRng(nn.Module):
    def __call__(self):
        return self.make_rng("dropout")


def _reference_mlp(p, x, key, rate):
    """Mlp by hand: dense, exact GELU, dense, dropout from jax.random.bernoulli, add & LayerNorm."""
    h = jax.nn.gelu(x @ p["intermediate"]["kernel"] + p["intermediate"]["bias"], approximate=False)
    h = h @ p["output"]["kernel"] + p["output"]["bias"]
    keep = jax.random.bernoulli(key, 1.0 - rate, h.shape)
    h = jnp.where(keep, h / (1.0 - rate), 0.0) + x
    mean = h.mean(-1, keepdims=True)
    var = ((h - mean) ** 2).mean(-1, keepdims=True)
    ln = p["layer_norm"]
    return (h - mean) / jnp.sqrt(var + CFG.layer_norm_eps) * ln["scale"] + ln["bias"], keep


def test_a_layers_training_output_is_the_bernoulli_reference_bit_for_bit():
    """Mlp in training: its dropout mask is jax.random.bernoulli(rng, 1 - rate) of
    the rng flax gives the module, exactly (flax's nn.Dropout): Threefry bits, so
    the same config and seed draw the same masks on every platform."""
    x = jax.random.normal(jax.random.key(0), (2, 8, CFG.hidden_size))
    mlp = Mlp(CFG, deterministic=False)
    params = nn.unbox(mlp.init(jax.random.key(1), x))["params"]
    rngs = {"dropout": jax.random.key(7)}
    got = mlp.apply({"params": params}, x, rngs=rngs)
    key = _Rng().apply({}, rngs=rngs)
    want, keep = _reference_mlp(params, x, key, CFG.hidden_dropout)
    assert 0 < (~np.asarray(keep)).sum() < keep.size  # some dropped, not all
    assert_close(got, want, atol=2e-5)
    # Another key's mask gives another output: the comparison sees the mask.
    other, _ = _reference_mlp(params, x, jax.random.key(8), CFG.hidden_dropout)
    assert_differ(got, other, atol=0.1)

    # And the dropout module is flax's own: the same output, bit for bit.
    class FlaxDropout(nn.Module):
        @nn.compact
        def __call__(self, h):
            return nn.Dropout(CFG.hidden_dropout, name="Dropout_0")(h, deterministic=False)

    h = jax.random.normal(jax.random.key(2), (2, 8, 32))
    keep = jax.random.bernoulli(key, 1.0 - CFG.hidden_dropout, h.shape)
    ref = jnp.where(keep, h / (1.0 - CFG.hidden_dropout), 0.0)
    assert_equal(np.asarray(FlaxDropout().apply({}, h, rngs=rngs)), np.asarray(ref))


def test_every_dropout_in_the_model_is_flax_dropout_and_seeded_alike():
    """Every dropout of a training step is nn.Dropout; the same seed gives the same
    outputs, another seed other ones; deterministic mode uses none."""
    ids = jnp.asarray(np.random.RandomState(0).randint(1, 97, (2, 12)), jnp.int32)
    model = BertForPreTraining(CFG)
    params = nn.unbox(model.init(jax.random.key(0), ids))["params"]
    seen = []

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and "dropout" in type(context.module).__name__.lower():
            seen.append(type(context.module))
        return next_fun(*args, **kwargs)

    def run(seed, det=False):
        return model.apply(
            {"params": params}, ids, deterministic=det, rngs={"dropout": jax.random.key(seed)}
        )["mlm_logits"]

    with nn.intercept_methods(record):
        a = run(3)
    # Embeddings, then per layer: attention probabilities, attention output, MLP output.
    assert seen and set(seen) == {nn.Dropout} and len(seen) == 1 + 3 * CFG.num_layers
    assert_equal(np.asarray(a), np.asarray(run(3)))
    assert_differ(a, run(4))
    assert_equal(np.asarray(run(3, det=True)), np.asarray(run(4, det=True)))


def test_attention_dropout_runs_the_explicit_path_with_flax_masks():
    """Attention dropout on: the explicit softmax path, whatever attention_impl."""
    x = jax.random.normal(jax.random.key(0), (2, 8, CFG.hidden_size))
    mask, segments = jnp.ones((2, 8), bool), jnp.ones((2, 8), jnp.int32)
    layer = EncoderLayer(dataclasses.replace(CFG, attention_impl="xla"), deterministic=False)
    params = nn.unbox(layer.init(jax.random.key(1), x, mask, segments))["params"]
    rngs = {"dropout": jax.random.key(5)}
    jaxpr = str(
        jax.make_jaxpr(lambda p: layer.apply({"params": p}, x, mask, segments, rngs=rngs))(params)
    )
    assert "dot_product_attention" not in jaxpr and "exp" in jaxpr  # softmax written out
    a, _ = layer.apply({"params": params}, x, mask, segments, rngs=rngs)
    b, _ = layer.apply({"params": params}, x, mask, segments, rngs=rngs)
    assert_equal(np.asarray(a), np.asarray(b))


def test_no_module_under_models_asks_for_the_platform():
    """The model computes the same math on every platform: no platform branch."""
    pattern = re.compile(r"default_backend|traced_platform|\.platform\b")
    files = sorted(MODELS.glob("*.py"))
    assert {p.name for p in files} >= {"bert.py", "heads.py", "layers.py", "attention.py"}
    for path in files:
        hits = [
            i for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)
        ]
        assert not hits, f"{path.name} lines {hits} ask for the platform"
    assert not (MODELS / "dropout.py").exists()


def test_a_stored_config_with_a_removed_field_loads_with_a_warning(caplog):
    """bert_jax checkpoints and workdirs written with dropout_mask_bits still load."""
    stored = json.loads(json.dumps(CFG.to_dict())) | {"dropout_mask_bits": 16}
    with caplog.at_level(logging.WARNING):
        cfg = BertConfig.from_dict(stored)
    assert cfg == CFG
    assert "dropout_mask_bits" in caplog.text and "ignoring removed BertConfig field" in caplog.text
    assert not hasattr(cfg, "dropout_mask_bits")
    with pytest.raises(ValueError, match=r"unknown BertConfig keys \['dropout_mask_bitz'\]"):
        BertConfig.from_dict(stored | {"dropout_mask_bitz": 1})
