"""Load any BERT-family checkpoint into bert_jax, and write bert_jax parameters out.

* `load(path)`: (model, params) from an HF directory (BERT, ALBERT, RoBERTa
  or DistilBERT: the family options of `BertConfig`), an original Google TF
  release, a bert_jax checkpoint or a training workdir, local or gs://
  (the formats: `bert_jax.checkpoints.formats`). The model is the task model
  matching the heads present (`BertForPreTraining`, ...) or `BertModel`.
* `load_into(target, path)`: a checkpoint's parameters in the layout and
  dtypes of an existing params tree (stacked or per-layer), by the rules
  the trainer's `init_checkpoint` follows, with a `LoadReport`.
* `save` (the bert_jax format) and `export_hf` (an HF transformers directory).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from bert_jax import sharding
from bert_jax.checkpoints import checksums
from bert_jax.checkpoints import formats as formats
from bert_jax.checkpoints import names as names
from bert_jax.checkpoints.formats import BERT_JAX_FILE, CheckpointError, detect_format
from bert_jax.checkpoints.layout import pad_vocab, stack_layers, unstack_layers
from bert_jax.models.bert import BertConfig, BertModel
from bert_jax.models.heads import (
    BertForMultipleChoice,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForTokenClassification,
)

# The layout files are written in: per-layer, vocab_size rows (any model loads them).
CANONICAL = {"scan_layers": False, "vocab_pad_multiple": 1}

# The format readers' error and detection are part of this module's API.
__all__ = [
    "CheckpointError",
    "LoadReport",
    "check_workdir",
    "detect_format",
    "export_hf",
    "load",
    "load_config",
    "load_into",
    "model_kwargs",
    "save",
]

# ----------------------------------------------------------------------------
# Public API.
# ----------------------------------------------------------------------------


def load(path: str | os.PathLike, **config_overrides: Any) -> tuple[nn.Module, dict]:
    """Load a checkpoint directory in any supported format.

    Args:
      path: an HF, original TF or bert_jax checkpoint directory.
      **config_overrides: BertConfig fields to change after loading that do
        not alter shapes: `dtype`, `param_dtype`, `scan_layers`,
        `remat_policy`, dropout rates.

    Returns:
      (model, params): `model.apply({'params': params}, input_ids=...,
      token_type_ids=..., attention_mask=..., deterministic=True)` returns
      the encoder dict (plus head outputs when the checkpoint has heads).
      Params are float32 numpy arrays.

    Raises:
      CheckpointError: among others, a training workdir whose newest checkpoint
        is damaged (`check_workdir`).
    """
    if formats.detect_format(path) == "workdir":
        check_workdir(path)
    model, params = formats.read(path)
    return formats.with_overrides(model, params, config_overrides)


def check_workdir(path: str | os.PathLike) -> None:
    """Refuses a workdir whose newest checkpoint (the one `load` reads) is damaged.

    Damaged as the trainer judges it: no commit marker, or files that differ
    from the checksums written at save time (`bert_jax.checkpoints.checksums`).
    The error names the checkpoint, what is wrong and the previous good step; it
    does not load that one instead: the trainer, rerun on the workdir, sets the
    damaged checkpoint aside and trains again from there, and a prediction from
    an older model than the one asked for would pass unnoticed.
    """
    ckpt_dir = formats.checkpoint_dir(path) / "checkpoints"
    if not ckpt_dir.is_dir():
        return  # formats.read names what is missing
    steps = sorted((int(c.name) for c in ckpt_dir.iterdir() if c.name.isdigit()), reverse=True)

    def problem(step: int) -> str | None:
        d = ckpt_dir / str(step)
        if not (d / "commit_success.txt").exists():
            return "it has no commit marker (commit_success.txt): its save never finished"
        return checksums.problem(d)

    if not steps or (why := problem(steps[0])) is None:
        return
    good = next((s for s in steps[1:] if problem(s) is None), None)
    earlier = (
        f"the previous good checkpoint is step {good} ({ckpt_dir / str(good)}); rerun "
        f"the training command on this workdir to set step {steps[0]} aside and train "
        f"again from step {good}"
        if good is not None
        else "no earlier checkpoint is good"
    )
    raise CheckpointError(f"checkpoint {ckpt_dir / str(steps[0])} is damaged: {why}; {earlier}")


def load_config(path: str | os.PathLike) -> BertConfig:
    """The architecture of a checkpoint directory, reading only its config file."""
    return formats.read_config(path)


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What `load_into` did, parameter by parameter ("/"-joined paths of the target).

    Attributes:
      path: the checkpoint.
      loaded: parameters taken from the checkpoint.
      fresh: parameters that keep their initialisation, with the reason (a
        head the checkpoint lacks, or one of another shape).
      unused: checkpoint heads the target has no place for.
    """

    path: str
    loaded: tuple[str, ...]
    fresh: dict[str, str]
    unused: tuple[str, ...]

    def summary(self) -> str:
        total = len(self.loaded) + len(self.fresh)
        text = f"init_checkpoint {self.path}: loaded {len(self.loaded)} of {total} parameters"
        if self.fresh:
            text += "; fresh (initialised here): " + "; ".join(
                f"{k} ({why})" for k, why in sorted(self.fresh.items())
            )
        if self.unused:
            text += "; checkpoint heads not used: " + ", ".join(self.unused)
        return text


