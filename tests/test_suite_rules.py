"""Rules the suite holds itself to, checked: comparisons fail on NaN/inf, every numeric
comparison goes through `tests/numerics.py` (an assertion that values differ too),
no test returns early, every xfail says why and what would fix it, no assertion
bounds a clock reading, and on CI (`.ci/run`: CI=true) nothing skips."""

import ast
import functools
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
        "all_close": lambda: numerics.all_close(ours, ref, atol=1.0),
        "all_equal": lambda: numerics.all_equal(ours, ref),
        "assert_differ": lambda: numerics.assert_differ(ours, ref),
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
    assert numerics.all_close(a, a + 1e-7, atol=1e-6) and not numerics.all_close(a, a + 1)
    assert numerics.all_equal(a, a.copy()) and not numerics.all_equal(a, a + 1)
    assert numerics.assert_differ(a, a + 0.5, atol=0.1) == pytest.approx(0.5)
    numerics.assert_differ(a, 0.0)  # not all zero
    numerics.assert_differ(np.array([1, 2]), np.array([1, 3]))  # ints: nothing to check
    with pytest.raises(AssertionError, match="do not differ"):
        numerics.assert_differ(a, a + 0.05, atol=0.1)


def test_a_difference_is_never_a_nan():
    """What `assert not np.allclose(a, b)` ("the outputs differ") missed: a NaN on
    either side made it pass. Every helper that can say "they differ" fails instead,
    and so does one NaN among otherwise equal values."""
    a = np.zeros((2, 3), np.float32)
    broken = a.copy()
    broken[1, 2] = np.nan
    assert not np.allclose(broken, a) and not np.array_equal(broken, a)  # the hole
    for differ in (
        lambda: numerics.assert_differ(broken, a),
        lambda: numerics.assert_differ(a, broken),
        lambda: numerics.assert_differ(broken, 0.0),
        lambda: not numerics.all_close(broken, a),
        lambda: not numerics.all_equal(a, broken),
    ):
        with pytest.raises(AssertionError, match="non-finite"):
            differ()


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


# The comparisons numerics.py replaces. numpy's, jax.numpy's and torch's closeness and
# equality tests answer False on NaN, so `assert not ...` passes on a NaN; math.isclose
# likewise. pytest.approx fails on NaN (allowed) except with nan_ok=True or under `!=`.
RAW = re.compile(
    r"np\.testing\.assert_|numpy\.testing|assert_array_almost_equal|max\(diffs"
    r"|\b(np|numpy|jnp|onp)\.(allclose|isclose|array_equal|array_equiv)\b"
    r"|\btorch\.(allclose|isclose|equal)\b|\bmath\.isclose\b"
    r"|\bnan_ok\s*=\s*True|!=\s*pytest\.approx|pytest\.approx\(.*\)\s*!="
)


def test_no_test_compares_numbers_around_the_helpers():
    offenders = [
        f"{path.relative_to(TESTS)}:{i}: {line.strip()}"
        for path in sorted(TESTS.rglob("*.py"))
        if path.name not in ("numerics.py", "test_suite_rules.py")
        for i, line in enumerate(path.read_text().splitlines(), start=1)
        if RAW.search(line)
    ]
    assert not offenders, "use tests/numerics.py:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    "line",
    [
        "assert not np.allclose(a, run(4))",
        "assert not numpy.isclose(a, b).all()",
        "if not np.array_equal(x, y):",
        "assert not jnp.allclose(a, b)",
        "assert not torch.equal(a, b) and torch.allclose(c, d)",
        "assert math.isclose(loss, 0.69)",
        "assert loss == pytest.approx(want, nan_ok=True)",
        "assert got != pytest.approx(want)",
        "assert pytest.approx(want, abs=1e-3) != got",
    ],
)
def test_the_raw_comparison_rule_catches(line):
    assert RAW.search(line), line


def test_the_raw_comparison_rule_lets_pass():
    for line in ("numerics.assert_differ(a, b)", "x == pytest.approx(0.5)", "jnp.equal(a, b)"):
        assert not RAW.search(line), line


# ----------------------------------------------------------------------------
# Rules read from the tests' syntax trees: no early return in a test, every
# xfail says why and what would fix it, no bound on a clock reading, no
# "values differ" computed around numerics.assert_differ.
# ----------------------------------------------------------------------------

# An xfail's reason is a literal of 30+ characters that says why it fails and names
# the fix: "fails because X; fixed by Y" or "... until Y".
XFAIL_REASON = re.compile(r"(?=.{30}).*(\bfix|\buntil\b)", re.IGNORECASE | re.DOTALL)
CLOCK_CALLS = {"time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns"}
# Names that hold a duration: elapsed, seconds, took_s, compile_seconds, hf_s, ...
CLOCK_NAME = re.compile(
    r"(?i)^(elapsed|seconds|secs|took|duration)|(_s|_secs|_seconds|_elapsed|_took|_duration)$"
)


