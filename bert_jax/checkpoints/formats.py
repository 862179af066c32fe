"""Reading checkpoints in every format bert_jax knows, as bert_jax parameter trees.

Formats, detected from a directory's files (`detect_format`):
  * HF transformers, BERT and its family (config.json `model_type` "bert",
    "albert", "roberta" or "distilbert"; names: `checkpoint_names`):
    `config.json` + `model.safetensors` (or a sharded
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
`bert_jax.checkpoints.pretrained` is the public API over these readers.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from bert_jax import sharding
from bert_jax.checkpoints import names as names
from bert_jax.checkpoints.layout import pad_vocab, stack_layers, unstack_layers
from bert_jax.models.bert import BertConfig, BertModel
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
    family = d.get("model_type", "bert")
    if family == "distilbert":
        # DistilBERT's config.json has its own key names (HF DistilBertConfig).
        d = {
            "vocab_size": d.get("vocab_size"),
            "hidden_size": d.get("dim", 768),
            "num_hidden_layers": d.get("n_layers", 6),
            "num_attention_heads": d.get("n_heads", 12),
            "intermediate_size": d.get("hidden_dim", 3072),
            "hidden_act": d.get("activation", "gelu"),
            "max_position_embeddings": d.get("max_position_embeddings", 512),
            "hidden_dropout_prob": d.get("dropout", 0.1),
            "classifier_dropout": d.get("seq_classif_dropout"),
            "attention_probs_dropout_prob": d.get("attention_dropout", 0.1),
            "initializer_range": d.get("initializer_range", 0.02),
        }
        if d["vocab_size"] is None:
            raise CheckpointError(f"{path}: missing config key 'vocab_size'")
    act = d.get("hidden_act", "gelu_new" if family == "albert" else "gelu")
    if act not in act_map:
        raise CheckpointError(f"{path}: hidden_act {act!r} not one of {sorted(act_map)}")
    family_fields: dict[str, Any] = {}
    if family == "albert":
        layers, groups = d.get("num_hidden_layers", 12), d.get("num_hidden_groups", 1)
        if d.get("inner_group_num", 1) != 1 or groups not in (1, layers):
            raise CheckpointError(
                f"{path}: ALBERT with num_hidden_groups {groups} and inner_group_num "
                f"{d.get('inner_group_num', 1)} is not supported (only one shared layer, "
                "num_hidden_groups=1, or none shared, num_hidden_groups=num_hidden_layers; "
                "inner_group_num=1)"
            )
        family_fields = dict(
            embedding_size=d.get("embedding_size", 128), share_layers=groups == 1 and layers > 1
        )
    elif family == "roberta":
        # Positions start after the padding index (HF create_position_ids_from_input_ids).
        family_fields = dict(position_offset=d.get("pad_token_id", 1) + 1)
    elif family == "distilbert":
        family_fields = dict(use_token_type_embeddings=False, use_pooler=False)
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
            # ALBERT's key has a suffix; DistilBERT's was mapped above.
            classifier_dropout=d.get("classifier_dropout_prob", d.get("classifier_dropout")),
            **family_fields,
        )
    except KeyError as e:
        raise CheckpointError(f"{path}: missing config key {e.args[0]!r}") from e


def hf_family(d: dict[str, Any], path: epath.Path) -> str:
    """The BERT family of an HF config.json (its `model_type`; none: BERT)."""
    family = d.get("model_type", "bert")
    if family not in names.FAMILIES:
        raise CheckpointError(
            f"{path}: model_type {family!r} is not supported; known: {list(names.FAMILIES)}"
        )
    return family


def _load_safetensors(path: epath.Path) -> dict[str, np.ndarray]:
    from safetensors import numpy as st

    if not path.exists():
        raise CheckpointError(f"{path}: missing (named by model.safetensors.index.json)")
    # Local files are memory-mapped; remote ones (gs://) are read whole.
    try:
        return st.load(path.read_bytes()) if "://" in str(path) else st.load_file(str(path))
    except Exception as e:  # safetensors raises its own errors, which name no file
        raise CheckpointError(f"{path}: not a complete safetensors file ({e})") from None


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
            why = str(e)
            if "Weights only load failed" in why:  # torch's long advice to unpickle: not taken
                found = re.search(r"Unsupported global: GLOBAL \S+", why)
                why = (
                    f"{found.group(0) if found else 'objects other than tensors'}; refused "
                    "unread, as unpickling it could run code"
                )
            raise CheckpointError(f"{binary}: not a weights-only PyTorch state dict ({why})") from e
        return {k: v.float().numpy() for k, v in sd.items()}, binary
    raise FileNotFoundError(
        f"{d}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin"
    )


def _normalize_hf_key(k: str, family: str = "bert") -> str:
    # Older checkpoints use gamma/beta for LayerNorm, and BertModel-only
    # checkpoints (like all-MiniLM-L6-v2) drop the "bert." prefix (as do the
    # other families' bare models: AlbertModel, RobertaModel, DistilBertModel).
    k = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    if k.startswith(("embeddings.", "encoder.", "pooler.", "transformer.")):
        k = f"{family}.{k}"
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


# The hidden activation of the classification head of the families that have one.
_CLASSIFIER_HIDDEN_ACT = {"roberta": "tanh", "distilbert": "relu"}


def _model_for_heads(
    config: BertConfig,
    heads: set[str],
    shapes: dict,
    architectures: list[str],
    family: str = "bert",
):
    """Pick the task model for the heads present in a checkpoint."""
    if "mlm" in heads:
        return BertForPreTraining(config, nsp="nsp" in heads), {"mlm", "nsp"} & heads
    if "qa_outputs" in heads:
        return BertForQuestionAnswering(config), {"qa_outputs"}
    num = shapes.get("classifier")
    if "classifier_hidden" in heads:
        act = _CLASSIFIER_HIDDEN_ACT[family]
        model = BertForSequenceClassification(config, num_labels=num, hidden_act=act)
        return model, {"classifier_hidden"}
    if "classifier" in heads:
        arch = architectures[0] if architectures else "BertForSequenceClassification"
        # RoBERTa's and DistilBERT's sequence classifiers have a hidden layer
        # (above); their one-dense classifier is the token classifier.
        if arch.endswith("ForTokenClassification") or family in _CLASSIFIER_HIDDEN_ACT:
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
    family: str = "bert",
):
    """Named tensors -> (model, params) with every name and shape checked."""
    key = "tf" if source == "tf" else "hf"
    encoder = names.config_entries(config, family)
    head_table = names.head_entries(family)
    present_heads = {
        h for h, entries in head_table.items() if all(getattr(e, key) in tensors for e in entries)
    }
    if "classifier_hidden" in present_heads:
        # DistilBERT's `classifier` is also the output dense of its hidden head.
        present_heads.discard("classifier")
    head_sizes = {}
    for h in ("classifier", "classifier_hidden"):
        if h in present_heads:
            kernel = next(e for e in head_table[h] if e.path == ("classifier", "dense", "kernel"))
            w = tensors[getattr(kernel, key)]
            head_sizes["classifier"] = (
                w.shape[0] if key == "hf" or kernel.tf_transposed else w.shape[1]
            )
    model, heads = _model_for_heads(config, present_heads, head_sizes, architectures, family)
    entries = encoder + [e for h in sorted(heads) for e in head_table[h]]

    missing = [getattr(e, key) for e in entries if getattr(e, key) not in tensors]
    if missing:
        hint = ""
        if family == "albert" and any(".albert_layer_groups." in m for m in missing):
            layout = "1, one shared layer" if config.share_layers else "one group per layer"
            hint = (
                f" (config.json num_hidden_groups: {layout}; the tensors may hold the other layout)"
            )
        raise CheckpointError(f"{file}: missing {len(missing)} variables, e.g. {missing[:5]}{hint}")
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


def stored_config(d: dict[str, Any]) -> BertConfig:
    """The BertConfig a bert_jax checkpoint or workdir stores, with `attention_impl` "".

    The attention implementation is the choice of the process that runs the
    model, not a property of its weights: a workdir trained on a TPU stores the
    splash kernel it ran, which a CPU or GPU host cannot run. Loaded models
    compute with "xla" (the same math) unless the caller asks otherwise
    (`pretrained.load(path, attention_impl=...)`); the trainer resolves its own.
    """
    return dataclasses.replace(BertConfig.from_dict(d), attention_impl="")


def with_overrides(model: nn.Module, params: dict, overrides: dict[str, Any]):
    """Apply BertConfig overrides (dtype, scan_layers, vocab_pad_multiple, dropout, ...)
    to a loaded model, converting the parameters' layout where it changes."""
    if not overrides:
        return model, params
    config = dataclasses.replace(model.config, **overrides)
    if config.share_layers != model.config.share_layers:
        raise CheckpointError(
            f"share_layers={config.share_layers} cannot be applied to a loaded model with "
            f"share_layers={model.config.share_layers}: the parameters are "
            + (
                "one shared layer (bert/encoder/shared_layer)"
                if model.config.share_layers
                else "one set per layer (bert/encoder/layer_0, ...)"
            )
        )
    if config.padded_vocab_size != model.config.padded_vocab_size:
        params = pad_vocab(params, config.padded_vocab_size)
    # Shared layers have the same tree with and without scan (not stacked).
    if config.scan_layers != model.config.scan_layers and not config.share_layers:
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
        config = stored_config(meta["config"])
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{d / BERT_JAX_FILE}: bad config ({e})") from e
    _check_vocab(d, config)
    model = cls(config, **meta.get("model_kwargs", {}))
    try:
        params = ocp.StandardCheckpointer().restore(d / "params")
        params = jax.tree.map(np.asarray, params)
    except Exception as e:  # orbax and tensorstore raise many types; their messages vary
        raise CheckpointError(
            f"{d / 'params'}: cannot read the parameters ({type(e).__name__}: {e})"
        ) from e
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
        stored_config(info["config"]), **info.get("model_kwargs", {})
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
        family = hf_family(cfg_json, d / "config.json")
        config = config_from_json(cfg_json, _HF_ACT, d / "config.json")
        _check_vocab(d, config)
        raw, file = _read_hf_tensors(d)
        tensors = {_normalize_hf_key(k, family): v for k, v in raw.items()}
        config = _with_pooler(config, family, tensors)
        archs = cfg_json.get("architectures") or []
        model, params = _assemble(tensors, "hf", config, file, archs, family)
    else:
        config = config_from_json(
            read_json(d / "bert_config.json"), _TF_ACT, d / "bert_config.json"
        )
        _check_vocab(d, config)
        import tensorflow as tf

        prefix = _tf_checkpoint_prefix(d)
        try:
            reader = tf.train.load_checkpoint(prefix)
            # Tensors are read here: a truncated data file fails now (IndexError, ...).
            tensors = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}
        except Exception as e:  # TF raises several error types for corrupt files
            raise CheckpointError(f"{prefix}: cannot read TF checkpoint ({e})") from e
        model, params = _assemble(tensors, "tf", config, epath.Path(prefix + ".index"), [])
    return model, params