def load_into(
    target: dict, path: str | os.PathLike, vocab_size: int | None = None
) -> tuple[dict, LoadReport]:
    """Parameters for `target` (a model's params tree) from a checkpoint in any format.

    Layouts are converted both ways (per-layer `layer_i` <-> stacked `layers`,
    whichever the checkpoint and the target use), dtypes are cast to the
    target's, and parameters match by name and shape. Rules:

    * every encoder parameter (under `bert`) must load: a missing one, one of
      another shape, or an encoder parameter of the checkpoint the target
      lacks is an error naming each (with both shapes). The pooler is the
      exception: a checkpoint without one (masked-LM models save none) leaves
      the target's fresh, and one the target lacks is reported unused;
    * a head (a top-level key other than `bert`) loads whole when the
      checkpoint has it with the same shapes; it stays as initialised in
      `target` only when the checkpoint has no such head or its shapes differ
      (a classifier over another label count), and the report says which. A
      head the checkpoint has only in part is an error.

    Args:
      target: the params tree to fill (arrays, or `jax.ShapeDtypeStruct`s when
        every parameter is expected to load), boxed or not; a task model's
        tree (`{"bert": ..., <head>: ...}`) or a bare `BertModel`'s.
      path: any directory `load` reads.
      vocab_size: the target model's vocabulary; when it is the checkpoint's,
        the vocabulary tensors take the target's padding rows
        (`BertConfig.vocab_pad_multiple`), added as zeros or dropped.

    Returns:
      (params, report): params has the target's structure; loaded leaves are
      numpy arrays of the target's dtype, fresh ones the target's own leaves.

    Raises:
      CheckpointError: the encoder does not load as above, or a fresh leaf
        has no value (`target` given as shapes).
      FileNotFoundError: `path` does not exist.
    """
    target = sharding.unboxed(target)
    bare = "embeddings" in target
    want = _flat({"bert": target} if bare else target)
    model, source = load(path)
    if "embeddings" in source:  # a bare encoder checkpoint
        source = {"bert": source}
    target_bert = target if bare else target["bert"]
    rows = target_bert["embeddings"]["word_embeddings"]["embedding"].shape[0]
    if vocab_size == model.config.vocab_size and rows >= vocab_size:
        # The same vocabulary with other padding rows (vocab_pad_multiple).
        source = pad_vocab(source, rows)
    _check_sharing(path, source["bert"], target_bert)
    have = _flat({**source, "bert": _encoder_layout(source["bert"], target_bert)})
    problems, fresh, out = [], {}, {}
    pooler = ("bert", "pooler")
    no_pooler = not any(k[:2] == pooler for k in have)
    for key in sorted(k for k in want if k[0] == "bert"):
        got, shape = have.get(key), tuple(want[key].shape)
        if got is None and key[:2] == pooler and no_pooler and not _is_shape(want[key]):
            # A masked-LM checkpoint saves no pooler (HF add_pooling_layer=False):
            # a classifier reading one starts it fresh, as HF's do.
            out[key], fresh[_name(key)] = want[key], "the checkpoint has no pooler"
        elif got is None:
            problems.append(f"{_name(key)}: not in the checkpoint")
        elif got.shape != shape:
            problems.append(f"{_name(key)}: checkpoint {got.shape} vs model {shape}")
        else:
            out[key] = np.asarray(got, want[key].dtype)
    extra = sorted(k for k in have if k[0] == "bert" and k not in want and k[:2] != pooler)
    problems += [f"{_name(k)}: in the checkpoint, not in the model" for k in extra]
    unused_pooler = ["bert/pooler"] if any(k[:2] == pooler and k not in want for k in have) else []
    for head in sorted({k[0] for k in want} - {"bert"}):
        mine = {k: v for k, v in want.items() if k[0] == head}
        theirs = {k: v for k, v in have.items() if k[0] == head}
        if theirs and set(theirs) != set(mine):
            problems.append(
                f"{head}: the checkpoint's head has {sorted(map(_name, theirs))}, "
                f"the model's {sorted(map(_name, mine))}"
            )
            continue
        differ = sorted(k for k in theirs if theirs[k].shape != tuple(mine[k].shape))
        reason = None
        if not theirs:
            reason = f"the checkpoint has no {head} head"
        elif differ:
            k = differ[0]
            reason = f"{_name(k)} is {theirs[k].shape} in the checkpoint, {mine[k].shape} here"
        for k, leaf in mine.items():
            if reason is None:
                out[k] = np.asarray(theirs[k], leaf.dtype)
            elif _is_shape(leaf):
                problems.append(f"{_name(k)}: {reason}, and the target has no value")
            else:
                out[k], fresh[_name(k)] = leaf, reason
    if problems:
        more = [f"... and {len(problems) - 20} more"] if len(problems) > 20 else []
        raise CheckpointError(
            f"{path}: {len(problems)} parameters do not load into the model:\n  "
            + "\n  ".join(problems[:20] + more)
        )
    params = formats.unflatten(out)
    loaded = tuple(_name(k) for k in want if _name(k) not in fresh)
    unused = tuple(sorted({k[0] for k in have} - {k[0] for k in want})) + tuple(unused_pooler)
    report = LoadReport(str(path), loaded, fresh, unused)
    return (params["bert"] if bare else params), report


