"""The rules that tie a workdir to one config, and the files that record it.

* The step count: `num_train_steps` when set (as given on the command line,
  never replaced); otherwise derived from `num_train_epochs` as the original
  `run_classifier.py` does, int(N / batch * epochs). Either way it is logged.
* A workdir that holds a run (a complete checkpoint or results.json) belongs
  to the config stored in its config.json. Running it again with another
  config is an error naming every differing key, before anything is written;
  with `allow_changes` (`--allow_config_changes`) the keys in `SAFE_CHANGES`,
  which do not change what is trained, may differ, and each change is
  appended to config_changes.jsonl.
* A finished workdir (its final checkpoint and results.json) run again with
  the same config is not trained, evaluated or rewritten.
* A run whose setup fails leaves no workdir it made (`NewWorkdir`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
from absl import logging
from etils import epath

from bert_jax.data import files

# Keys that may change when a run resumes (with allow_changes): logging and
# evaluation cadence, checkpoint retention, the mesh (checkpoints reshard on
# restore), memory/speed settings with identical numerics, and where the same
# data and initial checkpoint are found.
SAFE_CHANGES = (
    "log_every",
    "eval_every",
    "eval_batch_size",
    "checkpoint_every",
    "keep_checkpoints",
    "mesh_shape",
    "dcn_mesh_shape",
    "model.remat_policy",
    "init_checkpoint",
    "data.data_dir",
    "data.train_files",
    "data.eval_files",
    "data.embedded_dir",
    "data.vocab_file",
    "data.tokenizer_dir",
)


def check_writable(workdir: str, keep: bool = False) -> epath.Path | None:
    """This host can make the workdir (if needed) and write to it.

    Args:
      workdir: the folder.
      keep: keep the folders made; else they are removed again, so that the
        check leaves the disk as it was (`train.run` checks first, then reads
        its data, and only then makes the workdir: `NewWorkdir`).

    Returns:
      The outermost folder this call made (the workdir, or the first of its
      parents that did not exist), or None where the workdir existed.
    """
    wd = epath.Path(workdir)
    made = None
    for folder in [wd, *wd.parents]:
        if folder.exists():
            break
        made = folder
    # Several hosts share one workdir: every host looks before any host makes
    # it, and none removes it while another still writes its probe.
    _sync_hosts("bert_jax workdir looked at")
    try:
        wd.mkdir(parents=True, exist_ok=True)
        probe = wd / f".write_probe_{jax.process_index()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"workdir {workdir} is not writable ({e})") from e
    _sync_hosts("bert_jax workdir probed")
    if made is not None and not keep:
        _remove(made)
    return made


def _sync_hosts(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _remove(folder: epath.Path) -> None:
    # On a shared disk other hosts remove the same folder at the same time.
    try:
        folder.rmtree(missing_ok=True)
    except OSError:
        if folder.exists():
            raise


class NewWorkdir:
    """The workdir, made (`check_writable`) and removed again if the setup fails.

    A run whose setup fails (its data, its init checkpoint, its optimizer)
    leaves no workdir it made, nor the parent folders it made for it; call
    `keep()` once the run has written its config: from then on the workdir is
    the run's record and stays whatever happens. A workdir that existed before
    is never removed, nor any file in it.
    """

    def __init__(self, workdir: str):
        self._made = check_writable(workdir, keep=True)
        self._keep = False

    def keep(self) -> None:
        self._keep = True

    def __enter__(self) -> NewWorkdir:
        return self

    def __exit__(self, kind, error, tb) -> None:
        failed = kind is not None and self._made is not None and not self._keep
        if failed and jax.process_index() == 0:  # one remover of a shared (gs://) folder
            logging.info("setup failed: removing %s, which this run made", self._made)
            _remove(self._made)


def resolve_steps(
    config: ml_collections.ConfigDict, num_examples: int | None
) -> ml_collections.ConfigDict:
    """`config` with `num_train_steps` set: as given, or from the epochs.

    Raises:
      ValueError: neither is set, or epochs are asked of a data stream of
        unknown length.
    """
    epochs = config.get("num_train_epochs")
    if config.num_train_steps is not None:
        if epochs:
            logging.info(
                "num_train_steps=%d as set; num_train_epochs=%s is not used",
                config.num_train_steps,
                epochs,
            )
        return config
    if num_examples is None:
        raise ValueError(
            f"num_train_epochs={epochs} needs the training set's size, which this "
            "task's data stream does not know: set num_train_steps"
        )
    steps = max(int(num_examples / config.train_batch_size * epochs), 1)
    logging.info(
        "num_train_steps=%d from num_train_epochs=%s: int(%d examples / batch %d x epochs)",
        steps,
        epochs,
        num_examples,
        config.train_batch_size,
    )
    resolved = config.copy_and_resolve_references()
    with resolved.unlocked():
        resolved.num_train_steps = steps
    resolved.lock()
    return resolved


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a.b.c": leaf}."""
    if isinstance(d, dict):
        return {key: v for k, sub in d.items() for key, v in _flat(sub, f"{prefix}{k}.").items()}
    return {prefix[:-1]: d}