def _name(node: ast.AST) -> str:
    """`pytest.mark.xfail` for that attribute chain (calls and subscripts dropped)."""
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call):
        return _name(node.func)
    return ""


def _own_nodes(fn: ast.AST):
    """The nodes of a function's body, not those of functions or classes nested in it."""
    todo = list(fn.body)
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            todo.extend(ast.iter_child_nodes(node))


def _early_returns(tree: ast.AST):
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and fn.name.startswith("test"):
            for node in _own_nodes(fn):
                if isinstance(node, ast.Return):
                    yield node.lineno, f"return in {fn.name} (use pytest.skip('why'))"


def _text(node) -> str:
    """A string literal's text (an f-string's literal parts); '' for anything else."""
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value for v in node.values if isinstance(v, ast.Constant))
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""


def _reasons(call: ast.Call, tree: ast.Module) -> list[str]:
    """The texts an xfail's reason can take: a literal, a module-level name bound to
    one, or `NAME[key]` of a module-level dict of them (every value); [''] otherwise."""
    is_mark = _name(call.func).endswith("mark.xfail")
    node = next((k.value for k in call.keywords if k.arg == "reason"), None)
    if node is None and not is_mark and call.args:  # pytest.xfail("reason")
        node = call.args[0]
    name = node.value if isinstance(node, ast.Subscript) else node
    if isinstance(name, ast.Name):
        bound = [
            a.value
            for a in tree.body
            if isinstance(a, ast.Assign) and any(getattr(t, "id", "") == name.id for t in a.targets)
        ]
        node = bound[-1] if len(bound) == 1 else None
        if isinstance(node, ast.Dict) and name is not node:
            return [_text(v) for v in node.values] or [""]
    return [_text(node)]


def _bad_xfails(tree: ast.Module):
    calls = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        name = _name(node) if isinstance(node, ast.Call | ast.Attribute) else ""
        if not (name.endswith("mark.xfail") or name == "pytest.xfail"):
            continue
        if isinstance(node, ast.Attribute):
            if id(node) not in calls:  # a bare @pytest.mark.xfail
                yield node.lineno, f"{name} without a reason"
        elif not all(XFAIL_REASON.search(r) for r in _reasons(node, tree)):
            yield node.lineno, f"{name}: the reason must say why and what would fix it"


def _is_clock(node: ast.AST) -> bool:
    for n in ast.walk(node):
        if isinstance(n, ast.Call) and _name(n.func).split(".")[-1] in CLOCK_CALLS:
            return True
        if isinstance(n, ast.Name) and CLOCK_NAME.search(n.id):
            return True
        if isinstance(n, ast.Attribute) and CLOCK_NAME.search(n.attr):
            return True
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and CLOCK_NAME.search(n.value):
            return True  # r["step_seconds"]
    return False


