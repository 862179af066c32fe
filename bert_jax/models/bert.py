"""BERT encoder in Flax Linen (Devlin et al. 2019, arXiv 1810.04805).

Post-LN transformer encoder as in the original `modeling.py`: embeddings
(word + position + token type) -> LayerNorm -> dropout, then `num_layers`
blocks of [self-attention -> dropout -> add & LayerNorm -> feed-forward ->
dropout -> add & LayerNorm], then a tanh pooler over [CLS].

The BERT family members are options of this one encoder (`BertConfig`):
ALBERT (Lan et al. 2020, arXiv 1909.11942): factorised embeddings and
cross-layer sharing; RoBERTa (Liu et al. 2019, arXiv 1907.11692): positions
offset past the padding index, one token type; DistilBERT (Sanh et al. 2019,
arXiv 1910.01108): no token types, no pooler.

Every parameter is created with logical axis names from `bert_jax.sharding`
and large activations are constrained with them; the mapping to mesh axes is
the rules table in `bert_jax/sharding.py`. Building blocks: `layers.py`;
attention: `attention.py`. Nothing here depends on the platform: a config and
seed compute the same math and draw the same dropout masks (flax's
nn.Dropout) on CPU, GPU and TPU.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import logging

from bert_jax.configs.model import SIZES, BertFields
from bert_jax.models import attention
from bert_jax.models.layers import ACTIVATIONS, REMAT_POLICIES, constrain, dense, embed, layer_norm
from bert_jax.sharding import BATCH, EMBED, EMBED_OUT, HEADS, KV, LAYERS, LENGTH, MLP, VOCAB

# Fields BertConfig once had, in stored configs (bert_jax checkpoints,
# workdirs): dropped with a warning when read (`BertConfig.from_dict`).
REMOVED_FIELDS = {"dropout_mask_bits": "dropout is flax's nn.Dropout on every platform"}


@dataclasses.dataclass(frozen=True)
class BertConfig(BertFields):
    """Architecture and numerics of a BERT encoder; defaults are BERT-base's.

    The fields, their defaults and what each one means are `BertFields`
    (bert_jax/configs/model.py), which configs read without importing JAX;
    this class adds their checks and the values derived from them.
    """

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        choices = (
            ("hidden_act", ACTIVATIONS),
            ("attention_impl", attention.IMPLS),
            ("remat_policy", REMAT_POLICIES),
        )
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} {getattr(self, name)!r} is not one of {list(allowed)}")
        if self.attention_impl in attention.SPLASH and self.attention_dropout > 0:
            raise ValueError(
                f"attention_impl {self.attention_impl!r} has no attention dropout: set "
                f"attention_dropout=0 (it is {self.attention_dropout})"
            )
        names = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size")
        for name in (*names, "vocab_pad_multiple"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("dtype", "param_dtype"):
            jnp.dtype(getattr(self, name))  # raises TypeError on an unknown dtype name
        if self.embedding_size is not None and self.embedding_size <= 0:
            raise ValueError(f"embedding_size must be positive or None, got {self.embedding_size}")
        if self.position_offset < 0:
            raise ValueError(f"position_offset must be >= 0, got {self.position_offset}")

    @property
    def embedding_width(self) -> int:
        """Width of the embedding tables (and of the tied MLM decoder's input)."""
        return self.embedding_size or self.hidden_size

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def storage_dtype(self):
        return jnp.dtype(self.param_dtype)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the word-embedding table: vocab_size up to a multiple of vocab_pad_multiple."""
        m = self.vocab_pad_multiple
        return -(-self.vocab_size // m) * m

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BertConfig:
        """A stored config; REMOVED_FIELDS are dropped with a warning, unknown keys fail."""
        d = without_removed_fields(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown BertConfig keys {unknown}; known: {sorted(known)}")
        return cls(**d)


def without_removed_fields(d: dict[str, Any]) -> dict[str, Any]:
    """`d` (stored BertConfig fields) less REMOVED_FIELDS, each logged as a warning."""
    for key in sorted(REMOVED_FIELDS.keys() & d.keys()):
        why = REMOVED_FIELDS[key]
        logging.warning("ignoring removed BertConfig field %s=%r (%s)", key, d[key], why)
    return {k: v for k, v in d.items() if k not in REMOVED_FIELDS}


def config_for_size(size: str, **overrides: Any) -> BertConfig:
    """The BertConfig of a named size from SIZES, with field overrides."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; sizes: {list(SIZES)}")
    layers, hidden, heads = SIZES[size]
    base = dict(
        num_layers=layers, hidden_size=hidden, num_heads=heads, intermediate_size=4 * hidden
    )
    return BertConfig(**{**base, **overrides})


