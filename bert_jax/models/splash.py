"""Pallas splash attention (TPU) for `BertConfig.attention_impl="splash"`.

Splash attention (jax.experimental.pallas.ops.tpu.splash_attention) is the
TPU flash-attention kernel MaxText uses: blocks of queries against blocks of
keys in VMEM, the (L, L) logits never written to HBM, and segment ids instead
of a mask, so packed rows (`example_ids`) cost nothing extra. It has no
attention dropout, so BertConfig asks for `attention_dropout=0` with it.

The kernel takes one example, (heads, length, head_dim): it is vmapped over
the batch. Under an active mesh (`sharding.activate`) it runs inside
`jax.shard_map` over the batch and heads axes of the rules table (a Pallas
kernel cannot be partitioned by XLA). `interpret=True` (attention_impl
"splash_interpret") runs the same kernel
through the Pallas interpreter on any backend (the tests compare it with the
XLA path on CPU).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import (
    splash_attention_kernel as kernel_lib,
)
from jax.experimental.pallas.ops.tpu.splash_attention import (
    splash_attention_mask as mask_lib,
)
from jax.sharding import PartitionSpec

# The kernel tiles the sequence in blocks that are multiples of the TPU's 128 lanes.
LANES = 128
BLOCKS = (512, 256, 128)


def check_length(length: int) -> None:
    if length % LANES:
        raise ValueError(
            f"attention_impl='splash' needs a sequence length that is a multiple of "
            f"{LANES} (TPU lanes); got {length}"
        )


def _block_sizes(length: int) -> kernel_lib.BlockSizes:
    block = next(b for b in BLOCKS if length % b == 0)
    return kernel_lib.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )


def _attend_shard(q, k, v, segments, interpret: bool):
    """q, k, v: (B, N, L, D) local shards; segments (B, L) -> (B, N, L, D)."""
    _, heads, length, _ = q.shape
    mask = mask_lib.MultiHeadMask([mask_lib.FullMask((length, length))] * heads)
    kernel = kernel_lib.make_splash_mha(
        mask,
        block_sizes=_block_sizes(length),
        head_shards=1,
        q_seq_shards=1,
        interpret=interpret,
    )

    def one(q, k, v, ids):
        return kernel(q, k, v, kernel_lib.SegmentIds(q=ids, kv=ids))

    return jax.vmap(one)(q, k, v, segments)


def _size(mesh, axes) -> int:
    """Devices along mesh `axes` (a name, a tuple of names or None)."""
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    return math.prod(mesh.shape[a] for a in axes)


def splash_attention(q, k, v, segments, *, batch_axis: str, heads_axis: str, interpret=False):
    """Softmax(q k^T / sqrt(D)) v where query and key share a segment id.

    q, k, v: (B, L, N, D); segments: (B, L) int, equal ids attend to each other
    (1 for real tokens and 0 for padding, or packed rows' example ids, padding
    0, so no query is left without keys). Returns (B, L, N, D) in q's dtype.
    `batch_axis`/`heads_axis` are the logical names the rules table maps.
    """
    check_length(q.shape[1])
    scale = 1.0 / math.sqrt(q.shape[-1])
    q, k, v = (jnp.swapaxes(t, 1, 2) for t in (q * jnp.asarray(scale, q.dtype), k, v))
    segments = segments.astype(jnp.int32)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        out = _attend_shard(q, k, v, segments, interpret)
    else:
        batch, heads = nn.logical_to_mesh_axes((batch_axis, heads_axis))
        # A dim its mesh axes do not divide (the batch of 1 that `init` traces)
        # is replicated instead: each device then attends the whole of it.
        batch, heads = (
            axes if dim % _size(mesh, axes) == 0 else None
            for axes, dim in ((batch, q.shape[0]), (heads, q.shape[1]))
        )
        spec = PartitionSpec(batch, heads, None, None)
        out = jax.shard_map(
            lambda q, k, v, s: _attend_shard(q, k, v, s, interpret),
            mesh=mesh,
            in_specs=(spec, spec, spec, PartitionSpec(batch, None)),
            out_specs=spec,
            check_vma=False,
        )(q, k, v, segments)
    return jnp.swapaxes(out, 1, 2)
