"""The CLIs put XLA:CPU's matrix multiplies in oneDNN (bert_jax.perf.xla_cpu_onednn)."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.perf import bench, xla_cpu_onednn
from bert_jax.perf import profile as bench_profile
from tests.numerics import assert_close

REPO = Path(__file__).resolve().parents[1]
X86 = platform.machine().lower() in ("x86_64", "amd64")


def _mlp_grad(x, w1, w2):
    """A dense layer pair's loss and gradients: forward dots and both weight gradients."""

    def loss(w1, w2):
        return jnp.mean((jnp.tanh(x @ w1) @ w2) ** 2)

    return jax.value_and_grad(loss, argnums=(0, 1))(w1, w2)


def _dots(hlo: str) -> tuple[int, int]:
    """(dot instructions in the module, those inside a oneDNN fusion's computation)."""
    instructions = bench_profile._instructions(hlo)
    total = sum(" dot(" in line for line, _ in instructions.values())
    in_onednn = sum(
        body.count(" dot(") for line, body in instructions.values() if "__onednn_fusion" in line
    )
    return total, in_onednn


def _operands():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 128), np.float32)
    w1 = rng.standard_normal((128, 512), np.float32) * 0.05
    w2 = rng.standard_normal((512, 64), np.float32) * 0.05
    return x, w1, w2


def test_the_options_move_every_dot_to_onednn_with_the_same_numbers():
    args = _operands()
    lowered = jax.jit(_mlp_grad).lower(*args)
    onednn = lowered.compile(xla_cpu_onednn.COMPILER_OPTIONS)
    default = lowered.compile(xla_cpu_onednn.XLA_DEFAULT)
    if X86:
        # 2 forward dots, 1 input gradient (x's is not asked for) and 2 weight
        # gradients: every one inside a oneDNN fusion.
        assert _dots(onednn.as_text()) == (5, 5)
    assert _dots(default.as_text()) == (5, 0)
    (l1, g1), (l0, g0) = onednn(*args), default(*args)
    assert_close(l1, l0, rtol=1e-5, atol=1e-7)
    for a, b in zip(g1, g0, strict=True):
        assert_close(a, b, rtol=1e-4, atol=1e-6)
        assert float(jnp.max(jnp.abs(b))) > 1e-4  # gradients that are not all zero


def test_wanted_keeps_a_users_flags_and_the_opt_out():
    assert xla_cpu_onednn.wanted({}, machine="x86_64")
    assert xla_cpu_onednn.wanted({"XLA_FLAGS": "--xla_dump_to=/tmp/x"}, machine="AMD64")
    assert not xla_cpu_onednn.wanted({}, machine="aarch64")
    assert not xla_cpu_onednn.wanted({xla_cpu_onednn.OPT_OUT: "0"}, machine="x86_64")
    # JAX's persistent cache cannot hold oneDNN programs: a process that asks for it keeps it.
    assert not xla_cpu_onednn.wanted({"JAX_COMPILATION_CACHE_DIR": "/c"}, machine="x86_64")
    for users in ("--xla_cpu_use_onednn=false", "--xla_cpu_experimental_onednn_fusion_type="):
        assert not xla_cpu_onednn.wanted({"XLA_FLAGS": users}, machine="x86_64")
    assert xla_cpu_onednn.with_flags(" --a=1 ") == "--a=1 " + " ".join(xla_cpu_onednn.FLAGS)
    assert xla_cpu_onednn.enabled({"XLA_FLAGS": xla_cpu_onednn.with_flags("")})


def test_apply_refuses_once_a_backend_runs():
    jax.devices()  # this process's backend is up
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    if X86:
        with pytest.raises(RuntimeError, match="already running"):
            xla_cpu_onednn.apply(environ)
        assert environ == {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}


# A fresh process: apply() before JAX starts, then compile a dot with no options.
CHILD = """
from bert_jax.perf import xla_cpu_onednn
print(xla_cpu_onednn.apply())
import jax, jax.numpy as jnp
a = jnp.ones((64, 64))
print(jax.jit(lambda a: a @ a).lower(a).compile().as_text().count("__onednn_fusion"))
"""


def _child(**env_changes):
    drop = (xla_cpu_onednn.OPT_OUT, "JAX_COMPILATION_CACHE_DIR")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "onednn" not in f]
    env |= {"XLA_FLAGS": " ".join(flags), "JAX_PLATFORMS": "cpu"} | env_changes
    out = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    applied, fusions = out.stdout.split()
    return applied == "True", int(fusions)


@pytest.mark.skipif(not X86, reason="XLA's oneDNN path is for x86-64 CPUs")
def test_apply_before_the_backend_starts_routes_dots_to_onednn():
    assert _child() == (True, 1)
    assert _child(**{xla_cpu_onednn.OPT_OUT: "0"}) == (False, 0)


def test_bench_variants_take_xla_options():
    config, options = bench._compiler_options(
        ["model.scan_layers=True", "xla.xla_cpu_use_onednn=false", "xla.some_type=A,B"]
    )
    assert config == ["model.scan_layers=True"]
    assert options == {"xla_cpu_use_onednn": False, "some_type": "A,B"}
