"""The one way a `key=value` override reaches a config: as `--config.key=value` does.

`python -m bert_jax.main` (and `bert_jax.perf.aot`) take `--config.key=value`
through ml_collections' `config_flags` on a locked config. Everything else that
sets config keys from text or from a sweep's values (`bert_jax.perf.bench
--set`, `bert_jax.experiments.sweep` points) goes through `apply`, which hands
each assignment to that same parser, so a value means the same in all three.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags


def format_value(value: Any) -> str:
    """`value` as `--config.key=VALUE` text that config_flags parses back to it."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        value = tuple(value)
    return repr(value)


def apply(
    config: ml_collections.ConfigDict, assignments: Mapping[str, Any], where: str = ""
) -> ml_collections.ConfigDict:
    """A locked copy of `config` with `assignments` (dotted key -> value) set.

    Each value is parsed as `--config.<key>=<value>` is on the command line:
    text by the field's type (`"3e-5"` for a float, `"True"` for a bool,
    `"(2, 2, 1)"` for a tuple, any text for a string); any other value is first
    written as that text (`format_value`). `config` itself is not changed.

    Raises:
      ValueError: an unknown key or a value the key's type does not take,
        naming `where` (e.g. "sweep point 3"), the key and the value.
    """
    out = copy.deepcopy(config)  # keeps typed placeholders (a resolved copy would not)
    out.lock()
    at = f"{where}: " if where else ""
    for key, value in assignments.items():
        _check_key(out, key, at)
        text = format_value(value)
        argv = ["apply", f"--config.{key}={text}"]
        fv = flags.FlagValues()
        try:
            config_flags.DEFINE_config_dict("config", out, flag_values=fv, sys_argv=argv)
            fv(argv)
        except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
            why = error_text(e).removeprefix(f"flag --config.{key}={text}: ")
            raise ValueError(f"{at}config key {key!r} = {text!r}: {why}") from e
        out = fv.config
    return out


def _check_key(config: ml_collections.ConfigDict, key: str, at: str) -> None:
    """A ValueError naming `key` (and the nearest known names) unless `config` has it."""
    node, done = config, []
    for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            known = sorted(node) if isinstance(node, ml_collections.ConfigDict) else []
            close = difflib.get_close_matches(part, known, n=3)
            hint = f"; did you mean {', '.join('.'.join([*done, c]) for c in close)}?"
            raise ValueError(f"{at}unknown config key {key!r}{hint if close else ''}")
        node = node[part]
        done.append(part)


def error_text(error: BaseException) -> str:
    """The one-line message inside what config_flags raises for a bad override
    (e.g. AttributeError(KeyError("'log_evry': Did you mean ...")))."""
    why = error
    while isinstance(why, BaseException) and why.args:
        why = why.args[0]
    return str(why).replace("\n", ": ")
