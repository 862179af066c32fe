"""The one name table between bert_jax parameters and released BERT-family checkpoints.

Each entry ties a bert_jax parameter path to its name in the original Google
TF checkpoints (`modeling.py` / `run_pretraining.py` variable scopes; BERT
only) and in HF transformers' PyTorch state dicts (`BertForPreTraining`, and
the ALBERT, RoBERTa and DistilBERT classes: `FAMILIES`), with the layout
conversion between them. Import and export both read this table, so a
round trip is the identity by construction and tested as such.

Layouts: the "canonical" form is the TF one (dense kernels (in, out)).
HF `nn.Linear` weights are (out, in). bert_jax splits attention kernels per
head: query/key/value (H, heads, head_dim), output (heads, head_dim, H).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bert_jax.models.bert import BertConfig


@dataclasses.dataclass(frozen=True)
class Entry:
    path: tuple[str, ...]  # bert_jax param path in a task model's tree
    tf: str  # original TF variable name
    hf: str  # HF PyTorch state-dict key
    kind: str  # "embedding" | "kernel" | "bias" | "scale" | one of the attention kinds
    tf_transposed: bool = False  # TF stores it (out, in) (the NSP/classifier output_weights)


def _dense(path, tf, hf, kind="kernel", bias_kind="bias", tf_transposed=False):
    return [
        Entry(
            path + ("kernel",),
            f"{tf}/kernel" if not tf_transposed else f"{tf}/output_weights",
            f"{hf}.weight",
            kind,
            tf_transposed,
        ),
        Entry(
            path + ("bias",),
            f"{tf}/bias" if not tf_transposed else f"{tf}/output_bias",
            f"{hf}.bias",
            bias_kind,
        ),
    ]


def _layer_norm(path, tf, hf):
    return [
        Entry(path + ("scale",), f"{tf}/gamma", f"{hf}.weight", "scale"),
        Entry(path + ("bias",), f"{tf}/beta", f"{hf}.bias", "bias"),
    ]


# The BERT family in HF transformers: one encoder, other module names. Per
# family: the state-dict prefix of the encoder, and where each bert_jax module
# lives under it (`{i}` is the layer). TF names exist for BERT only.
FAMILIES = ("bert", "albert", "roberta", "distilbert")
_BERT_NAMES = dict(
    layer="encoder.layer.{i}",
    query="attention.self.query",
    key="attention.self.key",
    value="attention.self.value",
    attn_out="attention.output.dense",
    attn_ln="attention.output.LayerNorm",
    mlp_in="intermediate.dense",
    mlp_out="output.dense",
    mlp_ln="output.LayerNorm",
    pooler="pooler.dense",
)
_HF_ENCODER: dict[str, dict[str, str]] = {
    "bert": _BERT_NAMES,
    # Liu et al. 2019 keep BERT's modules (HF modeling_roberta.py).
    "roberta": _BERT_NAMES,
    # Lan et al. 2020 (HF modeling_albert.py): layers in groups; a shared
    # checkpoint has one group (num_hidden_groups=1), an unshared one a group
    # per layer; the embedding projection sits in the encoder.
    "albert": dict(
        layer="encoder.albert_layer_groups.{i}.albert_layers.0",
        query="attention.query",
        key="attention.key",
        value="attention.value",
        attn_out="attention.dense",
        attn_ln="attention.LayerNorm",
        mlp_in="ffn",
        mlp_out="ffn_output",
        mlp_ln="full_layer_layer_norm",
        pooler="pooler",
        projection="encoder.embedding_hidden_mapping_in",
    ),
    # Sanh et al. 2019 (HF modeling_distilbert.py): no token types, no pooler.
    "distilbert": dict(
        layer="transformer.layer.{i}",
        query="attention.q_lin",
        key="attention.k_lin",
        value="attention.v_lin",
        attn_out="attention.out_lin",
        attn_ln="sa_layer_norm",
        mlp_in="ffn.lin1",
        mlp_out="ffn.lin2",
        mlp_ln="output_layer_norm",
    ),
}
# HF model class prefix per family ("AlbertForMaskedLM", ...).
HF_CLASS_PREFIX = {
    "bert": "Bert",
    "albert": "Albert",
    "roberta": "Roberta",
    "distilbert": "DistilBert",
}


def family_of(config: BertConfig) -> str:
    """The HF family whose modules a BertConfig has: the options only it uses."""
    if config.embedding_size is not None:
        return "albert"
    if config.share_layers:
        raise ValueError(
            "share_layers without embedding_size matches no HF family (ALBERT has both)"
        )
    if not config.use_token_type_embeddings:
        return "distilbert"
    if config.position_offset:
        return "roberta"
    return "bert"


def encoder_entries(
    num_layers: int, family: str = "bert", *, share_layers: bool = False, pooler: bool = True
) -> list[Entry]:
    """Entries of the encoder (and pooler, when `pooler` and the family has one),
    under the `bert` prefix; `share_layers`: ALBERT's one shared layer."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")
    if share_layers and family != "albert":
        raise ValueError(f"{family} has no shared layers (only ALBERT)")
    n = _HF_ENCODER[family]
    hp = family
    tf_on = family == "bert"

    def tf(name):
        return name if tf_on else ""

    tables = ["word_embeddings", "position_embeddings"]
    if family != "distilbert":
        tables.append("token_type_embeddings")
    e = [
        Entry(
            ("bert", "embeddings", name, "embedding"),
            tf(f"bert/embeddings/{name}"),
            f"{hp}.embeddings.{name}.weight",
            "embedding",
        )
        for name in tables
    ]
    e += _layer_norm(
        ("bert", "embeddings", "layer_norm"),
        tf("bert/embeddings/LayerNorm"),
        f"{hp}.embeddings.LayerNorm",
    )
    if "projection" in n:
        e += _dense(("bert", "embeddings", "projection"), "", f"{hp}.{n['projection']}")
    ours_layers = (
        [("shared_layer", 0)] if share_layers else [(f"layer_{i}", i) for i in range(num_layers)]
    )
    for name_i, i in ours_layers:
        ours = ("bert", "encoder", name_i)
        t, hf = tf(f"bert/encoder/layer_{i}"), f"{hp}.{n['layer'].format(i=i)}"
        for name in ("query", "key", "value"):
            e += _dense(
                ours + ("attention", name),
                t and f"{t}/attention/self/{name}",
                f"{hf}.{n[name]}",
                "qkv_kernel",
                "qkv_bias",
            )
        e += _dense(
            ours + ("attention", "output"),
            t and f"{t}/attention/output/dense",
            f"{hf}.{n['attn_out']}",
            "attn_out_kernel",
        )
        e += _layer_norm(
            ours + ("attention", "layer_norm"),
            t and f"{t}/attention/output/LayerNorm",
            f"{hf}.{n['attn_ln']}",
        )
        e += _dense(
            ours + ("mlp", "intermediate"), t and f"{t}/intermediate/dense", f"{hf}.{n['mlp_in']}"
        )
        e += _dense(ours + ("mlp", "output"), t and f"{t}/output/dense", f"{hf}.{n['mlp_out']}")
        e += _layer_norm(
            ours + ("mlp", "layer_norm"), t and f"{t}/output/LayerNorm", f"{hf}.{n['mlp_ln']}"
        )
    if pooler and "pooler" in n:
        e += _dense(("bert", "pooler", "dense"), tf("bert/pooler/dense"), f"{hp}.{n['pooler']}")
    return e


