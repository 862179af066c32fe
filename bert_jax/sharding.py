"""Logical axis names, the one rules table, and device-mesh helpers.

Every parameter and large activation in bert_jax carries names from this
vocabulary (see ARCHITECTURE.md). `LOGICAL_RULES` maps them to the mesh axes
`data`, `fsdp` and `tensor`; changing a layout means changing this table.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# Activations.
BATCH = "batch"
LENGTH = "length"
# Parameters and activations.
EMBED = "embed"
EMBED_OUT = "embed_out"  # the output side of the few (hidden, hidden) kernels
MLP = "mlp"
HEADS = "heads"
KV = "kv"
VOCAB = "vocab"
LAYERS = "layers"
CLASSES = "classes"

MESH_AXES = ("data", "fsdp", "tensor")

# Logical name -> mesh axes, in priority order. flax assigns each mesh axis at
# most once per array, first rule first: so for activations (batch, length,
# embed) `batch` takes `fsdp` and `embed` stays replicated, while for
# parameters (no batch dim) `embed` is sharded over `fsdp`: ZeRO-3 style
# parameter and optimizer-state sharding, gathered per layer by XLA. `heads`,
# `mlp` and `vocab` are split over `tensor` (Megatron-style tensor parallel).
LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    (BATCH, ("data", "fsdp")),
    (VOCAB, "tensor"),
    (HEADS, "tensor"),
    (MLP, "tensor"),
    (EMBED, "fsdp"),
    (EMBED_OUT, None),
    (KV, None),
    (LENGTH, None),
    (LAYERS, None),
    (CLASSES, None),
)


def axis_rules():
    """The context that maps logical names to mesh axes by `LOGICAL_RULES` (flax)."""
    return nn.logical_axis_rules(LOGICAL_RULES)


@contextlib.contextmanager
def activate(mesh: Mesh) -> Iterator[Mesh]:
    """The mesh and the rules, for tracing the model: what makes the activations'
    logical constraints real. flax applies them only under a mesh that
    `jax.sharding.get_abstract_mesh()` sees, which the older `with mesh:` does
    not set (there they are silently skipped). Only the abstract mesh is set:
    the jitted functions carry their own NamedShardings, and eager ops stay on
    the default device (for `bert_jax.perf.aot` the mesh's devices are only a
    description of a TPU slice)."""
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), axis_rules():
        yield mesh


def resolve_mesh_shape(shape: Sequence[int], num_devices: int, key: str = "mesh_shape"):
    """Fill one -1 entry so the product equals `num_devices`; validate."""
    shape = list(shape)
    if len(shape) != len(MESH_AXES):
        raise ValueError(f"{key} must have {len(MESH_AXES)} entries {MESH_AXES}, got {shape}")
    if shape.count(-1) > 1:
        raise ValueError(f"{key}={tuple(shape)}: at most one entry may be -1")
    known = math.prod(s for s in shape if s != -1)
    if known <= 0 or any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"{key}={tuple(shape)}: entries must be positive or -1")
    if -1 in shape:
        if num_devices % known:
            raise ValueError(f"{key}={tuple(shape)} does not divide the {num_devices} devices")
        shape[shape.index(-1)] = num_devices // known
    if math.prod(shape) != num_devices:
        raise ValueError(
            f"{key}={tuple(shape)} needs {math.prod(shape)} devices but {num_devices} are available"
        )
    return tuple(shape)


def make_mesh(
    mesh_shape: Sequence[int],
    dcn_mesh_shape: Sequence[int] | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A Mesh over axes (data, fsdp, tensor).

    `mesh_shape` is the shape within a slice (ICI); `dcn_mesh_shape` the
    number of slices along each axis for multi-slice TPU jobs (usually only
    `data` > 1, since DCN bandwidth suits data parallelism).
    """
    devices = list(devices if devices is not None else jax.devices())
    n = len(devices)
    if dcn_mesh_shape is None or math.prod(dcn_mesh_shape) == 1:
        shape = resolve_mesh_shape(mesh_shape, n)
        try:
            grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
        except (NotImplementedError, ValueError, AssertionError):
            # Platforms without a physical topology (CPU): plain order.
            grid = np.asarray(devices, dtype=object).reshape(shape)
        return Mesh(grid, MESH_AXES)
    dcn = resolve_mesh_shape(
        dcn_mesh_shape, math.prod(s for s in dcn_mesh_shape if s > 0), "dcn_mesh_shape"
    )
    ici = resolve_mesh_shape(mesh_shape, n // math.prod(dcn))
    grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices)
    return Mesh(grid, MESH_AXES)


def fit_spec(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """Drop mesh axes from dims they do not divide evenly (jax needs even shards).

    The BERT vocabularies (30,522 and 28,996 rows) do not split 4 or 8 ways:
    such a dim is sharded over the longest prefix of its mesh axes that
    divides it, else replicated.
    """
    out = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)), strict=True):
        axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
        while axes and dim % math.prod(mesh.shape[a] for a in axes):
            axes = axes[:-1]
        out.append(axes[0] if len(axes) == 1 else (axes or None))
    return PartitionSpec(*out)


def unboxed(tree: Any) -> Any:
    """The values of a tree of `nn.LogicallyPartitioned` leaves, unconstrained.

    `nn.meta.unbox` constrains each value to its names' sharding when a mesh is
    active, which fails outside jit (abstract leaves) and ignores `fit_spec`'s
    fallbacks; parameter layouts come from `params_sharding` instead."""
    return jax.tree.map(
        lambda x: x.unbox(apply_constraint=False) if isinstance(x, nn.meta.AxisMetadata) else x,
        tree,
        is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata),
    )


def params_sharding(boxed_tree: Any, mesh: Mesh, rules=LOGICAL_RULES) -> Any:
    """NamedShardings for a tree holding `nn.LogicallyPartitioned` leaves
    (e.g. `jax.eval_shape` of an init); unnamed leaves are replicated."""
    mesh_specs = nn.logical_to_mesh(nn.get_partition_spec(boxed_tree), rules)
    shapes = unboxed(boxed_tree)
    return jax.tree.map(
        lambda spec, leaf: NamedSharding(mesh, fit_spec(spec, leaf.shape, mesh)),
        mesh_specs,
        shapes,
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of a (global_batch, ...) input array: batch over data x fsdp."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def data_parallel_size(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]
