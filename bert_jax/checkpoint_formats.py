"""Reading checkpoints in every format bert_jax knows, as bert_jax parameter trees.

Formats, detected from a directory's files (`detect_format`):
  * HF transformers: `config.json` + `model.safetensors` (or a sharded
    `model.safetensors.index.json`, or `pytorch_model.bin`, read with
    `torch.load(weights_only=True)`: never unpickling arbitrary objects);
  * original Google BERT release: `bert_config.json` + `bert_model.ckpt.*`
    (read with `tf.train.load_checkpoint`);
  * bert_jax: `bert_jax.json` + an orbax `params/` tree (`pretrained.save`);
  * a bert_jax training workdir (`task.json` + `checkpoints/`): the
    parameters of its newest complete checkpoint.

Directories may be local or remote (`gs://`, through etils.epath). Every
tensor is converted and checked against the model's expected shapes before
anything is returned, so a bad checkpoint fails whole with one message.
`bert_jax.pretrained` is the public API over these readers.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from bert_jax import checkpoint_names as names
from bert_jax import sharding
from bert_jax.models.bert import (
    BertConfig,
    BertModel,
    pad_vocab,
    stack_layers,
    unstack_layers,
)
from bert_jax.models.heads import (
    BertForMultipleChoice,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)

BERT_JAX_FILE = "bert_jax.json"
MODEL_CLASSES = {
    cls.__name__: cls
    for cls in (
        BertModel,
        BertForPreTraining,
        BertForSequenceClassification,
        BertForTokenClassification,
        BertForQuestionAnswering,
        BertForMultipleChoice,
    )
}
# HF hidden_act -> ours. HF "gelu" is the exact erf form.
_HF_ACT = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "relu": "relu",
}
# The original modeling.py `gelu` is the tanh approximation.
_TF_ACT = {"gelu": "gelu_tanh", "relu": "relu"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names file and problem."""


# ----------------------------------------------------------------------------
# Format detection and readers.
# ----------------------------------------------------------------------------


def checkpoint_dir(path: str | os.PathLike) -> epath.Path:
    """A checkpoint directory, local (made absolute, as orbax needs) or remote (gs://)."""
    text = os.fspath(path)
    return epath.Path(text if "://" in text else os.path.abspath(os.path.expanduser(text)))


