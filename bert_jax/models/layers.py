"""The building blocks every BERT module and head is made of.

Initialisation as in the original `modeling.py`, parameters boxed with their
logical axis names (`bert_jax.sharding`), and the dense and LayerNorm layers
configured from a `BertConfig`'s numerics.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.sharding import EMBED

ACTIVATIONS = {
    # Exact erf GELU: HF "gelu".
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    # tanh approximation: the original TF BERT `gelu` and HF "gelu_new".
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
}

# Activation checkpointing of each encoder layer (BertConfig.remat_policy).
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}

Names = Sequence[str | None]


def bert_init(stddev: float):
    """Truncated normal at +-2 stddev, unscaled, as TF's truncated_normal_initializer.

    The original `modeling.py` (`create_initializer`) initialises every kernel
    and embedding this way with initializer_range 0.02.
    """

    def init(key, shape, dtype=jnp.float32):
        return stddev * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)

    return init


class Partitioned(nn.LogicallyPartitioned):
    """A parameter's logical names; constrained only when the value has their rank.

    DenseGeneral initialises a multi-axis kernel flat and reshapes it (flax
    `linear.py`, kernel_init_wrap), unboxing the flat value on the way; under an
    active mesh (`sharding.activate`) the stock box would then constrain a 2-D
    value with the 3 names of the (embed, heads, kv) kernel and fail.
    """

    def unbox(self, apply_constraint=True):
        if jnp.ndim(self.value) != len(self.names):
            return self.value
        return super().unbox(apply_constraint)


def param(init, names: Names):
    """`init` whose values are boxed with the logical axis `names`."""

    def boxed(*args, **kwargs):
        return Partitioned(init(*args, **kwargs), tuple(names))

    return boxed


def constrain(x, names: Names):
    """Constrain an activation to the mesh axes its logical `names` map to."""
    return nn.with_logical_constraint(x, tuple(names))


def dense(
    cfg: Any,
    features: int | tuple[int, ...],
    kernel_names: Names,
    bias_names: Names,
    axis: int | tuple[int, ...] = -1,
    name: str | None = None,
) -> nn.DenseGeneral:
    """A DenseGeneral in `cfg`'s dtypes, BERT-initialised, with logical names."""
    return nn.DenseGeneral(
        features=features,
        axis=axis,
        dtype=cfg.compute_dtype,
        param_dtype=cfg.storage_dtype,
        kernel_init=param(bert_init(cfg.initializer_range), kernel_names),
        bias_init=param(nn.initializers.zeros, bias_names),
        name=name,
    )


def embed(cfg: Any, num_embeddings: int, names: Names) -> nn.Embed:
    """An embedding table `cfg.embedding_width` wide in `cfg`'s dtypes, BERT-initialised."""
    return nn.Embed(
        num_embeddings,
        cfg.embedding_width,
        dtype=cfg.compute_dtype,
        param_dtype=cfg.storage_dtype,
        embedding_init=param(bert_init(cfg.initializer_range), names),
    )


def layer_norm(cfg: Any, name: str | None = None) -> nn.LayerNorm:
    """LayerNorm in `cfg`'s dtypes over the last (`embed`) axis.

    Statistics are reduced in fp32 even for bf16 compute
    (force_float32_reductions, flax's default, kept explicit here).
    """
    return nn.LayerNorm(
        epsilon=cfg.layer_norm_eps,
        dtype=cfg.compute_dtype,
        param_dtype=cfg.storage_dtype,
        scale_init=param(nn.initializers.ones, (EMBED,)),
        bias_init=param(nn.initializers.zeros, (EMBED,)),
        force_float32_reductions=True,
        name=name,
    )
