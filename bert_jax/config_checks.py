"""Every check of a training config, before anything is built, compiled or written.

Each error names the config key, its value and what is allowed. `train.run`
(and `bert_jax.perf.aot`) ask here, and nowhere else, in two steps:

* `check(config)`, first, on the values alone: a value that would only fail
  deep in the run (`log_every=0` dies with ZeroDivisionError after the step
  compiled) fails in milliseconds, and an `init_checkpoint` that is not a
  checkpoint fails before the task reads its tokenizer from it;
* `check_fits(config, mesh, model_config)`, once the task has named its model
  and the mesh is made, before any state exists: what the mesh and the model
  must divide or hold (batch sizes, gradient accumulation, packed rows,
  tensor-parallel sizes, lengths).

The model's own invariants (`BertConfig.__post_init__`) hold wherever a model
is made, from a config or from a checkpoint; the workdir's rules (a stored
config.json that differs, a finished run) are `bert_jax.workdir_config`'s.
"""

from __future__ import annotations

import jax
import ml_collections

from bert_jax import sharding
from bert_jax.checkpoints import pretrained
from bert_jax.configs.model import SIZES
from bert_jax.data import bad_input

# Keys every config has (bert_jax.configs.common.base_config) -> the least value.
_AT_LEAST = {
    "log_every": 1,  # the loop logs at `step % log_every == 0`
    "train_batch_size": 1,
    "eval_batch_size": 1,
    "keep_checkpoints": 1,
    "max_seq_length": 2,  # [CLS] and [SEP]
    "eval_every": 0,  # 0: evaluate at the end only
    "checkpoint_every": 0,
}


# Numeric keys beyond `_AT_LEAST`, each checked where the config has it and it is
# not None (a None model field comes from model.size or init_checkpoint):
# (kind, low, high, low_open, high_open). "int": an integer; "number": an int
# or a float. A range's open end excludes the bound (dropout 1.0 drops all).
_RANGES: dict[str, tuple[str, float | None, float | None, bool, bool]] = {
    "num_train_epochs": ("number", 0, None, True, False),
    "max_predictions_per_seq": ("int", 1, None, False, False),
    "masked_lm_prob": ("number", 0, 1, True, False),
    "doc_stride": ("int", 1, None, False, False),
    "max_query_length": ("int", 1, None, False, False),
    "n_best_size": ("int", 1, None, False, False),
    "max_answer_length": ("int", 1, None, False, False),
    "num_choices": ("int", 2, None, False, False),
    "optimizer.learning_rate": ("number", 0, None, False, False),
    "optimizer.warmup_steps": ("int", 0, None, False, False),
    "optimizer.warmup_proportion": ("number", 0, 1, False, False),
    "optimizer.weight_decay": ("number", 0, None, False, False),
    "optimizer.b1": ("number", 0, 1, False, True),
    "optimizer.b2": ("number", 0, 1, False, True),
    "optimizer.eps": ("number", 0, None, False, False),
    "optimizer.grad_clip_norm": ("number", 0, None, False, False),
    "optimizer.grad_accum_steps": ("int", 1, None, False, False),
    "model.vocab_size": ("int", 1, None, False, False),
    "model.hidden_size": ("int", 1, None, False, False),
    "model.num_layers": ("int", 1, None, False, False),
    "model.num_heads": ("int", 1, None, False, False),
    "model.intermediate_size": ("int", 1, None, False, False),
    "model.max_position_embeddings": ("int", 1, None, False, False),
    "model.type_vocab_size": ("int", 1, None, False, False),
    "model.vocab_pad_multiple": ("int", 1, None, False, False),
    "model.embedding_size": ("int", 1, None, False, False),
    "model.position_offset": ("int", 0, None, False, False),
    "model.layer_norm_eps": ("number", 0, None, True, False),
    "model.initializer_range": ("number", 0, None, False, False),
    "model.hidden_dropout": ("number", 0, 1, False, True),
    "model.attention_dropout": ("number", 0, 1, False, True),
    "model.classifier_dropout": ("number", 0, 1, False, True),
    "data.max_train_examples": ("int", 0, None, False, False),  # 0: all
    "data.max_eval_examples": ("int", 0, None, False, False),
    "data.length_bucket": ("int", 0, None, False, False),  # 0: max_seq_length wide
    "data.pack_examples": ("int", 0, None, False, False),  # 0: no packing
    "data.pack_row_multiple": ("int", 1, None, False, False),
    "data.num_shards": ("int", 0, None, False, False),  # 0: one per process
    "data.examples_per_row": ("int", 0, None, False, False),  # 0: unpacked records
    "data.shuffle_buffer": ("int", 1, None, False, False),
    "data.max_ngram": ("int", 1, None, False, False),
    "data.dupe_factor": ("int", 1, None, False, False),
    "distill.temperature": ("number", 0, None, True, False),
    "distill.alpha_ce": ("number", 0, None, False, False),
    "distill.alpha_mlm": ("number", 0, None, False, False),
    "distill.alpha_cos": ("number", 0, None, False, False),
    "distill.alpha_label": ("number", 0, None, False, False),
}