def _is_shape(leaf) -> bool:
    """A target leaf given as a shape only (it must load: no value to keep)."""
    return isinstance(leaf, jax.ShapeDtypeStruct)


def _name(key: tuple[str, ...]) -> str:
    return "/".join(key)


def _flat(tree: dict) -> dict[tuple[str, ...], Any]:
    return {
        tuple(str(k.key) for k in p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def _check_sharing(path, source: dict, target: dict) -> None:
    """One clear error when ALBERT's shared layer meets per-layer parameters."""
    src, tgt = source.get("encoder", {}), target.get("encoder", {})
    if ("shared_layer" in src) == ("shared_layer" in tgt):
        return
    if "shared_layer" in src:
        raise CheckpointError(
            f"{path}: the checkpoint shares one layer across the encoder "
            "(bert/encoder/shared_layer, ALBERT cross-layer sharing) but the model has "
            "per-layer parameters (share_layers=False): build the model with share_layers=True"
        )
    raise CheckpointError(
        f"{path}: the checkpoint has per-layer parameters (bert/encoder/layer_0, ...) but the "
        "model shares one layer (bert/encoder/shared_layer, share_layers=True): build the "
        "model with share_layers=False"
    )


def _encoder_layout(source: dict, target: dict) -> dict:
    """`source` (an encoder's params) in the layer layout `target` uses."""
    src_enc, tgt_enc = source.get("encoder", {}), target.get("encoder", {})
    stacked_src, stacked_tgt = "layers" in src_enc, "layers" in tgt_enc
    if stacked_src == stacked_tgt:
        return source
    if stacked_tgt:
        n = sum(1 for k in src_enc if k.startswith("layer_"))
        enc = stack_layers(src_enc, n)
    else:
        n = jax.tree.leaves(src_enc["layers"])[0].shape[0]
        enc = unstack_layers(src_enc, n)
    return {**source, "encoder": jax.tree.map(np.asarray, enc)}


def model_kwargs(model: nn.Module) -> dict[str, Any]:
    kw = {
        f.name: getattr(model, f.name)
        for f in dataclasses.fields(model)
        if f.name not in ("config", "parent", "name")
    }
    return kw


def save(path: str | os.PathLike, model: nn.Module, params: dict) -> None:
    """Write a bert_jax checkpoint directory (config JSON + orbax params).

    Params are stored in the loop layout (`layer_i`) whatever `scan_layers`
    is, so a checkpoint loads into either. Written to a temporary sibling
    and renamed, so an interrupted save leaves nothing behind.
    """
    import orbax.checkpoint as ocp

    model, params = formats.with_overrides(model, sharding.unboxed(params), CANONICAL)
    d = Path(path).absolute()
    if d.exists():
        raise FileExistsError(f"{d} already exists")
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}.", dir=d.parent))
    try:
        meta = {
            "format_version": 1,
            "model": type(model).__name__,
            "config": model.config.to_dict(),
            "model_kwargs": model_kwargs(model),
        }
        (tmp / BERT_JAX_FILE).write_text(json.dumps(meta, indent=2))
        ckptr = ocp.StandardCheckpointer()
        ckptr.save(tmp / "params", jax.tree.map(np.asarray, params))
        ckptr.wait_until_finished()
        tmp.rename(d)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def hf_config(c: BertConfig, architecture: str, num_labels: int | None) -> dict[str, Any]:
    """HF `config.json` fields for a BertConfig (export, and the HF side of the bench),
    in the config's family (HF BertConfig, AlbertConfig, RobertaConfig, DistilBertConfig)."""
    family = names.family_of(c)
    act = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}[c.hidden_act]
    out = {
        "architectures": [architecture],
        "model_type": family,
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "intermediate_size": c.intermediate_size,
        "hidden_act": act,
        "hidden_dropout_prob": c.hidden_dropout,
        "attention_probs_dropout_prob": c.attention_dropout,
        "max_position_embeddings": c.max_position_embeddings,
        "type_vocab_size": c.type_vocab_size,
        "initializer_range": c.initializer_range,
        "layer_norm_eps": c.layer_norm_eps,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
    }
    if c.classifier_dropout is not None:
        out["classifier_dropout"] = c.classifier_dropout
    if family == "albert":
        out["classifier_dropout_prob"] = out.pop("classifier_dropout", c.hidden_dropout)
        out["embedding_size"] = c.embedding_size
        out["num_hidden_groups"] = 1 if c.share_layers else c.num_layers
        out["inner_group_num"] = 1
    elif family == "roberta":
        out.update(pad_token_id=c.position_offset - 1, bos_token_id=0, eos_token_id=2)
    elif family == "distilbert":
        out = _distilbert_config(c, out)
    if num_labels is not None:
        out["num_labels"] = num_labels
    return out