def config_entries(config: BertConfig, family: str) -> list[Entry]:
    """`encoder_entries` for a config of `family`."""
    return encoder_entries(
        config.num_layers, family, share_layers=config.share_layers, pooler=config.use_pooler
    )


def _mlm(dense_hf: str, ln_hf: str, bias_hf: str, tf: bool = False) -> list[Entry]:
    return (
        _dense(("mlm", "transform"), "cls/predictions/transform/dense" if tf else "", dense_hf)
        + _layer_norm(
            ("mlm", "layer_norm"), "cls/predictions/transform/LayerNorm" if tf else "", ln_hf
        )
        + [Entry(("mlm", "bias"), "cls/predictions/output_bias" if tf else "", bias_hf, "bias")]
    )


def _linear(path, hf) -> list[Entry]:
    return [
        Entry(path + ("kernel",), "", f"{hf}.weight", "kernel"),
        Entry(path + ("bias",), "", f"{hf}.bias", "bias"),
    ]


def head_entries(family: str = "bert") -> dict[str, list[Entry]]:
    """Heads of `family`: name -> entries. Names: "mlm", "nsp" (ALBERT: SOP),
    "classifier" (one dense), "classifier_hidden" (a hidden dense, then the
    output one: RoBERTa's and DistilBERT's sequence classification; bert_jax
    path `classifier` too), "qa_outputs"."""
    if family == "bert":
        return {
            "mlm": _mlm(
                "cls.predictions.transform.dense",
                "cls.predictions.transform.LayerNorm",
                "cls.predictions.bias",
                tf=True,
            ),
            "nsp": _dense(
                ("nsp", "dense"), "cls/seq_relationship", "cls.seq_relationship", tf_transposed=True
            ),
            # run_classifier.py keeps its classifier at the top level of the graph.
            "classifier": [
                Entry(
                    ("classifier", "dense", "kernel"),
                    "output_weights",
                    "classifier.weight",
                    "kernel",
                    True,
                ),
                Entry(("classifier", "dense", "bias"), "output_bias", "classifier.bias", "bias"),
            ],
            "qa_outputs": _dense(
                ("qa_outputs", "dense"), "cls/squad", "qa_outputs", tf_transposed=True
            ),
        }
    heads = {
        "classifier": _linear(("classifier", "dense"), "classifier"),
        "qa_outputs": _linear(("qa_outputs", "dense"), "qa_outputs"),
    }
    if family == "albert":
        heads["mlm"] = _mlm("predictions.dense", "predictions.LayerNorm", "predictions.bias")
        heads["nsp"] = _linear(("nsp", "dense"), "sop_classifier.classifier")
    elif family == "roberta":
        heads["mlm"] = _mlm("lm_head.dense", "lm_head.layer_norm", "lm_head.bias")
        heads["classifier_hidden"] = _linear(
            ("classifier", "hidden"), "classifier.dense"
        ) + _linear(("classifier", "dense"), "classifier.out_proj")
    elif family == "distilbert":
        heads["mlm"] = _mlm("vocab_transform", "vocab_layer_norm", "vocab_projector.bias")
        heads["classifier_hidden"] = _linear(("classifier", "hidden"), "pre_classifier") + _linear(
            ("classifier", "dense"), "classifier"
        )
    else:
        raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")
    return heads