def _with_pooler(config: BertConfig, family: str, tensor_names) -> BertConfig:
    """use_pooler as the checkpoint has it: HF's masked-LM and RoBERTa task
    models save no pooler (add_pooling_layer=False)."""
    if family == "distilbert":  # never has one
        return config
    pooler = (
        names.encoder_entries(1, family)[-1].hf.rsplit(".", 1)[0] + "."
    )  # e.g. bert.pooler.dense.
    has = any(k.startswith(pooler) for k in tensor_names)
    return dataclasses.replace(config, use_pooler=has)


def _hf_tensor_names(d: epath.Path) -> list[str] | None:
    """The tensor names of an HF directory from the safetensors header or index
    alone (no tensor is read); None for a pytorch_model.bin."""
    index = d / "model.safetensors.index.json"
    if index.exists():
        return list(read_json(index)["weight_map"])
    single = d / "model.safetensors"
    if not single.exists():
        return None
    with single.open("rb") as f:
        n = int.from_bytes(f.read(8), "little")  # safetensors: u64 header length, JSON header
        header = json.loads(f.read(n))
    return [k for k in header if k != "__metadata__"]


def read_config(path: str | os.PathLike) -> BertConfig:
    """The architecture of a checkpoint directory, reading only its config file
    (and, for HF, the tensor names of its safetensors header: is there a pooler)."""
    d = checkpoint_dir(path)
    fmt = detect_format(d)
    if fmt == "hf":
        cfg_json = read_json(d / "config.json")
        family = hf_family(cfg_json, d / "config.json")
        config = config_from_json(cfg_json, _HF_ACT, d / "config.json")
        tensor_names = _hf_tensor_names(d)
        if tensor_names is None:
            return config
        return _with_pooler(config, family, [_normalize_hf_key(k, family) for k in tensor_names])
    if fmt == "tf":
        return config_from_json(read_json(d / "bert_config.json"), _TF_ACT, d / "bert_config.json")
    if fmt == "bert_jax":
        return stored_config(read_json(d / BERT_JAX_FILE)["config"])
    return stored_config(workdir_info(d)["config"])
