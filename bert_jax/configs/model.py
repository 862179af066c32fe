"""The BERT model as configs know it: the size table and `BertConfig`'s fields.

Light on purpose (no JAX, no Flax): `bert_jax.configs` builds every config's
`model` block from `BertFields` (`MODEL_FIELDS`), and `bert_jax.models.bert`
defines `BertConfig` on it (its checks and JAX dtypes on top), so a field is
written once, here.
"""

import dataclasses
import types

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


@dataclasses.dataclass(frozen=True)
class BertFields:
    """Architecture and numerics of a BERT encoder; defaults are BERT-base's.

    `bert_jax.models.bert.BertConfig` adds the checks (`__post_init__`) and
    the derived values (compute dtype, head size, padded vocabulary).
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
    # load and export with vocab_size rows (checkpoints/layout.py `pad_vocab`).
    vocab_pad_multiple: int = 1
    # Attention without returned weights or attention dropout (models/attention.py):
    # "xla", "cudnn", "splash" (TPU) or "splash_interpret". "": auto, resolved by
    # the trainer for its platform (tasks/model_setup.py resolve_attention_impl);
    # a model built with "" runs "xla".
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
    # RoBERTa (Liu et al. 2019; fairseq `make_positions`): real tokens take
    # positions position_offset, +1, ... and padding position_offset - 1 (the
    # padding index: RoBERTa's padding_idx 1 + 1 = 2, hence its 514 positions);
    # `positions`. 0: positions 0 .. L-1 whatever the padding (BERT).
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


# Model keys declared with their own defaults in every config (`common.base_config`).
NUMERICS = ("dtype", "param_dtype", "scan_layers", "remat_policy")


def _plain(t) -> type:
    """`int | None` -> int."""
    if isinstance(t, types.UnionType):
        (t,) = (a for a in t.__args__ if a is not type(None))
    return t


# BertFields a config may set on top of model.size (or init_checkpoint), with their types.
MODEL_FIELDS: dict[str, type] = {
    f.name: _plain(f.type) for f in dataclasses.fields(BertFields) if f.name not in NUMERICS
}
