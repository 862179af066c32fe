"""What every training config shares, importable from the installed package.

The experiment configs themselves are Python files anywhere on disk (the
repository's `configs/`, or a researcher's own folder): each defines
`get_config(arg)` and builds on these modules::

    # ~/exp/my_glue.py
    from bert_jax.configs import common, finetune

    def get_config(arg=None):
        a = common.parse_arg(arg, lr=3e-5)
        c = finetune.base_config()
        c.task, c.glue_task = "glue", "mrpc"
        c.optimizer.learning_rate = a.lr
        return c

    python -m bert_jax.main --config=~/exp/my_glue.py:lr=2e-5 --workdir=runs/mrpc ...

`load("path/to/config.py:arg")` builds a config from such a file in Python
(the demo and tools use it; the CLI goes through ml_collections'
`config_flags`, which does the same).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import ml_collections


def load(spec: str) -> ml_collections.ConfigDict:
    """`"path/to/file.py[:arg]"` -> that file's `get_config(arg)`.

    Raises:
      FileNotFoundError: the file does not exist.
      AttributeError: the file defines no `get_config`.
    """
    get_config, arg = load_function(spec, "get_config", "config")
    return get_config(arg or None)


def load_function(spec: str, function: str, kind: str):
    """`"path/to/file.py[:arg]"` -> (the file's `function`, arg): configs and sweeps.

    Raises:
      FileNotFoundError: the file does not exist (named as a `kind` file).
      AttributeError: the file defines no `function`.
    """
    path, _, arg = spec.partition(":")
    file = Path(os.path.expanduser(path)).resolve()
    if not file.is_file():
        raise FileNotFoundError(f"{kind} file {file} does not exist")
    # A fresh module per call: two loads of one file never share state.
    name = f"_bert_jax_{kind}_{abs(hash(str(file)))}"
    module_spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up here
    try:
        module_spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    if not hasattr(module, function):
        raise AttributeError(f"{kind} file {file} defines no {function}(arg)")
    return getattr(module, function), arg


def repository_config(name: str) -> str:
    """The path of a config file in the repository's `configs/` (editable installs)."""
    path = Path(__file__).resolve().parents[2] / "configs" / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the repository's configs/ comes with a source checkout "
            "(pip install -e .); pass a config file path instead"
        )
    return str(path)