def as_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as config.json stores it (tuples become lists, placeholders null)."""
    return json.loads(config.to_json_best_effort())


def differences(stored: dict[str, Any], config: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (stored value, new value) for every key that differs."""
    a, b = _flat(stored), _flat(config)
    return {
        k: (a.get(k, ABSENT), b.get(k, ABSENT))
        for k in sorted(a.keys() | b.keys())
        if a.get(k, ABSENT) != b.get(k, ABSENT)
    }


ABSENT = "<absent>"  # a key one of two configs lacks, in `differences`

# Keys added after workdirs were first written, with the value that does what
# those runs did: a stored config.json without the key resumes when the new
# config holds that value (any other value is a change, as for any key).
ADDED_KEYS = {
    "skip_nonfinite_updates": False,  # issue 13
    "data.tokenizer_dir": "",  # issue 12
    "data.objective": "nsp",
    "data.max_ngram": 1,
    "model.embedding_size": None,
    "model.share_layers": None,
    "model.position_offset": None,
    "model.use_token_type_embeddings": None,
    "model.use_pooler": None,
    "model.classifier_dropout": None,
}


# Keys removed since workdirs were first written (their stored config.json
# still has them): a run resumes without them, with a warning (for model
# fields, BertConfig.REMOVED_FIELDS says what replaced them).
REMOVED_KEYS = {
    "model.dropout_mask_bits": "dropout is flax's nn.Dropout on every platform",
}


def _without_removed(diff: dict[str, tuple[Any, Any]]) -> dict[str, tuple[Any, Any]]:
    """`diff` less the REMOVED_KEYS the new config lacks, each logged."""
    out = {}
    for k, (old, new) in diff.items():
        if k in REMOVED_KEYS and new == ABSENT:
            logging.warning(
                "stored config key %s=%r no longer exists and is ignored (%s)",
                k,
                old,
                REMOVED_KEYS[k],
            )
        else:
            out[k] = (old, new)
    return out


def holds_run(wd: epath.Path, latest_step: int | None) -> bool:
    return latest_step is not None or (wd / "results.json").exists()


def check_resume(
    wd: epath.Path,
    config: ml_collections.ConfigDict,
    latest_step: int | None,
    allow_changes: bool = False,
) -> dict[str, tuple[Any, Any]]:
    """The config changes a run in `wd` may make (empty for a fresh workdir).

    Raises:
      ValueError: the workdir holds a run of another config (every differing
        key named with both values), or allowed changes outside SAFE_CHANGES.
    """
    path = wd / "config.json"
    if not holds_run(wd, latest_step) or not path.exists():
        return {}
    diff = differences(json.loads(path.read_text()), as_json(config))
    diff = {k: v for k, v in diff.items() if not (k in ADDED_KEYS and v == (ABSENT, ADDED_KEYS[k]))}
    diff = _without_removed(diff)
    if not diff:
        return {}
    shown = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in diff.items())
    unsafe = [k for k in diff if k not in SAFE_CHANGES]
    if not allow_changes:
        raise ValueError(
            f"workdir {wd} holds a run of another config ({shown}). Use a new workdir, or "
            f"pass --allow_config_changes to resume with changes to {', '.join(SAFE_CHANGES)}"
        )
    if unsafe:
        raise ValueError(
            f"workdir {wd}: these config changes would change what is trained and cannot "
            f"be made on resume: {', '.join(unsafe)} ({shown}); use a new workdir"
        )
    logging.warning("workdir %s resumes with config changes: %s", wd, shown)
    return diff


def finished_metrics(
    wd: epath.Path, latest_step: int | None, num_train_steps: int
) -> dict[str, float] | None:
    """The final metrics of a finished run in `wd`, or None if it has work left."""
    path = wd / "results.json"
    if latest_step != num_train_steps or not path.exists():
        return None
    results = json.loads(path.read_text())
    return results["metrics"] if results.get("step") == num_train_steps else None


def _write_atomic(path: epath.Path, text: str) -> None:
    with files.atomic_write(os.fspath(path)) as f:
        f.write(text.encode("utf-8"))


def write(
    wd: epath.Path,
    config: ml_collections.ConfigDict,
    changes: dict[str, tuple[Any, Any]],
    step: int,
) -> None:
    """config.json (the resolved config), and the changes made at `step` if any."""
    _write_atomic(wd / "config.json", json.dumps(as_json(config), indent=2))
    if changes:
        row = {"step": step, "changes": {k: list(v) for k, v in changes.items()}}
        with (wd / "config_changes.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")


def write_results(
    wd: epath.Path, step: int, metrics: dict[str, float], config: ml_collections.ConfigDict
) -> None:
    """results.json: the final metrics, step, init checkpoint and config (atomically:
    its presence marks the run finished)."""
    results = {
        "step": step,
        "metrics": metrics,
        "init_checkpoint": config.init_checkpoint,
        "config": as_json(config),
    }
    _write_atomic(wd / "results.json", json.dumps(results, indent=2))
