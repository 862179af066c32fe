"""The one way tests compare numbers: every helper fails on NaN or inf on either side.

numpy's `assert_allclose`/`assert_array_equal` take NaN == NaN (so two runs
that both diverged "match"); `np.allclose`/`isclose`/`array_equal` answer
False on NaN (so `assert not np.allclose(a, b)`, "the outputs differ", passes
when a run diverged); Python's `max` skips a NaN that is not first. These
helpers check that every value is finite before comparing, in the whole
arrays (masked-out positions included), so a NaN anywhere fails; an
assertion that values differ goes through `assert_differ`.
`tests/test_suite_rules.py` checks them, and that no test compares otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np


def _finite(name: str, x: np.ndarray, err_msg: str) -> None:
    if x.dtype.kind not in "fc":  # ints, bools, strings: nothing to check
        return
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0]) if x.ndim else ()
        raise AssertionError(
            f"{err_msg + ': ' if err_msg else ''}{name} has {int(bad.sum())} non-finite "
            f"values of {x.size} (first at index {first}: {x[first] if x.ndim else x})"
        )


def _arrays(actual, desired, err_msg: str) -> tuple[np.ndarray, np.ndarray]:
    a, d = np.asarray(actual), np.asarray(desired)
    _finite("actual", a, err_msg)
    _finite("desired", d, err_msg)
    return a, d


def assert_close(actual, desired, *, rtol: float = 1e-7, atol: float = 0.0, err_msg: str = ""):
    """`np.testing.assert_allclose`, failing on any non-finite value on either side."""
    a, d = _arrays(actual, desired, err_msg)
    np.testing.assert_allclose(a, d, rtol=rtol, atol=atol, err_msg=err_msg)


def assert_equal(actual, desired, *, err_msg: str = ""):
    """`np.testing.assert_array_equal` (exact), failing on any non-finite value."""
    a, d = _arrays(actual, desired, err_msg)
    np.testing.assert_array_equal(a, d, err_msg=err_msg)


def max_abs_diff(actual, desired, where=None) -> float:
    """max |actual - desired| (over `where` when given, a mask broadcast to them);
    fails if either array holds a non-finite value anywhere."""
    a, d = _arrays(actual, desired, "max_abs_diff")
    if a.shape != d.shape:
        raise AssertionError(f"shapes differ: {a.shape} vs {d.shape}")
    diff = np.abs(a.astype(np.float64) - d.astype(np.float64))
    if where is not None:
        diff = np.where(np.broadcast_to(np.asarray(where, bool), diff.shape), diff, 0.0)
    return float(diff.max()) if diff.size else 0.0


def all_close(actual, desired, *, rtol: float = 1e-7, atol: float = 0.0) -> bool:
    """Whether `np.allclose` holds (same shapes), failing on a non-finite value instead
    of answering False; for a test that counts or branches on closeness."""
    a, d = _arrays(actual, desired, "all_close")
    if a.shape != d.shape:
        raise AssertionError(f"all_close: shapes differ: {a.shape} vs {d.shape}")
    return bool(np.allclose(a, d, rtol=rtol, atol=atol))


def all_equal(actual, desired) -> bool:
    """Whether two arrays have the same shape and values (`np.array_equal`), failing on
    a non-finite value instead of answering False."""
    a, d = _arrays(actual, desired, "all_equal")
    return bool(np.array_equal(a, d))


def assert_differ(actual, desired, *, atol: float = 0.0, err_msg: str = "") -> float:
    """max |actual - desired| > atol, with both sides finite: NaN or inf fails rather
    than counting as a difference. `desired` may be a scalar (differs from 0: not
    all zero). Returns the largest difference."""
    d = np.asarray(desired)
    if d.ndim == 0:
        d = np.broadcast_to(d, np.shape(actual))
    gap = max_abs_diff(actual, d)  # fails on a non-finite value on either side
    if not gap > atol:
        raise AssertionError(
            f"{err_msg + ': ' if err_msg else ''}values do not differ: max |diff| {gap:.3g} "
            f"<= {atol:.3g}"
        )
    return gap


def assert_trees_close(actual: Any, desired: Any, *, rtol: float = 1e-7, atol: float = 0.0):
    """Two pytrees with the same structure, leaf by leaf (`assert_close`, path named)."""
    flat_a = dict(jax.tree_util.tree_leaves_with_path(actual))
    flat_d = dict(jax.tree_util.tree_leaves_with_path(desired))
    if flat_a.keys() != flat_d.keys():
        raise AssertionError(
            f"different trees: only actual {sorted(map(str, flat_a.keys() - flat_d.keys()))}, "
            f"only desired {sorted(map(str, flat_d.keys() - flat_a.keys()))}"
        )
    for path, a in flat_a.items():
        name = jax.tree_util.keystr(path)
        assert_close(np.asarray(a), np.asarray(flat_d[path]), rtol=rtol, atol=atol, err_msg=name)


def assert_finite_values(values: Mapping[str, Any]) -> None:
    """Every value of a metrics dict is a finite number."""
    for k, v in values.items():
        _finite(k, np.asarray(v, np.float64), "metric")