def _asserted_sides(tree: ast.AST, smaller: bool):
    """(assert line, comparison, side) for each side an assert's comparison holds
    smaller (`smaller`) or larger than the other: `x < y` gives x as smaller."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assert):
            continue
        for cmp in (n for n in ast.walk(node.test) if isinstance(n, ast.Compare)):
            sides = [cmp.left, *cmp.comparators]
            for i, op in enumerate(cmp.ops):
                left = isinstance(op, (ast.Lt, ast.LtE)) == smaller
                if isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)):
                    yield node.lineno, cmp, sides[i if left else i + 1]


def _clock_bounds(tree: ast.AST):
    """assert statements that hold a clock reading or a duration under a bound."""
    for line, cmp, side in _asserted_sides(tree, smaller=True):
        if _is_clock(side):
            yield line, f"clock-based bound: {ast.unparse(cmp)}"


def _differences(tree: ast.AST):
    """assert statements that a difference is large, computed as |a - b| here rather
    than by numerics.assert_differ: inf - x is inf, so an inf passes."""
    for line, cmp, side in _asserted_sides(tree, smaller=False):
        if any(
            isinstance(n, ast.Call)
            and _name(n.func).split(".")[-1] in ("abs", "absolute", "fabs", "norm")
            and n.args
            and isinstance(n.args[0], ast.BinOp)
            and isinstance(n.args[0].op, ast.Sub)
            for n in ast.walk(side)
        ):
            yield line, f"use assert_differ: {ast.unparse(cmp)}"


RULES = {
    "early return": _early_returns,
    "xfail reason": _bad_xfails,
    "clock": _clock_bounds,
    "difference": _differences,
}


@functools.cache
def _parse(path: Path) -> ast.AST:  # once per session for all the rules
    return ast.parse(path.read_text(), str(path))


def _offenders(rule, paths) -> list[str]:
    return [
        f"{path.relative_to(TESTS) if path.is_relative_to(TESTS) else path}:{line}: {what}"
        for path in paths
        for line, what in sorted(RULES[rule](_parse(path)))
    ]


@pytest.mark.parametrize("rule", list(RULES))
def test_the_suite_keeps_the_rule(rule):
    paths = sorted(TESTS.rglob("*.py"))
    assert len(paths) > 50  # the suite itself was read
    offenders = _offenders(rule, paths)
    assert not offenders, f"{rule}:\n" + "\n".join(offenders)


PLANTED = {
    "early return": [
        "def test_a(x):\n    if not x:\n        return\n    assert x\n",
        "def test_b():\n    for i in range(3):\n        return None\n",
        "class TestC:\n    def test_c(self):\n        with open('f'):\n            return\n",
    ],
    "xfail reason": [
        "import pytest\n\n@pytest.mark.xfail\ndef test_a():\n    pass\n",
        "import pytest\n\n@pytest.mark.xfail(strict=True)\ndef test_a():\n    pass\n",
        "import pytest\n\n@pytest.mark.xfail(reason='flaky')\ndef test_a():\n    pass\n",
        "import pytest\n\ndef test_a():\n    pytest.xfail('broken')\n",
        "import pytest\n\ndef test_a():\n    pytest.xfail(reason='fix it')\n",
        "import pytest\n\nWHY = {'a': 'fails on the last bit until the reference is float64', "
        "'b': 'flaky'}\n\n@pytest.mark.xfail(reason=WHY['b'])\ndef test_a():\n    pass\n",
        "import pytest\n\n@pytest.mark.xfail(reason=why())\ndef test_a():\n    pass\n",
        "import pytest\n\nP = [pytest.param(1, marks=pytest.mark.xfail(reason=''))]\n",
    ],
    "clock": [
        "import time\n\ndef test_a():\n    t = time.monotonic()\n"
        "    assert time.monotonic() - t < 1.0\n",
        "def test_b(run):\n    seconds = run()\n    assert seconds < 30\n",
        "def test_c(r):\n    assert 5 > r['step_seconds'] and r['elapsed'] <= 2\n",
        "def test_d(hf_s, ours_s):\n    assert ours_s < 2 * hf_s\n",
    ],
    "difference": [
        "def test_a(got, other):\n    assert float(jnp.abs(got - other).max()) > 0.1\n",
        "def test_b(a, b):\n    assert np.isfinite(a).all() and np.abs(a - b).max() > 0\n",
        "def test_c(a, b):\n    assert 1e-3 <= np.linalg.norm(a - b)\n",
    ],
}
ALLOWED = {
    "early return": "def test_a():\n    def helper(x):\n        return x + 1\n"
    "    assert helper(1) == 2\n    f = lambda: None\n",
    "xfail reason": "import pytest\n\n"
    "@pytest.mark.xfail(reason='fails: the reference rounds half up; fixed by Z')\n"
    "def test_a():\n    pytest.xfail(f'needs {1} more until the model learns it')\n"
    "WHY = {'b': 'fails on the last bit until the reference is float64'}\n"
    "P = [pytest.param(1, marks=pytest.mark.xfail(reason=WHY['b'], strict=True))]\n",
    "clock": "def test_a(r, n):\n    assert r['wall_time'] > 0 and r['compile_s'] > 0\n"
    "    assert n < 30\n",
    # closeness bounds fail on NaN and inf: allowed
    "difference": "def test_a(x, a, b):\n    assert abs(x - 0.5) < 0.03 and 0.1 > abs(a - b)\n",
}


@pytest.mark.parametrize("rule", list(RULES))
def test_each_rule_catches_a_planted_offender(rule, tmp_path):
    for i, source in enumerate(PLANTED[rule]):
        path = tmp_path / f"test_planted_{i}.py"
        path.write_text(source)
        assert _offenders(rule, [path]), f"{rule} missed:\n{source}"
    path = tmp_path / "test_allowed.py"
    path.write_text(ALLOWED[rule])
    assert not _offenders(rule, [path])


def test_ci_runs_the_readme_test_command_strictly():
    """.ci/run exports CI=true (skips fail) and then runs exactly README.md's second
    command (the first bash block's: set up and run the tests), as its last line."""
    root = TESTS.parent
    block = re.search(r"```bash\n(.*?)```", (root / "README.md").read_text(), re.DOTALL)
    commands = [x for x in block.group(1).splitlines() if x.strip() and not x.startswith("#")]
    ci = [x for x in (root / ".ci" / "run").read_text().splitlines() if x.strip()]
    assert len(commands) == 2 and "pytest" in commands[1], commands
    assert ci[-1] == commands[1], f"{ci[-1]!r} is not the README's {commands[1]!r}"
    assert "export CI=true" in ci[: ci.index(commands[1])]


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
