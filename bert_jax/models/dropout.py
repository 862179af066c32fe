"""Dropout whose masks take a quarter of the random bits flax's does.

`flax.linen.Dropout` draws one float32 uniform per element: one Threefry-2x32
hash per dropped-or-kept activation, of whose 64 output bits JAX keeps 32 and
the uniform uses 23. On XLA:CPU that hash runs as a rolled loop whose every
round reads and writes the whole array; in a small BERT pretraining step on
the 2-core CPU the masks cost about an eighth of the step (docs/performance.md,
"dropout-masks": 3.04 s a step with flax's masks, 2.66 s with these).

Here one Threefry-2x32 hash gives four 16-bit uniforms, so a mask costs a
quarter of the hashes, and the hash is written out round by round in jnp, so
XLA runs it as one fused loop that writes a byte of decisions per hash, read
by the forward and the backward select (bitwise the same function as
`jax.extend.random.threefry2x32_p`: Salmon et al. 2011, "Parallel random
numbers: as easy as 1, 2, 3", Threefry-2x32 with 20 rounds, as JAX implements
it). An element is kept when its uniform is below round(keep_prob * 2**16),
and kept elements are scaled by the inverse of that exact probability, so the
output's expectation is the input: rate 0.1 drops with probability
6554/65536 = 0.100006.

`mask_bits=32` is flax's nn.Dropout itself (its masks, bit for bit, at the
same module path), for reproducing runs made before this module. `mask_bits=0`
(BertConfig's default) takes 16 on CPU and 32 elsewhere: compiled for a TPU
v5p-8, base at 256 x 128 (bf16, splash attention) was estimated at 43.4% MFU
with 16 and 46.0% with 32 (docs/performance.md, the AOT table), where the
hash is arithmetic on the vector units instead of the chip's own generator.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from bert_jax.sharding import traced_platform

MASK_BITS = (0, 16, 32)  # 0: per platform (mask_bits_for)
# Threefry-2x32's rotation constants and key-schedule parity (Salmon et al.
# 2011, table 4; the values JAX's threefry2x32 uses).
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA


def mask_bits_for(mask_bits: int) -> int:
    """16 or 32 as given; 0: 16 on CPU (measured faster there), 32 elsewhere."""
    if mask_bits:
        return mask_bits
    return 16 if traced_platform() == "cpu" else 32


def _rotate_left(x: jax.Array, d: int) -> jax.Array:
    return (x << jnp.uint32(d)) | (x >> jnp.uint32(32 - d))


def threefry2x32(k0, k1, x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32 (20 rounds) of the counter pairs (x0, x1) under key (k0, k1)."""
    ks = (k0, k1, k0 ^ k1 ^ jnp.uint32(_PARITY))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = x0 ^ _rotate_left(x1, r)
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
    return x0, x1


def _counters(shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """A distinct (hi, lo) uint32 pair per element: hi numbers the rows (all but
    the last dim), lo the position in the row. Built from iotas, so a sharded
    array draws the same bits as an unsharded one."""
    *lead, width = shape
    rows = math.prod(lead)
    if rows >= 2**32 or width >= 2**32:
        raise ValueError(f"dropout mask of shape {shape}: more than 2**32 rows or columns")
    hi = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for d in reversed(range(len(lead))):
        hi = hi + lax.broadcasted_iota(jnp.uint32, shape, d) * jnp.uint32(stride)
        stride *= lead[d]
    return hi, lax.broadcasted_iota(jnp.uint32, shape, len(shape) - 1)


def keep_mask(key: jax.Array, shape: tuple[int, ...], threshold: int) -> jax.Array:
    """bool `shape`: True where a 16-bit uniform drawn from `key` is below `threshold`.

    Threefry keys: four uniforms per Threefry-2x32 hash (its two words, split
    in halves). Other generators (rbg, unsafe_rbg): two per 32 bits of
    jax.random.bits.
    """
    out_shape = tuple(shape)
    *lead, width = out_shape or (1,)
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    threefry = not typed or str(jax.random.key_impl(key)) == "threefry2x32"
    per_word = 4 if threefry else 2

    def packed_decisions(key):
        if threefry:
            k = jax.random.key_data(key) if typed else key
            words = threefry2x32(k[0], k[1], *_counters((*lead, -(-width // 4))))
        else:
            words = (jax.random.bits(key, (*lead, -(-width // 2)), jnp.uint32),)
        t = jnp.uint32(threshold)
        kept = [h < t for w in words for h in (w >> 16, w & 0xFFFF)]
        # One byte per hash holds its 2 or 4 decisions, unpacked where they are used.
        return sum(m.astype(jnp.uint8) << jnp.uint8(i) for i, m in enumerate(kept))

    # The bytes are computed once and kept in memory: a conditional's result
    # is a buffer that no fusion crosses. Both branches are the same function,
    # so the predicate (not one XLA can fold) never changes the result. Without
    # it XLA:CPU fused the hash into every consumer, computing it again in the
    # backward pass (an optimization barrier did not stop that; XLA:CPU expands
    # barriers before fusion): the small pretraining step on the 2-core CPU
    # took 1.19 s instead of 1.13 s (docs/performance.md, "dropout-mask-once").
    data = jax.random.key_data(key) if typed else key
    packed = lax.cond(data.ravel()[0] != 0, packed_decisions, packed_decisions, key)
    bit = lax.broadcasted_iota(jnp.uint8, (*packed.shape, per_word), packed.ndim)
    mask = ((packed[..., None] >> bit) & jnp.uint8(1)).astype(bool)
    return mask.reshape(*lead, -1)[..., :width].reshape(out_shape)


class Dropout(nn.Module):
    """Zeroes each element with probability `rate` (training only) and scales
    the rest so the expectation is unchanged; `mask_bits` as in the module doc."""

    rate: float
    mask_bits: int = 0
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, inputs: jax.Array, deterministic: bool | None = None) -> jax.Array:
        if self.mask_bits not in MASK_BITS:
            raise ValueError(f"dropout mask_bits must be one of {MASK_BITS}, got {self.mask_bits}")
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        if self.rate == 0.0 or deterministic:
            return inputs
        if self.rate == 1.0:
            return jnp.zeros_like(inputs)
        rng = self.make_rng(self.rng_collection)
        keep_prob = 1.0 - self.rate
        if mask_bits_for(self.mask_bits) == 32:  # flax.linen.Dropout's draw, exactly
            mask = jax.random.bernoulli(rng, p=keep_prob, shape=inputs.shape)
        else:
            threshold = round(keep_prob * 2**16)
            if threshold == 0:
                return jnp.zeros_like(inputs)
            # The scope names the hash's kernels for `bench --profile`.
            with jax.named_scope("dropout_mask"):
                mask = keep_mask(rng, inputs.shape, threshold)
            keep_prob = threshold / 2**16
        return lax.select(mask, inputs / keep_prob, jnp.zeros_like(inputs))