def _distilbert_config(c: BertConfig, bert: dict[str, Any]) -> dict[str, Any]:
    if c.layer_norm_eps != 1e-12 or c.use_pooler:
        raise CheckpointError(
            "HF DistilBERT has layer_norm_eps 1e-12 and no pooler; this config has "
            f"layer_norm_eps {c.layer_norm_eps}, use_pooler {c.use_pooler}"
        )
    return {
        "architectures": bert["architectures"],
        "model_type": "distilbert",
        "vocab_size": c.vocab_size,
        "dim": c.hidden_size,
        "n_layers": c.num_layers,
        "n_heads": c.num_heads,
        "hidden_dim": c.intermediate_size,
        "activation": bert["hidden_act"],
        "dropout": c.hidden_dropout,
        "attention_dropout": c.attention_dropout,
        "seq_classif_dropout": bert.get("classifier_dropout", c.hidden_dropout),
        "max_position_embeddings": c.max_position_embeddings,
        "initializer_range": c.initializer_range,
        "sinusoidal_pos_embds": False,
        "pad_token_id": 0,
        "tie_word_embeddings": True,
    }


def _hf_architecture(model: nn.Module, family: str) -> str:
    """The HF class a bert_jax model exports as (`AlbertForPreTraining`, ...)."""
    name = type(model).__name__
    if family == "bert":
        return name
    prefix = names.HF_CLASS_PREFIX[family]
    if isinstance(model, BertForPreTraining):
        return f"{prefix}ForPreTraining" if model.nsp else f"{prefix}ForMaskedLM"
    if isinstance(model, BertForMultipleChoice):
        raise CheckpointError(f"multiple choice export is implemented for BERT only, not {family}")
    return prefix + name[len("Bert") :]