# The dtype names a config takes (model.dtype, model.param_dtype), and the
# spellings users write for them, answered with the name to write instead: one
# spelling per dtype, so a workdir's stored config.json compares equal however
# the run was typed.
DTYPES = ("float32", "bfloat16", "float16")
_DTYPE_ALIASES = {
    "fp32": "float32",
    "f32": "float32",
    "float": "float32",
    "single": "float32",
    "bf16": "bfloat16",
    "fp16": "float16",
    "f16": "float16",
    "half": "float16",
}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _get(config: ml_collections.ConfigDict, key: str):
    """The value at dotted `key`, or None where the config lacks it."""
    node = config
    for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return None
        node = node[part]
    return node


def _allowed(kind: str, lo, hi, lo_open: bool, hi_open: bool) -> str:
    what = "an integer" if kind == "int" else "a number"
    if hi is None:
        return f"{what} {'>' if lo_open else '>='} {lo}"
    return f"{what} in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def _in_range(value, kind: str, lo, hi, lo_open: bool, hi_open: bool) -> bool:
    if not (_is_int(value) if kind == "int" else _is_number(value)):
        return False
    # Written as "not outside" so that NaN, which compares False, is refused.
    above = value > lo if lo_open else value >= lo
    below = hi is None or (value < hi if hi_open else value <= hi)
    return above and below


def check_dtype(value, key: str) -> None:
    """Raises ValueError unless `value` is one of `DTYPES`, naming `key`, the
    allowed names and, for a known alias ("bf16", "torch.bfloat16"), its name."""
    if value in DTYPES:
        return
    text = str(value).strip().lower()
    text = text.rpartition(".")[2]  # torch.bfloat16, jnp.float32, np.float16
    name = _DTYPE_ALIASES.get(text, text if text in DTYPES else None)
    hint = f" (for {value!r} write {name!r})" if name else ""
    raise ValueError(f"config key {key}={value!r}: must be one of {list(DTYPES)}{hint}")


def _check_model_shape(config: ml_collections.ConfigDict) -> None:
    """hidden_size divisible by num_heads, from the fields or model.size's row."""
    model = config.get("model")
    if model is None:
        return
    layers_hidden_heads = SIZES.get(model.get("size") or "")
    hidden = model.get("hidden_size") or (layers_hidden_heads and layers_hidden_heads[1])
    heads = model.get("num_heads") or (layers_hidden_heads and layers_hidden_heads[2])
    if hidden and heads and hidden % heads:
        raise ValueError(
            f"config keys model.hidden_size={hidden} and model.num_heads={heads}: "
            "hidden_size must be a multiple of num_heads (each head gets hidden_size / "
            "num_heads features)"
        )


