"""Keys every bert_jax training config has, with their defaults.

Task configs start from `base_config()` and set what differs; the trainer
reads nothing that is not declared here or in the task config, and the
config is locked, so a misspelled `--config.key` fails naming the key.

Model fields that come from `model.size` (or from `init_checkpoint`) are
typed placeholders: None until set, and still overridable from the command
line (`--config.model.hidden_dropout=0.0`), which a plain None field is not
in ml_collections.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from bert_jax.configs.model import MODEL_FIELDS, SIZES


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """'a=1,b=x,tiny' -> {a: 1, b: 'x', tiny: True} over `defaults`; unknown keys fail."""
    out = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, has_value, value = item.partition("=")
        if key not in out:
            raise ValueError(f"unknown config argument {key!r}; known: {sorted(out)}")
        if not has_value:
            out[key] = True
        elif isinstance(out[key], bool):
            out[key] = value.lower() in ("1", "true", "yes")
        else:
            try:
                out[key] = type(out[key])(value)
            except ValueError as e:
                raise ValueError(f"config argument {key}={value!r}: {e}") from e
    return ml_collections.ConfigDict(out)


def check_size(size: str, key: str = "model") -> str:
    """`size` if it names a row of SIZES (or is empty); else a ValueError naming `key`."""
    if size and size not in SIZES:
        raise ValueError(f"config argument {key}={size!r}: choose one of {list(SIZES)}")
    return size


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = ""
    c.seed = 0
    # PRNG of parameter init and dropout: "threefry2x32" (JAX's default), "rbg" or
    # "unsafe_rbg" (XLA's RngBitGenerator; faster dropout masks on CPU).
    c.rng_impl = "threefry2x32"
    c.num_train_steps = 1000
    c.train_batch_size = 32  # global, over all hosts and devices
    c.eval_batch_size = 32
    c.log_every = 50
    c.eval_every = 1000
    c.checkpoint_every = 1000
    c.keep_checkpoints = 3
    c.best_metric = ""  # e.g. "eval/mlm_accuracy": also keep the best checkpoint
    c.best_mode = "max"
    # A step whose loss or gradient is NaN/inf stops the run (naming the step);
    # True skips its update instead (params and optimizer state kept, inside the
    # jitted step) and counts it in train/skipped_updates. docs/reliability.md.
    c.skip_nonfinite_updates = False
    # Mesh over (data, fsdp, tensor); -1 fills with the remaining devices.
    c.mesh_shape = (-1, 1, 1)
    c.dcn_mesh_shape = (1, 1, 1)  # slices per axis, multi-slice TPU jobs
    c.init_checkpoint = ""  # any format bert_jax.checkpoints.pretrained.load reads
    c.max_seq_length = 128
    # A size from SIZES (bert_jax/configs/model.py); a field left None comes from it
    # (or from init_checkpoint). One placeholder per field: a shared one would
    # tie the fields together.
    c.model = ml_collections.ConfigDict(
        dict(
            size="base",
            **{k: config_dict.placeholder(t) for k, t in MODEL_FIELDS.items()},
            dtype="float32",
            param_dtype="float32",
            scan_layers=False,
            remat_policy="none",
        )
    )
    c.optimizer = optimizer_config()
    c.data = ml_collections.ConfigDict()
    return c


def optimizer_config() -> ml_collections.ConfigDict:
    """The BERT pretraining optimizer (paper appendix A.2 and the original optimization.py);
    what the keys mean: `bert_jax.optim.make_optimizer`."""
    return ml_collections.ConfigDict(
        dict(
            name="adamw",  # one of bert_jax.optim.NAMES
            learning_rate=1e-4,
            warmup_steps=10_000,  # run_pretraining.py num_warmup_steps
            # Fraction of num_train_steps instead (run_classifier.py uses 0.1); at most one of
            # warmup_steps and warmup_proportion may be nonzero.
            warmup_proportion=0.0,
            schedule="linear",  # one of bert_jax.optim.SCHEDULES
            weight_decay=0.01,
            b1=0.9,
            b2=0.999,
            eps=1e-6,  # optimization.py; optax's default is 1e-8
            grad_clip_norm=1.0,  # 0 or None: no clipping
            grad_accum_steps=1,  # microbatches per step: optim.accumulate_gradients
        )
    )