def export_hf(
    model: nn.Module,
    params: dict,
    out_dir: str | os.PathLike,
    vocab_file: str | os.PathLike | None = None,
) -> Path:
    """Write an HF transformers directory (config.json, model.safetensors[, vocab.txt]).

    A BertForPreTraining model exports as HF `BertForPreTraining` (the MLM
    decoder stays tied to the word embeddings); task models as their HF
    namesakes; a bare BertModel as HF `BertModel`, which
    `BertForPreTraining.from_pretrained` also loads (with fresh heads). A
    config of another family (`checkpoint_names.family_of`) exports as that
    family's classes: `AlbertForPreTraining` (MLM + SOP) or
    `AlbertForMaskedLM`, `RobertaForMaskedLM`, `DistilBertForMaskedLM`,
    `*ForSequenceClassification`, `*ForTokenClassification`,
    `*ForQuestionAnswering`, `*Model`. HF's token classification and
    question answering classes have no pooler, so a pooler of those models is
    not written (loaded back, they have `use_pooler=False`).
    """
    from safetensors.numpy import save_file

    model, params = formats.with_overrides(model, sharding.unboxed(params), CANONICAL)
    try:
        family = names.family_of(model.config)
    except ValueError as e:
        raise CheckpointError(f"cannot export to HF: {e}") from e
    if isinstance(model, BertForPreTraining):
        if family == "bert" and not model.nsp:
            raise CheckpointError("HF BertForPreTraining needs an NSP head; this model has none")
        if family in ("roberta", "distilbert") and model.nsp:
            raise CheckpointError(f"HF {family} has no NSP head; this model has one")
    bare = isinstance(model, BertModel)
    tree = {"bert": params} if bare else params
    # HF's token classification and span QA classes have no pooler
    # (add_pooling_layer=False, every family): an encoder fine-tuned from a
    # checkpoint with one keeps it unused, and it is left out here.
    pooler = model.config.use_pooler and not isinstance(
        model, (BertForTokenClassification, BertForQuestionAnswering)
    )
    entries = names.encoder_entries(
        model.config.num_layers, family, share_layers=model.config.share_layers, pooler=pooler
    )
    head_table = names.head_entries(family)
    heads = names.head_names(tree)
    if not set(heads) <= set(head_table):
        raise CheckpointError(
            f"HF {family} has no head {sorted(set(heads) - set(head_table))} "
            "(a classifier with a hidden layer is RoBERTa's or DistilBERT's)"
        )
    entries += [e for h in heads for e in head_table[h]]
    tensors = {}
    for e in entries:
        leaf = tree
        for k in e.path:
            leaf = leaf[k]
        tensors[e.hf] = names.from_ours(e, np.asarray(leaf, np.float32), "hf")
    num_labels = None
    if "classifier" in tree and not isinstance(model, BertForMultipleChoice):
        num_labels = int(tree["classifier"]["dense"]["kernel"].shape[-1])
    arch = _hf_architecture(model, family)
    d = Path(out_dir).absolute()
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}.", dir=d.parent))
    try:
        fields = hf_config(model.config, arch, num_labels)
        (tmp / "config.json").write_text(json.dumps(fields, indent=2))
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        if vocab_file is not None:
            shutil.copyfile(vocab_file, tmp / "vocab.txt")
        if d.exists():
            raise FileExistsError(f"{d} already exists")
        tmp.rename(d)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return d
