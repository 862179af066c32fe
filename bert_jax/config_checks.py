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


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first config key whose value cannot run.

    Checked: the cadence and size keys of `_AT_LEAST` (integers, at least the
    value given there), `num_train_steps` (None or at least 1; then
    `num_train_epochs` must be set), `best_mode`, `mesh_shape` (three
    integers, each >= 1 or -1), `data.on_bad_input` and `init_checkpoint` (a
    checkpoint folder bert_jax reads).
    """
    for key, least in _AT_LEAST.items():
        if key not in config:
            continue
        value = config[key]
        if not _is_int(value) or value < least:
            raise ValueError(f"config key {key}={value!r}: must be an integer >= {least}")
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
