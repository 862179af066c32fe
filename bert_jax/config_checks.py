"""Config values checked before anything is built, compiled or written, naming the key.

`train.run` calls `check(config)` first: a value that would only fail deep in
the run (`log_every=0` dies with ZeroDivisionError after the step compiled)
fails here in milliseconds with the key, the value and what is allowed. The
checks that need the mesh or the model (divisibility, lengths) stay in
`train.check_config`.
"""

from __future__ import annotations

import ml_collections

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
    value given there), `num_train_steps` (None or at least 1), `best_mode`,
    `mesh_shape` (three integers, each >= 1 or -1) and `data.on_bad_input`.
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