# Heads: name -> entries. Keys are the head names bert_jax models use.
HEAD_ENTRIES: dict[str, list[Entry]] = head_entries("bert")


def head_names(tree: dict) -> list[str]:
    """The head_entries keys of a task model's params tree (`classifier` with a
    `hidden` dense is "classifier_hidden")."""
    out = []
    for h in sorted(set(tree) - {"bert"}):
        out.append("classifier_hidden" if h == "classifier" and "hidden" in tree[h] else h)
    return out


# Present in released checkpoints but not parameters of ours: HF buffers and
# tied copies (of every family), TF optimizer slots and counters.
HF_IGNORED = (
    "bert.embeddings.position_ids",
    "cls.predictions.decoder.weight",
    "cls.predictions.decoder.bias",
    "albert.embeddings.position_ids",
    "predictions.decoder.weight",
    "predictions.decoder.bias",
    "roberta.embeddings.position_ids",
    "roberta.embeddings.token_type_ids",
    "lm_head.decoder.weight",
    "lm_head.decoder.bias",
    "distilbert.embeddings.position_ids",
    "vocab_projector.weight",
)
TF_IGNORED_SUFFIXES = ("/adam_m", "/adam_v", "global_step", "/Momentum", "/LAMB")


def to_ours(entry: Entry, array: np.ndarray, source: str, config: BertConfig) -> np.ndarray:
    """A tensor in `source` ("tf" or "hf") layout -> bert_jax layout."""
    a = np.asarray(array)
    if source == "hf" and entry.kind in ("kernel", "qkv_kernel", "attn_out_kernel"):
        a = a.T
    if source == "tf" and entry.tf_transposed:
        a = a.T
    n, d = config.num_heads, config.head_dim
    if entry.kind == "qkv_kernel":
        a = a.reshape(a.shape[0], n, d)
    elif entry.kind == "qkv_bias":
        a = a.reshape(n, d)
    elif entry.kind == "attn_out_kernel":
        a = a.reshape(n, d, a.shape[-1])
    return a


def from_ours(entry: Entry, array: np.ndarray, target: str) -> np.ndarray:
    """The inverse of `to_ours`: bert_jax layout -> `target` ("tf" or "hf")."""
    a = np.asarray(array)
    if entry.kind == "qkv_kernel":
        a = a.reshape(a.shape[0], -1)
    elif entry.kind == "qkv_bias":
        a = a.reshape(-1)
    elif entry.kind == "attn_out_kernel":
        a = a.reshape(-1, a.shape[-1])
    if target == "hf" and entry.kind in ("kernel", "qkv_kernel", "attn_out_kernel"):
        a = a.T
    if target == "tf" and entry.tf_transposed:
        a = a.T
    return np.ascontiguousarray(a)