def detect_format(path: str | os.PathLike) -> str:
    """'hf', 'tf', 'bert_jax' or 'workdir' for a checkpoint directory (local or gs://)."""
    p = checkpoint_dir(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint path {p} does not exist")
    if not p.is_dir():
        raise CheckpointError(f"{p}: expected a checkpoint directory, got a file")
    if (p / BERT_JAX_FILE).exists():
        return "bert_jax"
    if (p / "task.json").exists() or (
        (p / "config.json").exists() and "task" in read_json(p / "config.json")
    ):
        return "workdir"
    if (p / "bert_config.json").exists():
        return "tf"
    if (p / "config.json").exists():
        return "hf"
    raise CheckpointError(
        f"{p}: no {BERT_JAX_FILE}, bert_config.json (original TF BERT) or config.json (HF) found"
    )


def read_json(path: epath.Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e


def config_from_json(d: dict[str, Any], act_map: dict[str, str], path: epath.Path) -> BertConfig:
    if d.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(
            f"{path}: position_embedding_type {d['position_embedding_type']!r}"
            " is not supported (only 'absolute')"
        )
    act = d.get("hidden_act", "gelu")
    if act not in act_map:
        raise CheckpointError(f"{path}: hidden_act {act!r} not one of {sorted(act_map)}")
    try:
        return BertConfig(
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            num_layers=d["num_hidden_layers"],
            num_heads=d["num_attention_heads"],
            intermediate_size=d["intermediate_size"],
            hidden_act=act_map[act],
            max_position_embeddings=d.get("max_position_embeddings", 512),
            type_vocab_size=d.get("type_vocab_size", 2),
            layer_norm_eps=d.get("layer_norm_eps", 1e-12),
            hidden_dropout=d.get("hidden_dropout_prob", 0.1),
            attention_dropout=d.get("attention_probs_dropout_prob", 0.1),
            initializer_range=d.get("initializer_range", 0.02),
        )
    except KeyError as e:
        raise CheckpointError(f"{path}: missing config key {e.args[0]!r}") from e


def _load_safetensors(path: epath.Path) -> dict[str, np.ndarray]:
    from safetensors import numpy as st

    # Local files are memory-mapped; remote ones (gs://) are read whole.
    return st.load(path.read_bytes()) if "://" in str(path) else st.load_file(str(path))


def _read_hf_tensors(d: epath.Path) -> tuple[dict[str, np.ndarray], epath.Path]:
    load_file = _load_safetensors
    single, index = d / "model.safetensors", d / "model.safetensors.index.json"
    if single.exists():
        return load_file(single), single
    if index.exists():
        out: dict[str, np.ndarray] = {}
        for shard in sorted(set(read_json(index)["weight_map"].values())):
            out.update(load_file(d / shard))
        return out, index
    binary = d / "pytorch_model.bin"
    if binary.exists():
        try:
            import torch
        except ImportError as e:
            raise CheckpointError(
                f"{binary}: reading .bin needs torch; or convert to safetensors"
            ) from e
        try:
            sd = torch.load(io.BytesIO(binary.read_bytes()), map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises UnpicklingError and others
            raise CheckpointError(f"{binary}: not a weights-only PyTorch state dict ({e})") from e
        return {k: v.float().numpy() for k, v in sd.items()}, binary
    raise FileNotFoundError(
        f"{d}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin"
    )


def _normalize_hf_key(k: str) -> str:
    # Older checkpoints use gamma/beta for LayerNorm, and BertModel-only
    # checkpoints (like all-MiniLM-L6-v2) drop the "bert." prefix.
    k = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    if k.startswith(("embeddings.", "encoder.", "pooler.")):
        k = "bert." + k
    return k


def _tf_checkpoint_prefix(d: epath.Path) -> str:
    import tensorflow as tf

    if (d / "bert_model.ckpt.index").exists():
        return str(d / "bert_model.ckpt")
    latest = tf.train.latest_checkpoint(str(d))
    if latest is None:
        indexes = sorted(d.glob("*.ckpt*.index"))
        if not indexes:
            raise FileNotFoundError(f"{d}: no TF checkpoint (bert_model.ckpt.index) found")
        latest = str(indexes[0])[: -len(".index")]
    return latest


# ----------------------------------------------------------------------------
# Conversion.
# ----------------------------------------------------------------------------


def _model_for_heads(config: BertConfig, heads: set[str], shapes: dict, architectures: list[str]):
    """Pick the task model for the heads present in a checkpoint."""
    if "mlm" in heads:
        return BertForPreTraining(config, nsp="nsp" in heads), {"mlm", "nsp"} & heads
    if "qa_outputs" in heads:
        return BertForQuestionAnswering(config), {"qa_outputs"}
    if "classifier" in heads:
        num = shapes["classifier"]
        arch = architectures[0] if architectures else "BertForSequenceClassification"
        if arch == "BertForTokenClassification":
            return BertForTokenClassification(config, num_labels=num), {"classifier"}
        if arch == "BertForMultipleChoice":
            return BertForMultipleChoice(config), {"classifier"}
        return BertForSequenceClassification(config, num_labels=num), {"classifier"}
    return BertModel(config), set()


def expected_shapes(model: nn.Module) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flat {path: shape} of the model's parameters, without computing them."""
    ids = jnp.zeros(
        (1, 8) if not isinstance(model, BertForMultipleChoice) else (1, 2, 8), jnp.int32
    )
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), ids))
    params = sharding.unboxed(shapes["params"])
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {tuple(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


def _assemble(
    tensors: dict[str, np.ndarray],
    source: str,
    config: BertConfig,
    file: epath.Path,
    architectures: list[str],
):
    """Named tensors -> (model, params) with every name and shape checked."""
    key = "tf" if source == "tf" else "hf"
    encoder = names.encoder_entries(config.num_layers)
    present_heads = {
        h
        for h, entries in names.HEAD_ENTRIES.items()
        if all(getattr(e, key) in tensors for e in entries)
    }
    head_sizes = {}
    if "classifier" in present_heads:
        w = tensors[names.HEAD_ENTRIES["classifier"][0].__getattribute__(key)]
        head_sizes["classifier"] = w.shape[0]
    model, heads = _model_for_heads(config, present_heads, head_sizes, architectures)
    entries = encoder + [e for h in sorted(heads) for e in names.HEAD_ENTRIES[h]]

    missing = [getattr(e, key) for e in entries if getattr(e, key) not in tensors]
    if missing:
        raise CheckpointError(f"{file}: missing {len(missing)} variables, e.g. {missing[:5]}")
    used = {getattr(e, key) for e in entries}
    if source == "tf":
        unknown = [
            n for n in tensors if n not in used and not n.endswith(names.TF_IGNORED_SUFFIXES)
        ]
    else:
        unknown = [n for n in tensors if n not in used and n not in names.HF_IGNORED]
    if unknown:
        raise CheckpointError(
            f"{file}: {len(unknown)} unknown variables, e.g. {sorted(unknown)[:5]}"
        )

    expected = expected_shapes(model)
    flat: dict[tuple[str, ...], np.ndarray] = {}
    for e in entries:
        raw = tensors[getattr(e, key)]
        try:
            a = names.to_ours(e, raw, key, config)
        except ValueError as err:  # a reshape that cannot work
            raise CheckpointError(
                f"{file}: tensor {getattr(e, key)} has shape {raw.shape}, "
                f"which does not fit the config ({err})"
            ) from err
        path = e.path if not isinstance(model, BertModel) else e.path[1:]
        if a.shape != expected[path]:
            raise CheckpointError(
                f"{file}: tensor {getattr(e, key)} has shape {tuple(raw.shape)}; the config "
                f"expects {expected[path]} in bert_jax layout (got {a.shape} after conversion)"
            )
        flat[path] = a.astype(np.float32)
    return model, unflatten(flat)


def unflatten(flat: dict[tuple[str, ...], Any]) -> dict:
    tree: dict = {}
    for path, leaf in flat.items():
        node = tree
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = leaf
    return tree


def _check_vocab(d: epath.Path, config: BertConfig):
    vocab = d / "vocab.txt"
    if vocab.exists():
        n = len(vocab.read_bytes().splitlines())
        if n != config.vocab_size:
            raise CheckpointError(
                f"{vocab} has {n} tokens but the config's vocab_size is {config.vocab_size}"
            )


def with_overrides(model: nn.Module, params: dict, overrides: dict[str, Any]):
    """Apply BertConfig overrides (dtype, scan_layers, vocab_pad_multiple, dropout, ...)
    to a loaded model, converting the parameters' layout where it changes."""
    if not overrides:
        return model, params
    config = dataclasses.replace(model.config, **overrides)
    if config.padded_vocab_size != model.config.padded_vocab_size:
        params = pad_vocab(params, config.padded_vocab_size)
    if config.scan_layers != model.config.scan_layers:
        enc = params["encoder"] if isinstance(model, BertModel) else params["bert"]["encoder"]
        fn = stack_layers if config.scan_layers else unstack_layers
        enc = fn(enc, config.num_layers)
        if isinstance(model, BertModel):
            params = {**params, "encoder": enc}
        else:
            params = {**params, "bert": {**params["bert"], "encoder": enc}}
    return model.clone(config=config), params


def read_bert_jax(d: epath.Path):
    import orbax.checkpoint as ocp

    meta = read_json(d / BERT_JAX_FILE)
    cls = MODEL_CLASSES.get(meta.get("model"))
    if cls is None:
        raise CheckpointError(
            f"{d / BERT_JAX_FILE}: unknown model {meta.get('model')!r}; "
            f"known: {sorted(MODEL_CLASSES)}"
        )
    try:
        config = BertConfig.from_dict(meta["config"])
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{d / BERT_JAX_FILE}: bad config ({e})") from e
    _check_vocab(d, config)
    model = cls(config, **meta.get("model_kwargs", {}))
    params = ocp.StandardCheckpointer().restore(d / "params")
    params = jax.tree.map(np.asarray, params)
    expected = expected_shapes(model)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    got = {tuple(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}
    if got != expected:
        bad = sorted(set(got.items()) ^ set(expected.items()))[:5]
        raise CheckpointError(f"{d}/params does not match {meta['model']} with its config: {bad}")
    return model, params


def workdir_info(d: epath.Path) -> dict[str, Any]:
    """task.json of a training workdir: the model class, its config and kwargs."""
    info_path = d / "task.json"
    if not info_path.exists():
        raise CheckpointError(
            f"{d}: a training workdir without task.json (the trainer writes it before the "
            "first step); it cannot be loaded"
        )
    return read_json(info_path)


def read_workdir(d: epath.Path):
    """The params of a training run's newest complete checkpoint, and its model.

    The model comes from task.json: no task, dataset or config file is needed.
    """
    import orbax.checkpoint as ocp

    info = workdir_info(d)
    model = MODEL_CLASSES[info["model"]](
        BertConfig.from_dict(info["config"]), **info.get("model_kwargs", {})
    )
    ckpt_dir = d / "checkpoints"
    steps = sorted(int(c.name) for c in ckpt_dir.iterdir() if c.name.isdigit())
    if not steps:
        raise CheckpointError(f"{ckpt_dir} holds no complete checkpoint")
    state_dir = ckpt_dir / str(steps[-1]) / "state"
    # Restore onto this host's first device whatever mesh wrote it: the
    # target is the stored shapes and dtypes with a single-device sharding.
    ckptr = ocp.StandardCheckpointer()
    stored = ckptr.metadata(state_dir).item_metadata.tree
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda m: (
            jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device) if hasattr(m, "shape") else m
        ),
        stored,
        is_leaf=lambda x: hasattr(x, "shape"),
    )
    restored = ckptr.restore(state_dir, target)
    return model, jax.tree.map(np.asarray, restored["params"])


def read(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """(model, float32 numpy params) of a checkpoint directory in any format."""
    d = checkpoint_dir(path)
    fmt = detect_format(d)
    if fmt == "bert_jax":
        model, params = read_bert_jax(d)
    elif fmt == "workdir":
        model, params = read_workdir(d)
    elif fmt == "hf":
        cfg_json = read_json(d / "config.json")
        config = config_from_json(cfg_json, _HF_ACT, d / "config.json")
        _check_vocab(d, config)
        raw, file = _read_hf_tensors(d)
        tensors = {_normalize_hf_key(k): v for k, v in raw.items()}
        model, params = _assemble(tensors, "hf", config, file, cfg_json.get("architectures") or [])
    else:
        config = config_from_json(
            read_json(d / "bert_config.json"), _TF_ACT, d / "bert_config.json"
        )
        _check_vocab(d, config)
        import tensorflow as tf

        prefix = _tf_checkpoint_prefix(d)
        try:
            reader = tf.train.load_checkpoint(prefix)
        except Exception as e:  # TF raises several error types for corrupt files
            raise CheckpointError(f"{prefix}: cannot read TF checkpoint ({e})") from e
        tensors = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}
        model, params = _assemble(tensors, "tf", config, epath.Path(prefix + ".index"), [])
    return model, params


def read_config(path: str | os.PathLike) -> BertConfig:
    """The architecture of a checkpoint directory, reading only its config file."""
    d = checkpoint_dir(path)
    fmt = detect_format(d)
    if fmt == "hf":
        return config_from_json(read_json(d / "config.json"), _HF_ACT, d / "config.json")
    if fmt == "tf":
        return config_from_json(read_json(d / "bert_config.json"), _TF_ACT, d / "bert_config.json")
    if fmt == "bert_jax":
        return BertConfig.from_dict(read_json(d / BERT_JAX_FILE)["config"])
    return BertConfig.from_dict(workdir_info(d)["config"])