def check(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first config key whose value cannot run.

    Checked: the cadence and size keys of `_AT_LEAST` (integers, at least the
    value given there), every numeric key of `_RANGES` the config has (type
    and range: counts, rates, dropouts, model sizes, optimizer settings),
    `model.dtype` and `model.param_dtype` (`DTYPES`), hidden_size a multiple
    of num_heads, max_predictions_per_seq <= max_seq_length, `num_train_steps`
    (None or at least 1; then `num_train_epochs` must be set), `best_mode`,
    `mesh_shape` (three integers, each >= 1 or -1), `dcn_mesh_shape`,
    `data.on_bad_input` and `init_checkpoint` (a checkpoint folder bert_jax
    reads).
    """
    for key, least in _AT_LEAST.items():
        if key not in config:
            continue
        value = config[key]
        if not _is_int(value) or value < least:
            raise ValueError(f"config key {key}={value!r}: must be an integer >= {least}")
    for key, (kind, lo, hi, lo_open, hi_open) in _RANGES.items():
        value = _get(config, key)
        if value is not None and not _in_range(value, kind, lo, hi, lo_open, hi_open):
            allowed = _allowed(kind, lo, hi, lo_open, hi_open)
            raise ValueError(f"config key {key}={value!r}: must be {allowed}")
    for key in ("model.dtype", "model.param_dtype"):
        if _get(config, key) is not None:
            check_dtype(_get(config, key), key)
    _check_model_shape(config)
    predictions = config.get("max_predictions_per_seq")
    if predictions and config.get("max_seq_length") and predictions > config.max_seq_length:
        raise ValueError(
            f"config key max_predictions_per_seq={predictions}: must be at most "
            f"max_seq_length={config.max_seq_length}"
        )
    steps = config.get("num_train_steps")
    if steps is not None and (not _is_int(steps) or steps < 1):
        raise ValueError(
            f"config key num_train_steps={steps!r}: must be an integer >= 1 "
            "(or None, to derive it from num_train_epochs)"
        )
    if steps is None and "num_train_steps" in config and not config.get("num_train_epochs"):
        raise ValueError("config keys num_train_steps and num_train_epochs: set one of them")
    if config.get("best_mode", "max") not in ("max", "min"):
        raise ValueError(f"config key best_mode={config.best_mode!r}: must be 'max' or 'min'")
    mesh = config.get("mesh_shape")
    if mesh is not None and (
        len(mesh) != 3 or not all(_is_int(s) and (s >= 1 or s == -1) for s in mesh)
    ):
        raise ValueError(
            f"config key mesh_shape={tuple(mesh)!r}: must be three integers "
            "(data, fsdp, tensor), each >= 1 or -1 (the remaining devices)"
        )
    dcn = config.get("dcn_mesh_shape")
    if dcn is not None and (len(dcn) != 3 or not all(_is_int(s) and s >= 1 for s in dcn)):
        raise ValueError(
            f"config key dcn_mesh_shape={tuple(dcn)!r}: must be three integers "
            "(data, fsdp, tensor slices), each >= 1"
        )
    data = config.get("data")
    if data is not None and "on_bad_input" in data:
        bad_input.check(data.on_bad_input, "config key data.on_bad_input")
    if config.get("init_checkpoint"):
        try:
            pretrained.detect_format(config.init_checkpoint)
        except (OSError, pretrained.CheckpointError) as e:
            raise ValueError(f"config key init_checkpoint: {e}") from e


def check_fits(config: ml_collections.ConfigDict, mesh, model_config) -> None:
    """Batch, accumulation, packing, tensor-parallel and length settings against
    the mesh and the model (a BertConfig); raises ValueError naming the key."""
    dp = sharding.data_parallel_size(mesh)
    hosts = jax.process_count()
    for key in ("train_batch_size", "eval_batch_size"):
        if config[key] % dp:
            raise ValueError(
                f"{key}={config[key]} is not divisible by the data-parallel size "
                f"{dp} (mesh data x fsdp = {mesh.shape['data']} x {mesh.shape['fsdp']})"
            )
        if config[key] % hosts:
            raise ValueError(f"{key}={config[key]} is not divisible by {hosts} hosts")
    accum = config.optimizer.grad_accum_steps
    if (config.train_batch_size // dp) % accum:
        raise ValueError(
            f"optimizer.grad_accum_steps={accum} does not divide the per-device "
            f"batch {config.train_batch_size // dp}"
        )
    if config.get("data") and config.data.get("pack_examples"):
        # Packed batches have a multiple of pack_row_multiple rows, split like a batch.
        rows = config.data.get("pack_row_multiple", 1)
        if rows % (dp * accum) or rows % hosts:
            raise ValueError(
                f"data.pack_row_multiple={rows} must be a multiple of the data-parallel "
                f"size {dp} x optimizer.grad_accum_steps {accum} and of the {hosts} hosts"
            )
    tp = mesh.shape["tensor"]
    for key in ("num_heads", "intermediate_size"):
        if getattr(model_config, key) % tp:
            raise ValueError(
                f"model.{key}={getattr(model_config, key)} is not divisible by the tensor-"
                f"parallel size {tp} (mesh_shape[2])"
            )
    if config.max_seq_length > model_config.max_position_embeddings:
        raise ValueError(
            f"max_seq_length={config.max_seq_length} exceeds the model's "
            f"max_position_embeddings={model_config.max_position_embeddings}"
        )
