"""Mesh construction, the rules table and uneven-dimension handling (8 host CPU devices)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

from bert_jax import sharding
from bert_jax.models.bert import config_for_size
from bert_jax.models.heads import BertForPreTraining


def test_mesh_shapes_and_fill():
    assert jax.device_count() == 8
    assert dict(sharding.make_mesh((-1, 1, 1)).shape) == {"data": 8, "fsdp": 1, "tensor": 1}
    assert dict(sharding.make_mesh((2, -1, 2)).shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    mesh = sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    assert mesh.devices.size == 1


@pytest.mark.parametrize(
    "shape, message",
    [
        ((3, 1, 1), "needs 3 devices but 8"),
        ((-1, 3, 1), "does not divide the 8 devices"),
        ((-1, -1, 1), "at most one entry may be -1"),
        ((8, 1), "must have 3 entries"),
        ((8, 0, 1), "positive or -1"),
    ],
)
def test_mesh_errors(shape, message):
    with pytest.raises(ValueError, match=message):
        sharding.make_mesh(shape)


def test_rules_map_params_and_activations():
    rules = sharding.LOGICAL_RULES
    # Parameters: embed over fsdp, heads/mlp/vocab over tensor.
    assert nn.logical_to_mesh_axes(("embed", "heads", "kv"), rules) == P("fsdp", "tensor", None)
    assert nn.logical_to_mesh_axes(("mlp", "embed"), rules) == P("tensor", "fsdp")
    assert nn.logical_to_mesh_axes(("vocab", "embed"), rules) == P("tensor", "fsdp")
    # Activations: batch takes data and fsdp, so embed stays replicated.
    assert nn.logical_to_mesh_axes(("batch", "length", "embed"), rules) == P(
        ("data", "fsdp"), None, None
    )
    assert nn.logical_to_mesh_axes(("layers", "embed", "mlp"), rules) == P(None, "fsdp", "tensor")


def test_uneven_dims_fall_back_to_fewer_axes():
    mesh = sharding.make_mesh((1, 2, 4))
    # 30,522 word pieces do not split 4 ways; 128 does.
    assert sharding.fit_spec(P("tensor", "fsdp"), (30522, 128), mesh) == P(None, "fsdp")
    # A tuple of axes keeps its longest dividing prefix: 8 rows over (data=4, fsdp=2)
    # split 8 ways, 4 rows only over data.
    mesh42 = sharding.make_mesh((4, 2, 1))
    assert sharding.fit_spec(P(("data", "fsdp")), (8,), mesh42) == P(("data", "fsdp"))
    assert sharding.fit_spec(P(("data", "fsdp")), (4,), mesh42) == P("data")
    assert sharding.fit_spec(P(("fsdp", "tensor")), (4,), mesh) == P("fsdp")
    model = BertForPreTraining(config_for_size("tiny", num_heads=4))
    boxed = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    )
    sh = sharding.params_sharding(boxed, mesh)
    assert sh["bert"]["embeddings"]["word_embeddings"]["embedding"].spec == P(None, "fsdp")
    assert sh["mlm"]["bias"].spec == P(None)
    layer = sh["bert"]["encoder"]["layer_0"]
    assert layer["attention"]["output"]["kernel"].spec == P("tensor", None, "fsdp")
    assert layer["mlp"]["intermediate"]["kernel"].spec == P("fsdp", "tensor")


def _lowered_forward(context, mesh):
    model = BertForPreTraining(config_for_size("tiny", num_heads=4))
    ids = jnp.zeros((8, 16), jnp.int32)
    params = nn.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), ids))["params"])
    with context(mesh):
        fn = jax.jit(lambda p, x: model.apply({"params": p}, x)["mlm_logits"])
        return fn.lower(params, ids).as_text()


def test_activation_constraints_reach_the_program():
    """Under `sharding.activate` the model's logical constraints become sharding ops
    in the lowered step; under the legacy `with mesh:` flax skips them silently."""
    mesh = sharding.make_mesh((2, 2, 2))
    active = _lowered_forward(sharding.activate, mesh)
    constraints = [line for line in active.splitlines() if "sdy.sharding_constraint" in line]
    # Per layer: q, k, v, context, attention and MLP outputs, the MLP hidden; and the embeddings.
    assert len(constraints) >= 2 * 7 + 1, len(constraints)
    hidden = '[{"data", "fsdp"}, {}, {}]> : tensor<8x16x128xf32>'  # (batch, length, embed)
    heads = '[{"data", "fsdp"}, {}, {"tensor"}, {}]> : tensor<8x16x4x32xf32>'  # q, k, v
    assert any(hidden in c for c in constraints) and any(heads in c for c in constraints)

    def legacy(m):
        class Both:
            def __enter__(self):
                m.__enter__()
                self.rules = sharding.axis_rules()
                self.rules.__enter__()

            def __exit__(self, *exc):
                self.rules.__exit__(*exc)
                m.__exit__(*exc)

        return Both()

    assert "sdy.sharding_constraint" not in _lowered_forward(legacy, mesh)
