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
the rules table in `bert_jax/sharding.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.models.dropout import MASK_BITS, Dropout
from bert_jax.sharding import (
    BATCH,
    EMBED,
    EMBED_OUT,
    HEADS,
    KV,
    LAYERS,
    LENGTH,
    MLP,
    VOCAB,
    traced_platform,
)

# name: (layers, hidden, heads). Compact sizes from Turc et al. 2019
# ("Well-Read Students Learn Better", Table 1 / the google-research/bert
# README grid); base and large from the BERT paper, section 3. The
# feed-forward size is always 4 x hidden.
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}

ACTIVATIONS = {
    # Exact erf GELU: HF "gelu".
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    # tanh approximation: the original TF BERT `gelu` and HF "gelu_new".
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
}

ATTENTION_IMPLS = ("", "xla", "cudnn", "splash")

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Architecture and numerics of a BERT encoder.

    Defaults are BERT-base (the released `bert_config.json`).
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"  # a key of ACTIVATIONS
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12  # original modeling.py layer_norm
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    initializer_range: float = 0.02
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"  # storage dtype
    scan_layers: bool = False  # stack layers under nn.scan (faster compiles)
    remat_policy: str = "none"  # a key of REMAT_POLICIES
    # The word-embedding table (and the tied MLM decoder) get rows up to a
    # multiple of this, so the MLM matmul tiles evenly (128: Megatron-LM's
    # make-vocab-size-divisible-by) and the table shards over 4 or 8 devices.
    # Padding rows are never looked up and their logits are dropped; checkpoints
    # load and export with vocab_size rows (`pad_vocab`).
    vocab_pad_multiple: int = 1
    # The fused attention path (taken when attention weights are not returned and
    # attention dropout is off): jax.nn.dot_product_attention with "" (JAX
    # chooses), "xla" or "cudnn" (GPU, bf16/fp16, head dim a multiple of 8); or
    # "splash", the Pallas TPU kernel (models/splash.py; needs attention_dropout=0
    # and a length that is a multiple of 128).
    attention_impl: str = ""
    # ALBERT (Lan et al. 2020, section 3.1, "factorized embedding
    # parameterization"): the word/position/type tables and their LayerNorm are
    # embedding_size wide and a dense projects them to hidden_size (HF
    # `embedding_hidden_mapping_in`); the tied MLM decoder works at that width.
    # None: hidden_size wide, no projection (BERT). ALBERT has the projection
    # even when embedding_size == hidden_size.
    embedding_size: int | None = None
    # ALBERT (Lan et al. 2020, section 3.1, "cross-layer parameter sharing"):
    # one layer's parameters (`encoder/shared_layer`) applied num_layers times,
    # in the loop and under scan_layers alike.
    share_layers: bool = False
    # RoBERTa (Liu et al. 2019; fairseq `make_positions`): without explicit
    # position_ids, real tokens take positions position_offset, +1, ... (the
    # count of real tokens so far, from attention_mask) and padding takes
    # position_offset - 1 (the padding index): RoBERTa's padding_idx 1 + 1 = 2,
    # hence its 514 positions. Explicit position_ids are used as given, except
    # in packed rows (`example_ids`), whose positions count from 0 in every
    # family's data and are shifted here. 0: positions 0 .. L-1 whatever the
    # padding (BERT).
    position_offset: int = 0
    # DistilBERT (Sanh et al. 2019, section 3: "token-type embeddings and the
    # pooler are removed"): no token-type table (token_type_ids are ignored).
    use_token_type_embeddings: bool = True
    # The tanh pooler over [CLS] (BERT, ALBERT); False: no `pooled_output`
    # (DistilBERT; RoBERTa's task models, which classify from <s> in their head).
    use_pooler: bool = True
    # Dropout before the task heads' dense layers (`heads.Classifier`); None:
    # hidden_dropout. HF's classifier_dropout (BERT, RoBERTa),
    # classifier_dropout_prob (ALBERT, 0.1) and seq_classif_dropout
    # (DistilBERT, 0.2: Sanh et al. 2019's released fine-tuning setting).
    classifier_dropout: float | None = None
    # 16: dropout masks from 16-bit uniforms, four per Threefry hash
    # (models/dropout.py: the same rates, a quarter of the random bits; a small
    # pretraining step on CPU 13.9% faster, docs/performance.md "dropout-masks").
    # 32: flax's nn.Dropout, bit for bit (the masks of runs made before it). 0:
    # 16 on CPU, 32 elsewhere (the TPU compiler's estimate for base on v5p-8 was
    # 2.6 points of MFU lower with 16; dropout.mask_bits_for).
    dropout_mask_bits: int = 0

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(
                f"attention_impl {self.attention_impl!r} is not one of "
                + ", ".join(repr(a) for a in ATTENTION_IMPLS)
            )
        if self.attention_impl == "splash" and self.attention_dropout > 0:
            raise ValueError(
                f"attention_impl 'splash' has no attention dropout: set attention_dropout=0 "
                f"(it is {self.attention_dropout})"
            )
        if self.dropout_mask_bits not in MASK_BITS:
            raise ValueError(
                f"dropout_mask_bits must be one of {MASK_BITS}, got {self.dropout_mask_bits}"
            )
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(
                f"remat_policy {self.remat_policy!r} is not one of {sorted(REMAT_POLICIES)}"
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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown BertConfig keys {unknown}; known: {sorted(known)}")
        return cls(**d)


def config_for_size(size: str, **overrides: Any) -> BertConfig:
    """The BertConfig of a named size from SIZES, with field overrides."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; sizes: {list(SIZES)}")
    layers, hidden, heads = SIZES[size]
    base = dict(
        num_layers=layers, hidden_size=hidden, num_heads=heads, intermediate_size=4 * hidden
    )
    return BertConfig(**{**base, **overrides})


def bert_init(stddev: float):
    """Truncated normal at +-2 stddev, unscaled, as TF's truncated_normal_initializer.

    The original `modeling.py` (`create_initializer`) initialises every kernel
    and embedding this way with initializer_range 0.02.
    """

    def init(key, shape, dtype=jnp.float32):
        return stddev * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)

    return init


class _Partitioned(nn.LogicallyPartitioned):
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


def _param(init, names):
    def boxed(*args, **kwargs):
        return _Partitioned(init(*args, **kwargs), names)

    return boxed


def _constrain(x, names):
    return nn.with_logical_constraint(x, names)


class Embeddings(nn.Module):
    """Word + position (+ token-type) embeddings, LayerNorm, dropout (+ ALBERT's projection)."""

    config: BertConfig

    def setup(self):
        cfg = self.config
        init = bert_init(cfg.initializer_range)
        kw = dict(
            features=cfg.embedding_width, dtype=cfg.compute_dtype, param_dtype=cfg.storage_dtype
        )
        self.word_embeddings = nn.Embed(
            cfg.padded_vocab_size, embedding_init=_param(init, (VOCAB, EMBED)), **kw
        )
        self.position_embeddings = nn.Embed(
            cfg.max_position_embeddings, embedding_init=_param(init, (None, EMBED)), **kw
        )
        if cfg.use_token_type_embeddings:
            self.token_type_embeddings = nn.Embed(
                cfg.type_vocab_size, embedding_init=_param(init, (None, EMBED)), **kw
            )
        self.layer_norm = _layer_norm(cfg)
        self.dropout = Dropout(cfg.hidden_dropout, cfg.dropout_mask_bits)
        if cfg.embedding_size is not None:
            # ALBERT: (E, H), the input side named like every other embed axis.
            self.projection = _dense(cfg, cfg.hidden_size, (EMBED, EMBED_OUT), (EMBED_OUT,))

    def __call__(self, input_ids, token_type_ids, position_ids, deterministic: bool):
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
        if self.config.use_token_type_embeddings:
            x = x + self.token_type_embeddings(token_type_ids)
        x = self.dropout(self.layer_norm(x), deterministic=deterministic)  # (B, L, E)
        if self.config.embedding_size is not None:
            x = self.projection(x)  # (B, L, H)
        return _constrain(x, (BATCH, LENGTH, EMBED))

    def attend(self, x):
        """Logits against the word-embedding table: the tied MLM decoder."""
        return self.word_embeddings.attend(x)

    def attend_vocab_major(self, rows):
        """`attend` with the vocabulary first: rows (N, E) -> logits (V, N)."""
        emb = self.word_embeddings
        rows, table = nn.dtypes.promote_dtype(rows, emb.embedding, dtype=emb.dtype)
        return jnp.dot(table, rows.T)


def _layer_norm(cfg: BertConfig, name: str | None = None) -> nn.LayerNorm:
    # Statistics are reduced in fp32 even for bf16 compute
    # (force_float32_reductions, flax's default, kept explicit here).
    return nn.LayerNorm(
        epsilon=cfg.layer_norm_eps,
        dtype=cfg.compute_dtype,
        param_dtype=cfg.storage_dtype,
        scale_init=_param(nn.initializers.ones, (EMBED,)),
        bias_init=_param(nn.initializers.zeros, (EMBED,)),
        force_float32_reductions=True,
        name=name,
    )


class _RowsDense(nn.DenseGeneral):
    """DenseGeneral on the input's rows, on XLA:CPU: the leading (batch, length)
    dims flattened to one.

    The same parameters and math. XLA:CPU lowers the weight gradient of a
    dense over (B, L, H) activations, a dot contracting two dims, by first
    writing the (B*L, F) output gradient transposed; over (B*L, H) rows it
    reads the operands as they are (a small pretraining step on the 2-core
    CPU: docs/performance.md, "dense-rows"). Elsewhere the dense is left as
    it was: the TPU compiler's estimate for base on v5p-8 was 18% slower with
    the rows (27.7 to 32.7 ms a step, commits 00d0ddc and 078b1ba).
    """

    def __call__(self, x):
        n_in = len(self.axis) if isinstance(self.axis, tuple) else 1
        if x.ndim <= n_in + 1 or traced_platform() != "cpu":
            return super().__call__(x)
        lead = x.shape[:-n_in]
        y = super().__call__(x.reshape((-1, *x.shape[-n_in:])))
        return y.reshape(*lead, *y.shape[1:])


def _dense(cfg: BertConfig, features, kernel_names, bias_names, axis=-1, name=None):
    return _RowsDense(
        features=features,
        axis=axis,
        dtype=cfg.compute_dtype,
        param_dtype=cfg.storage_dtype,
        kernel_init=_param(bert_init(cfg.initializer_range), kernel_names),
        bias_init=_param(nn.initializers.zeros, bias_names),
        name=name,
    )


def _splash(q, k, v, segments):
    """The Pallas splash kernel on TPU; its interpreter on CPU (tests)."""
    from bert_jax.models import splash  # Pallas is imported only when asked for

    platform = traced_platform()
    if platform not in ("tpu", "cpu"):
        raise ValueError(
            f"attention_impl 'splash' is a TPU kernel; on {platform} use 'cudnn' or 'xla'"
        )
    return splash.splash_attention(
        q, k, v, segments, batch_axis=BATCH, heads_axis=HEADS, interpret=platform != "tpu"
    )


class SelfAttention(nn.Module):
    """Multi-head self-attention with output projection, residual and LayerNorm."""

    config: BertConfig
    deterministic: bool
    return_attention: bool = False

    @nn.compact
    def __call__(self, x, mask, segments):
        # x: (B, L, H); mask: (B, L) bool, True where the key is a real token, or
        # (B, L, L) bool, [b, q, k] True where query q may attend to key k (packing);
        # segments (B, L) int: the same as ids (1 real, 0 padding; or example ids),
        # what the splash kernel takes instead of a mask.
        cfg = self.config
        shape = (cfg.num_heads, cfg.head_dim)
        q, k, v = (
            _dense(cfg, shape, (EMBED, HEADS, KV), (HEADS, KV), name=n)(x)
            for n in ("query", "key", "value")
        )  # each (B, L, N, D)
        q, k, v = (_constrain(t, (BATCH, LENGTH, HEADS, KV)) for t in (q, k, v))
        # (B, 1, 1 or L, L): broadcast over heads (and over queries for a key mask).
        key_mask = mask[:, None, None, :] if mask.ndim == 2 else mask[:, None]
        use_dropout = not self.deterministic and cfg.attention_dropout > 0
        probs = None
        if self.return_attention or use_dropout:
            # Explicit path: the only one that exposes the probabilities, and
            # BERT applies dropout to them (attention_probs_dropout_prob).
            logits = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=jnp.float32)
            logits = logits / math.sqrt(cfg.head_dim)
            logits = jnp.where(key_mask, logits, jnp.finfo(jnp.float32).min)
            probs = jax.nn.softmax(logits, axis=-1)  # fp32, (B, N, L, L)
            dropped = Dropout(cfg.attention_dropout, cfg.dropout_mask_bits)(
                probs, deterministic=self.deterministic
            )
            ctx = jnp.einsum("bnqk,bknd->bqnd", dropped.astype(v.dtype), v)
        elif cfg.attention_impl == "splash":
            ctx = _splash(q, k, v, segments)
        else:
            # Fused path (cuDNN flash attention on GPU where it applies); its
            # logits and softmax are fp32 for bf16 inputs as well.
            ctx = jax.nn.dot_product_attention(
                q, k, v, mask=key_mask, implementation=cfg.attention_impl or None
            )
        ctx = _constrain(ctx, (BATCH, LENGTH, HEADS, KV))
        out = _dense(
            cfg, cfg.hidden_size, (HEADS, KV, EMBED), (EMBED,), axis=(-2, -1), name="output"
        )(ctx)
        out = Dropout(cfg.hidden_dropout, cfg.dropout_mask_bits)(
            out, deterministic=self.deterministic
        )
        out = _layer_norm(cfg, name="layer_norm")(out + x)
        return _constrain(out, (BATCH, LENGTH, EMBED)), probs


class Mlp(nn.Module):
    """Feed-forward block with residual and LayerNorm."""

    config: BertConfig
    deterministic: bool

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        h = _dense(cfg, cfg.intermediate_size, (EMBED, MLP), (MLP,), name="intermediate")(x)
        h = ACTIVATIONS[cfg.hidden_act](h)
        h = _constrain(h, (BATCH, LENGTH, MLP))
        h = _dense(cfg, cfg.hidden_size, (MLP, EMBED), (EMBED,), name="output")(h)
        h = Dropout(cfg.hidden_dropout, cfg.dropout_mask_bits)(h, deterministic=self.deterministic)
        return _constrain(_layer_norm(cfg, name="layer_norm")(h + x), (BATCH, LENGTH, EMBED))


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
    """The stack of layers, as a Python loop (`layer_i`) or under nn.scan (`layers`)."""

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
        # ALBERT's cross-layer sharing (share_layers): one parameter set,
        # `shared_layer`, for every layer; under scan it is broadcast to each
        # step (not stacked), so the tree is the same with and without scan.
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
            _dense(cfg, cfg.hidden_size, (EMBED, EMBED_OUT), (EMBED_OUT,), name="dense")(cls)
        )


class BertModel(nn.Module):
    """The BERT encoder and pooler.

    `__call__` returns a dict: `sequence_output` (B, L, H), `pooled_output`
    (B, H) (unless `use_pooler=False`) and, when asked, `attentions` (a tuple of num_layers arrays
    (B, heads, L, L), fp32) and `hidden_states` (a tuple of num_layers + 1
    arrays (B, L, H): the embeddings output, then every layer's output).

    Packed rows (several examples per row, `bert_jax.data.pretraining.pack_records`): pass
    `example_ids` (B, L) (1.. per example, 0 on padding), `position_ids` that
    restart from 0 per example (shifted by `position_offset` here) and
    `cls_positions` (B, K). A token then attends only
    to its own example's tokens (no cross-contamination; padding attends to
    padding, so no row is fully masked) and `pooled_output` is (B, K, H), one
    per example.
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
        if position_ids is None and self.config.position_offset:
            # RoBERTa (fairseq make_positions): count real tokens only; padding
            # gets the padding index position_offset - 1.
            real = attention_mask.astype(jnp.int32)
            position_ids = jnp.cumsum(real, axis=-1) * real + (self.config.position_offset - 1)
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
        elif example_ids is not None and self.config.position_offset:
            # Packed rows: the packers count each example's positions from 0;
            # padding slots take the padding index, as unpacked.
            real = example_ids > 0
            offset = self.config.position_offset
            position_ids = jnp.where(real, position_ids + offset, offset - 1)
        x = self.embeddings(input_ids, token_type_ids, position_ids, deterministic)
        x_embed = x
        if example_ids is None:
            mask = attention_mask.astype(bool)  # (B, L): keys
            segments = attention_mask
        else:
            mask = example_ids[:, :, None] == example_ids[:, None, :]  # (B, L, L)
            segments = example_ids
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
        """x (..., H) -> logits (..., vocab) against the word embeddings."""
        return self.embeddings.attend(x)

    def attend_vocab_major(self, rows):
        """rows (N, H) -> logits (vocab, N) against the word embeddings."""
        return self.embeddings.attend_vocab_major(rows)


# Parameter paths with a vocabulary-sized first dimension (in a task model's tree).
VOCAB_PARAMS = (("bert", "embeddings", "word_embeddings", "embedding"), ("mlm", "bias"))


def pad_vocab(params: dict, rows: int) -> dict:
    """`params` (a task model's tree, or a bare BertModel's) with `rows` vocabulary rows:
    zero rows appended, or trailing rows dropped (callers drop only padding rows)."""
    bare = "embeddings" in params
    tree = {"bert": params} if bare else params
    for path in VOCAB_PARAMS:
        leaf = _get(tree, path)
        if leaf is not None and leaf.shape[0] != rows:
            tree = _set(tree, path, _with_rows(leaf, rows))
    return tree["bert"] if bare else tree


def _with_rows(leaf, rows: int):
    n = leaf.shape[0]
    if n > rows:
        return leaf[:rows]
    pad = [(0, rows - n)] + [(0, 0)] * (leaf.ndim - 1)
    return np.pad(leaf, pad) if isinstance(leaf, np.ndarray) else jnp.pad(leaf, pad)


def _get(tree: dict, path: tuple[str, ...]):
    for k in path:
        if not isinstance(tree, dict) or k not in tree:
            return None
        tree = tree[k]
    return tree


def _set(tree: dict, path: tuple[str, ...], value) -> dict:
    if len(path) == 1:
        return {**tree, path[0]: value}
    return {**tree, path[0]: _set(tree[path[0]], path[1:], value)}


def stack_layers(encoder_params: dict, num_layers: int) -> dict:
    """`{layer_0: t, layer_1: t, ...}` -> `{layers: stacked t}` (the nn.scan layout)."""
    layers = [encoder_params[f"layer_{i}"] for i in range(num_layers)]
    return {"layers": jax.tree.map(lambda *xs: jnp.stack(xs), *layers)}


def unstack_layers(encoder_params: dict, num_layers: int) -> dict:
    """`{layers: stacked t}` -> `{layer_0: t, ...}` (the loop layout)."""
    stacked = encoder_params["layers"]
    return {f"layer_{i}": jax.tree.map(lambda t, i=i: t[i], stacked) for i in range(num_layers)}
