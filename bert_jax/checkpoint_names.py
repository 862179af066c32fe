"""The one name table between bert_jax parameters and released BERT checkpoints.

Each entry ties a bert_jax parameter path to its name in the original Google
TF checkpoints (`modeling.py` / `run_pretraining.py` variable scopes) and in
HF transformers' PyTorch `BertForPreTraining` state dict, with the layout
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


def encoder_entries(num_layers: int) -> list[Entry]:
    """Entries of the encoder and pooler, under the `bert` prefix."""
    e = [
        Entry(
            ("bert", "embeddings", name, "embedding"),
            f"bert/embeddings/{name}",
            f"bert.embeddings.{name}.weight",
            "embedding",
        )
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings")
    ]
    e += _layer_norm(
        ("bert", "embeddings", "layer_norm"),
        "bert/embeddings/LayerNorm",
        "bert.embeddings.LayerNorm",
    )
    for i in range(num_layers):
        ours = ("bert", "encoder", f"layer_{i}")
        tf, hf = f"bert/encoder/layer_{i}", f"bert.encoder.layer.{i}"
        for name in ("query", "key", "value"):
            e += _dense(
                ours + ("attention", name),
                f"{tf}/attention/self/{name}",
                f"{hf}.attention.self.{name}",
                "qkv_kernel",
                "qkv_bias",
            )
        e += _dense(
            ours + ("attention", "output"),
            f"{tf}/attention/output/dense",
            f"{hf}.attention.output.dense",
            "attn_out_kernel",
        )
        e += _layer_norm(
            ours + ("attention", "layer_norm"),
            f"{tf}/attention/output/LayerNorm",
            f"{hf}.attention.output.LayerNorm",
        )
        e += _dense(
            ours + ("mlp", "intermediate"), f"{tf}/intermediate/dense", f"{hf}.intermediate.dense"
        )
        e += _dense(ours + ("mlp", "output"), f"{tf}/output/dense", f"{hf}.output.dense")
        e += _layer_norm(
            ours + ("mlp", "layer_norm"), f"{tf}/output/LayerNorm", f"{hf}.output.LayerNorm"
        )
    e += _dense(("bert", "pooler", "dense"), "bert/pooler/dense", "bert.pooler.dense")
    return e


# Heads: name -> entries. Keys are the head names bert_jax models use.
HEAD_ENTRIES: dict[str, list[Entry]] = {
    "mlm": _dense(
        ("mlm", "transform"), "cls/predictions/transform/dense", "cls.predictions.transform.dense"
    )
    + _layer_norm(
        ("mlm", "layer_norm"),
        "cls/predictions/transform/LayerNorm",
        "cls.predictions.transform.LayerNorm",
    )
    + [Entry(("mlm", "bias"), "cls/predictions/output_bias", "cls.predictions.bias", "bias")],
    "nsp": _dense(
        ("nsp", "dense"), "cls/seq_relationship", "cls.seq_relationship", tf_transposed=True
    ),
    # run_classifier.py keeps its classifier at the top level of the graph.
    "classifier": [
        Entry(
            ("classifier", "dense", "kernel"), "output_weights", "classifier.weight", "kernel", True
        ),
        Entry(("classifier", "dense", "bias"), "output_bias", "classifier.bias", "bias"),
    ],
    "qa_outputs": _dense(("qa_outputs", "dense"), "cls/squad", "qa_outputs", tf_transposed=True),
}

# Present in released checkpoints but not parameters of ours: HF buffers and
# tied copies, TF optimizer slots and counters.
HF_IGNORED = (
    "bert.embeddings.position_ids",
    "cls.predictions.decoder.weight",
    "cls.predictions.decoder.bias",
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
