"""Rules the suite holds itself to, checked: comparisons fail on NaN/inf, every numeric
comparison goes through `tests/numerics.py`, and on CI nothing skips."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import numerics

TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("side", ["actual", "desired", "both"])
def test_every_helper_fails_on_a_non_finite_value_anywhere(bad, side):
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(3, 5, 4)).astype(np.float32)
    ours = ref.copy()
    at = (2, 4, 3)  # the last element: Python's max() would skip a NaN here
    if side in ("actual", "both"):
        ours[at] = bad
    if side in ("desired", "both"):
        ref[at] = bad
    mask = np.ones((3, 5, 1), bool)
    mask[2, 4] = False  # a NaN in a masked-out (padded) position fails too
    checks = {
        "assert_close": lambda: numerics.assert_close(ours, ref, atol=1.0),
        "assert_equal": lambda: numerics.assert_equal(ours, ref),
        "max_abs_diff": lambda: numerics.max_abs_diff(ours, ref, where=mask),
        "assert_trees_close": lambda: numerics.assert_trees_close({"a": ours}, {"a": ref}, atol=1),
        "assert_finite_values": lambda: numerics.assert_finite_values({"m": ours.sum()}),
    }
    for name, check in checks.items():
        if name == "assert_finite_values" and side == "desired":
            continue  # one-sided by nature
        with pytest.raises(AssertionError, match="non-finite"):
            check()
            pytest.fail(f"{name} passed with {bad} on the {side} side")


def test_helpers_still_compare_finite_numbers():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    numerics.assert_close(a, a + 1e-7, atol=1e-6)
    numerics.assert_equal(np.array(["x", "y"]), np.array(["x", "y"]))
    with pytest.raises(AssertionError):
        numerics.assert_close(a, a + 1e-3, atol=1e-6)
    assert numerics.max_abs_diff(a, a + 0.5) == pytest.approx(0.5)
    assert numerics.max_abs_diff(a, a + 0.5, where=np.zeros((2, 3), bool)) == 0.0


def test_the_parity_comparison_fails_on_an_injected_nan():
    """test_pretrained.py's comparison of model outputs, with one NaN put into each
    compared output in turn (at a random position): it must fail every time."""
    from tests.checkpoints import test_pretrained

    rng = np.random.default_rng(1)
    mask = np.ones((3, 16), np.int64)
    mask[2, 5:] = 0
    outputs = {
        "sequence_output": rng.normal(size=(3, 16, 8)),
        "pooled_output": rng.normal(size=(3, 8)),
        "mlm_logits": rng.normal(size=(3, 16, 11)),
        "nsp_logits": rng.normal(size=(3, 2)),
    }
    test_pretrained._assert_parity(test_pretrained._max_diffs(outputs, outputs, mask))
    for key, value in outputs.items():
        broken = value.copy()
        broken[tuple(rng.integers(0, n) for n in value.shape)] = np.nan
        with pytest.raises(AssertionError, match="non-finite"):
            test_pretrained._max_diffs({**outputs, key: broken}, outputs, mask)


RAW = re.compile(r"np\.testing\.assert_|numpy\.testing|assert_array_almost_equal|max\(diffs")


def test_no_test_compares_numbers_around_the_helpers():
    offenders = [
        f"{path.relative_to(TESTS)}:{i}: {line.strip()}"
        for path in sorted(TESTS.rglob("*.py"))
        if path.name not in ("numerics.py", "test_suite_rules.py")
        for i, line in enumerate(path.read_text().splitlines(), start=1)
        if RAW.search(line)
    ]
    assert not offenders, "use tests/numerics.py:\n" + "\n".join(offenders)


def test_on_ci_a_skip_is_a_failure(tmp_path):
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n\ndef test_needs_data():\n    pytest.skip('no ../shared/data')\n"
    )
    (tmp_path / "conftest.py").write_text((TESTS / "conftest.py").read_text())
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-n",
        "0",
        "-c",
        "/dev/null",
    ]
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    local = subprocess.run([*cmd, str(tmp_path)], env=env, capture_output=True, text=True)
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout
    ci = subprocess.run(
        [*cmd, str(tmp_path)], env={**env, "CI": "true"}, capture_output=True, text=True
    )
    assert ci.returncode == 1 and "skipped on CI" in ci.stdout and "no ../shared/data" in ci.stdout