def positions(attention_mask, offset: int, position_ids=None, example_ids=None):
    """(B, L) position ids: 0 .. L-1 (offset 0, BERT), or RoBERTa's (fairseq
    `make_positions`): real tokens count from `offset`, padding takes offset - 1;
    given ones as they are, but shifted so in packed rows (`example_ids`)."""
    if position_ids is None:
        if not offset:
            return jnp.broadcast_to(jnp.arange(attention_mask.shape[-1]), attention_mask.shape)
        real = attention_mask.astype(jnp.int32)
        return jnp.cumsum(real, axis=-1) * real + (offset - 1)
    if example_ids is not None and offset:
        return jnp.where(example_ids > 0, position_ids + offset, offset - 1)
    return position_ids


class Embeddings(nn.Module):
    """Word + position (+ token-type) embeddings, LayerNorm, dropout (+ ALBERT's projection)."""

    config: BertConfig

    def setup(self):
        cfg = self.config
        self.word_embeddings = embed(cfg, cfg.padded_vocab_size, (VOCAB, EMBED))
        self.position_embeddings = embed(cfg, cfg.max_position_embeddings, (None, EMBED))
        if cfg.use_token_type_embeddings:  # DistilBERT has none
            self.token_type_embeddings = embed(cfg, cfg.type_vocab_size, (None, EMBED))
        self.layer_norm = layer_norm(cfg)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        if cfg.embedding_size is not None:
            # ALBERT: (E, H), the input side named like every other embed axis.
            self.projection = dense(cfg, cfg.hidden_size, (EMBED, EMBED_OUT), (EMBED_OUT,))

    def __call__(self, input_ids, token_type_ids, position_ids, deterministic: bool):
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
        if self.config.use_token_type_embeddings:
            x = x + self.token_type_embeddings(token_type_ids)
        x = self.dropout(self.layer_norm(x), deterministic=deterministic)  # (B, L, E)
        if self.config.embedding_size is not None:
            x = self.projection(x)  # (B, L, H)
        return constrain(x, (BATCH, LENGTH, EMBED))

    def attend(self, x):
        """Logits against the word-embedding table: the tied MLM decoder."""
        return self.word_embeddings.attend(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with output projection, residual and LayerNorm."""

    config: BertConfig
    deterministic: bool
    return_attention: bool = False

    @nn.compact
    def __call__(self, x, mask, segments):
        # x: (B, L, H); mask, segments: as attention.masks returns them.
        cfg = self.config
        shape = (cfg.num_heads, cfg.head_dim)
        q, k, v = (
            dense(cfg, shape, (EMBED, HEADS, KV), (HEADS, KV), name=n)(x)
            for n in ("query", "key", "value")
        )  # each (B, L, N, D)
        q, k, v = (constrain(t, (BATCH, LENGTH, HEADS, KV)) for t in (q, k, v))
        dropout = None
        if not self.deterministic and cfg.attention_dropout > 0:
            # BERT drops attention probabilities (attention_probs_dropout_prob).
            dropout = nn.Dropout(cfg.attention_dropout, deterministic=False)
        attend = functools.partial(attention.attend, impl=cfg.attention_impl, dropout=dropout)
        ctx, probs = attend(q, k, v, mask, segments, return_weights=self.return_attention)
        ctx = constrain(ctx, (BATCH, LENGTH, HEADS, KV))
        out = dense(
            cfg, cfg.hidden_size, (HEADS, KV, EMBED), (EMBED,), axis=(-2, -1), name="output"
        )(ctx)
        out = nn.Dropout(cfg.hidden_dropout)(out, deterministic=self.deterministic)
        out = layer_norm(cfg, name="layer_norm")(out + x)
        return constrain(out, (BATCH, LENGTH, EMBED)), probs


class Mlp(nn.Module):
    """Feed-forward block with residual and LayerNorm."""

    config: BertConfig
    deterministic: bool

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        h = dense(cfg, cfg.intermediate_size, (EMBED, MLP), (MLP,), name="intermediate")(x)
        h = ACTIVATIONS[cfg.hidden_act](h)
        h = constrain(h, (BATCH, LENGTH, MLP))
        h = dense(cfg, cfg.hidden_size, (MLP, EMBED), (EMBED,), name="output")(h)
        h = nn.Dropout(cfg.hidden_dropout)(h, deterministic=self.deterministic)
        return constrain(layer_norm(cfg, name="layer_norm")(h + x), (BATCH, LENGTH, EMBED))


class EncoderLayer(nn.Module):
    """One post-LN transformer block. Returns (hidden, extras) so it scans."""

    config: BertConfig
    deterministic: bool
    return_attention: bool = False
    return_hidden: bool = False

    @nn.compact
    def __call__(self, x, mask, segments):
        x, probs = SelfAttention(
            self.config, self.deterministic, self.return_attention, name="attention"
        )(x, mask, segments)
        x = Mlp(self.config, self.deterministic, name="mlp")(x)
        extras = {}
        if self.return_attention:
            extras["attention"] = probs
        if self.return_hidden:
            extras["hidden"] = x
        return x, extras


class Encoder(nn.Module):
    """The stack of layers, as a Python loop (`layer_i`) or under nn.scan (`layers`).

    ALBERT's cross-layer sharing (share_layers): one parameter set,
    `shared_layer`, for every layer; under scan it is broadcast to each step
    (not stacked), so the tree is the same with and without scan.
    """

    config: BertConfig

    @nn.compact
    def __call__(
        self, x, mask, segments, deterministic: bool, return_attention: bool, return_hidden: bool
    ):
        cfg = self.config
        layer_cls = EncoderLayer
        if cfg.remat_policy != "none":
            # prevent_cse is only needed outside scan (scan already blocks CSE).
            layer_cls = nn.remat(
                EncoderLayer,
                policy=REMAT_POLICIES[cfg.remat_policy],
                prevent_cse=not cfg.scan_layers,
            )
        kw = dict(
            deterministic=deterministic,
            return_attention=return_attention,
            return_hidden=return_hidden,
        )
        if cfg.scan_layers:
            if cfg.share_layers:
                params_kw = dict(variable_broadcast="params", split_rngs={"params": False})
            else:
                params_kw = dict(
                    variable_axes={"params": 0},
                    split_rngs={"params": True},
                    metadata_params={nn.PARTITION_NAME: LAYERS},
                )
            params_kw["split_rngs"]["dropout"] = True
            stack = nn.scan(layer_cls, in_axes=nn.broadcast, length=cfg.num_layers, **params_kw)
            name = "shared_layer" if cfg.share_layers else "layers"
            x, stacked = stack(cfg, name=name, **kw)(x, mask, segments)
            per_layer = [jax.tree.map(lambda t, i=i: t[i], stacked) for i in range(cfg.num_layers)]
        else:
            shared = layer_cls(cfg, name="shared_layer", **kw) if cfg.share_layers else None
            per_layer = []
            for i in range(cfg.num_layers):
                layer = shared if shared is not None else layer_cls(cfg, name=f"layer_{i}", **kw)
                x, extras = layer(x, mask, segments)
                per_layer.append(extras)
        return x, per_layer


class Pooler(nn.Module):
    """dense + tanh over the first ([CLS]) token, or over each packed example's [CLS]."""

    config: BertConfig

    @nn.compact
    def __call__(self, sequence_output, cls_positions=None):
        # cls_positions: (B, K) int, the [CLS] of each example packed in a row.
        cfg = self.config
        if cls_positions is None:
            cls = sequence_output[:, 0]  # (B, H)
        else:  # (B, K, H)
            cls = jnp.take_along_axis(sequence_output, cls_positions[..., None], axis=1)
        return jnp.tanh(
            dense(cfg, cfg.hidden_size, (EMBED, EMBED_OUT), (EMBED_OUT,), name="dense")(cls)
        )


class BertModel(nn.Module):
    """The BERT encoder and pooler.

    `__call__` returns a dict: `sequence_output` (B, L, H), `pooled_output`
    (B, H) (unless `use_pooler=False`) and, when asked, `attentions` (a tuple
    of num_layers arrays (B, heads, L, L), fp32) and `hidden_states` (a tuple
    of num_layers + 1 arrays (B, L, H): the embeddings output, then every
    layer's output).

    Packed rows (several examples per row, `bert_jax.data.pretraining.pack_records`): pass
    `example_ids` (B, L) (1.. per example, 0 on padding), `position_ids` that
    restart from 0 per example (shifted by `position_offset` here) and
    `cls_positions` (B, K). A token then attends only to its own example's
    tokens (no cross-contamination; padding attends to padding, so no row is
    fully masked) and `pooled_output` is (B, K, H), one per example.
    """

    config: BertConfig

    def setup(self):
        self.embeddings = Embeddings(self.config)
        self.encoder = Encoder(self.config)
        if self.config.use_pooler:
            self.pooler = Pooler(self.config)

    def __call__(
        self,
        input_ids,
        token_type_ids=None,
        attention_mask=None,
        position_ids=None,
        *,
        example_ids=None,
        cls_positions=None,
        deterministic: bool = True,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> dict[str, Any]:
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        position_ids = positions(
            attention_mask, self.config.position_offset, position_ids, example_ids
        )
        x = self.embeddings(input_ids, token_type_ids, position_ids, deterministic)
        x_embed = x
        mask, segments = attention.masks(attention_mask, example_ids)
        x, per_layer = self.encoder(
            x, mask, segments, deterministic, output_attentions, output_hidden_states
        )
        out = {"sequence_output": x}
        if self.config.use_pooler:
            out["pooled_output"] = self.pooler(x, cls_positions)
        if output_attentions:
            out["attentions"] = tuple(e["attention"] for e in per_layer)
        if output_hidden_states:
            out["hidden_states"] = (x_embed,) + tuple(e["hidden"] for e in per_layer)
        return out

    def attend(self, x):
        """x (..., E) -> logits (..., padded vocab) against the word embeddings."""
        return self.embeddings.attend(x)
