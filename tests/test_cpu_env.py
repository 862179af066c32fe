"""The CLIs' CPU settings (bert_jax.cpu_env): glibc malloc tunables and oneDNN dots.

Applied only where JAX runs on the CPU; on an accelerator host the process is
left as it started.
"""

import os
import platform
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import cpu_env
from bert_jax.perf import profile as bench_profile
from tests.numerics import assert_close, assert_differ

REPO = Path(__file__).resolve().parents[1]
X86 = platform.machine().lower() in ("x86_64", "amd64")
HUGEPAGES, REUSE = cpu_env.HUGEPAGES, cpu_env.REUSE
OTHER = "glibc.malloc.perturb=0"  # a tunable of the user's (perturb 0 changes nothing)
CPU = {"JAX_PLATFORMS": "cpu"}
GLIBC = REUSE[0] in cpu_env.malloc_tunables(CPU)  # Linux with glibc >= 2.26

# --- glibc malloc ------------------------------------------------------------

# The child notes each start in a file, applies the settings (restarting itself,
# or not), then through ctypes (numpy asks for huge pages on its own large arrays,
# XLA and tf.data buffers do not):
# - fills a 256 MiB block from glibc's malloc and reports how much of its memory
#   is on huge pages;
# - in a thread of its own, as XLA:CPU allocates a step's temporaries, fills and
#   frees a 256 MiB block twice, and reports the minor page faults of the second
#   time (0 when the first block's memory is reused);
# - reports its PID, GLIBC_TUNABLES and XLA_FLAGS.
MALLOC_CHILD = """
import ctypes, os, resource, sys, threading
open(sys.argv[1], "a").write("start\\n")
from bert_jax import cpu_env
cpu_env.apply()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 2**28
block = libc.malloc(size)
ctypes.memset(block, 1, size)
huge_kib = 0
for line in open("/proc/self/smaps_rollup"):
    if line.startswith("AnonHugePages:"):
        huge_kib = int(line.split()[1])
last = ctypes.string_at(block + size - 1, 1)[0]
faults = []
def step():
    for _ in range(2):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        b = libc.malloc(size)
        ctypes.memset(b, 2, size)
        libc.free(b)
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
t = threading.Thread(target=step)
t.start()
t.join()
print(os.getpid(), os.environ.get("GLIBC_TUNABLES", "") or "-", huge_kib, faults[1], last)
print(os.environ.get("XLA_FLAGS", ""))
"""


def _env(**changes) -> dict[str, str]:
    # The session's compilation cache would keep oneDNN out (cpu_env.xla_flags).
    drop = ("GLIBC_TUNABLES", "XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR", cpu_env.RESTARTED)
    drop += cpu_env.OPT_OUTS
    return {k: v for k, v in os.environ.items() if k not in drop} | CPU | changes


def _malloc_child(tmp_path, **env_changes):
    starts = tmp_path / f"starts-{len(list(tmp_path.iterdir()))}"
    proc = subprocess.Popen(
        [sys.executable, "-c", MALLOC_CHILD, str(starts)],
        cwd=REPO,
        env=_env(**env_changes),
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    first, xla_flags = (out.splitlines() + [""])[:2]
    pid, tunables, huge_kib, faults, last_byte = first.split()
    assert last_byte == "1"  # the block was really written
    assert int(pid) == proc.pid  # exec, not a child process: signals and kill -9 still reach it
    tunables = "" if tunables == "-" else tunables
    return {
        "starts": len(starts.read_text().splitlines()),
        "tunables": tunables,
        "huge_kib": int(huge_kib),
        "faults": int(faults),
        "xla_flags": xla_flags,
    }


def test_the_cpu_backend_restarts_once_with_reused_buffers(tmp_path):
    run = _malloc_child(tmp_path)
    wanted = cpu_env.malloc_tunables(_env())
    assert run["tunables"] == ":".join(wanted)
    assert run["starts"] == (2 if wanted else 1)  # one restart at most
    if REUSE[0] in wanted:
        # The freed block stayed in the process: the thread's second one faulted
        # nothing in (4 KiB pages: 65,536 faults; huge pages: 128).
        assert run["faults"] < 16, run["faults"]
        # One setting a process: with reused buffers, no huge pages.
        assert cpu_env.malloc_settings({"GLIBC_TUNABLES": run["tunables"]}) == ["reused buffers"]
    assert cpu_env.onednn_dots({"XLA_FLAGS": run["xla_flags"]}) == X86


@pytest.mark.parametrize("platforms", ["cuda", "tpu", "cuda,cpu"])
def test_an_accelerator_host_is_left_as_it_started(tmp_path, platforms):
    run = _malloc_child(tmp_path, JAX_PLATFORMS=platforms, GLIBC_TUNABLES=OTHER)
    assert run["starts"] == 1  # no restart
    assert run["tunables"] == OTHER  # environment untouched
    assert run["xla_flags"] == ""


def test_a_device_file_means_an_accelerator(tmp_path):
    devices = (str(tmp_path / "nvidia[0-9]*"),)
    assert cpu_env.cpu_backend({}, accelerators=devices)
    assert not cpu_env.cpu_backend({"JAX_PLATFORMS": "cuda"}, accelerators=devices)
    wanted = cpu_env.malloc_tunables({}, accelerators=devices)
    assert wanted == cpu_env.malloc_tunables(CPU)
    assert cpu_env.xla_flags({}, "x86_64", devices) == list(cpu_env.ONEDNN_FLAGS)
    (tmp_path / "nvidia0").touch()
    assert not cpu_env.cpu_backend({}, accelerators=devices)
    assert cpu_env.cpu_backend(CPU, accelerators=devices)  # the user asked for the CPU
    assert cpu_env.malloc_tunables({}, accelerators=devices) == []
    assert cpu_env.xla_flags({}, "x86_64", devices) == []
    environ = {"GLIBC_TUNABLES": OTHER}
    assert cpu_env.apply(["unused"], environ, devices) == []  # no restart: it returned
    assert environ == {"GLIBC_TUNABLES": OTHER}


def test_each_opt_out_turns_off_its_own_setting(tmp_path):
    run = _malloc_child(tmp_path, BERT_JAX_MALLOC_REUSE="0")
    assert REUSE[0] not in run["tunables"]
    assert run["faults"] >= 64, run["faults"]  # without reuse the block is faulted in afresh
    if cpu_env.malloc_tunables(CPU | {"BERT_JAX_MALLOC_REUSE": "0"}):  # glibc >= 2.35, THP on
        assert run["tunables"] == ":".join(HUGEPAGES)  # huge pages where buffers are not reused
        assert run["huge_kib"] >= 128 * 1024  # most of the 256 MiB buffer
    run = _malloc_child(tmp_path, BERT_JAX_MALLOC_HUGEPAGES="0")
    wanted = cpu_env.malloc_tunables(_env())
    assert run["tunables"] == ":".join(t for t in wanted if t not in HUGEPAGES)
    thp = cpu_env.THP_MODE
    if thp.exists() and "[madvise]" in thp.read_text():
        # Huge pages only where malloc asks for them: the opt-out run has none.
        assert run["huge_kib"] < 16 * 1024
    run = _malloc_child(
        tmp_path,
        BERT_JAX_MALLOC_HUGEPAGES="0",
        BERT_JAX_MALLOC_REUSE="0",
        BERT_JAX_XLA_CPU_ONEDNN="0",
    )
    assert (run["starts"], run["tunables"], run["xla_flags"]) == (1, "", "")


def test_a_users_own_value_keeps_that_setting_out(tmp_path):
    run = _malloc_child(tmp_path, GLIBC_TUNABLES="glibc.malloc.hugetlb=0")
    assert run["tunables"].split(":")[0] == "glibc.malloc.hugetlb=0"
    assert HUGEPAGES[0] not in run["tunables"]
    env = CPU | {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}  # one of REUSE's: it stays out
    assert not set(REUSE) & set(cpu_env.malloc_tunables(env))
    env = cpu_env.with_malloc_tunables(env)
    assert cpu_env.malloc_tunables(env) == []  # set once: the restarted process goes on
    assert "reused buffers" not in cpu_env.malloc_settings(env)


def test_the_restart_happens_at_most_once(monkeypatch):
    if not GLIBC:
        pytest.skip("not Linux with glibc: nothing to restart with")
    execs = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: execs.append(env))
    cpu_env.restart(["python", "-m", "bert_jax.main"], dict(CPU))
    (env,) = execs
    assert env[cpu_env.RESTARTED] == str(os.getpid())
    cpu_env.restart(["python"], env)  # the restarted process: its tunables are set
    # Even were the tunables lost on the way (glibc drops them for setuid programs),
    # this process restarted once already.
    cpu_env.restart(["python"], {k: v for k, v in env.items() if k != "GLIBC_TUNABLES"})
    assert len(execs) == 1
    # Another process (a CLI run started from this one) may restart, once.
    cpu_env.restart(["python"], {**CPU, cpu_env.RESTARTED: "1"})
    assert len(execs) == 2


def test_without_malloc_tunables_keeps_the_others():
    env = {"GLIBC_TUNABLES": ":".join((OTHER, *HUGEPAGES, *REUSE)), "X": "1"}
    assert cpu_env.without_malloc_tunables(env) == {"GLIBC_TUNABLES": OTHER, "X": "1"}
    assert cpu_env.without_malloc_tunables({"GLIBC_TUNABLES": ":".join(REUSE)}) == {}
    assert cpu_env.malloc_settings(env) == ["huge pages", "reused buffers"]
    assert cpu_env.malloc_settings({}) == []
    if cpu_env.malloc_tunables(CPU) == [*REUSE]:
        env = CPU | {"GLIBC_TUNABLES": ":".join((OTHER, *REUSE)), "X": "1"}
        assert cpu_env.with_malloc_tunables(cpu_env.without_malloc_tunables(env)) == env


# --- XLA:CPU dots ------------------------------------------------------------

# ONEDNN_FLAGS as per-compile options, and XLA's own defaults for them.
ONEDNN_OPTIONS = {
    "xla_cpu_use_onednn": True,
    "xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
}
XLA_DEFAULT = {"xla_cpu_use_onednn": False, "xla_cpu_experimental_onednn_fusion_type": ""}


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


def test_onednn_takes_every_dot_with_the_same_numbers():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 128), np.float32)
    w1 = rng.standard_normal((128, 512), np.float32) * 0.05
    w2 = rng.standard_normal((512, 64), np.float32) * 0.05
    lowered = jax.jit(_mlp_grad).lower(x, w1, w2)
    onednn = lowered.compile(ONEDNN_OPTIONS)
    default = lowered.compile(XLA_DEFAULT)
    if X86:
        # 2 forward dots, 1 input gradient (x's is not asked for) and 2 weight
        # gradients: every one inside a oneDNN fusion.
        assert _dots(onednn.as_text()) == (5, 5)
    assert _dots(default.as_text()) == (5, 0)
    (l1, g1), (l0, g0) = onednn(x, w1, w2), default(x, w1, w2)
    assert_close(l1, l0, rtol=1e-5, atol=1e-7)
    for a, b in zip(g1, g0, strict=True):
        assert_close(a, b, rtol=1e-4, atol=1e-6)
        assert_differ(b, 0.0, atol=1e-4)  # gradients that are not all zero


def test_xla_flags_keep_a_users_flags_the_cache_and_the_opt_out():
    flags = list(cpu_env.ONEDNN_FLAGS)
    assert cpu_env.xla_flags(CPU, machine="x86_64") == flags
    assert cpu_env.xla_flags(CPU | {"XLA_FLAGS": "--xla_dump_to=/x"}, machine="AMD64") == flags
    assert cpu_env.xla_flags(CPU, machine="aarch64") == []
    assert cpu_env.xla_flags(CPU | {cpu_env.ONEDNN: "0"}, machine="x86_64") == []
    # JAX's persistent cache cannot hold oneDNN programs: a process that asks for it keeps it.
    assert cpu_env.xla_flags(CPU | {"JAX_COMPILATION_CACHE_DIR": "/c"}, machine="x86_64") == []
    for users in ("--xla_cpu_use_onednn=false", "--xla_cpu_experimental_onednn_fusion_type="):
        assert cpu_env.xla_flags(CPU | {"XLA_FLAGS": users}, machine="x86_64") == []
    assert cpu_env.onednn_dots({"XLA_FLAGS": "--a=1 " + " ".join(flags)})
    assert not cpu_env.onednn_dots({"XLA_FLAGS": flags[0]})


def test_setting_the_flags_refuses_once_a_backend_runs():
    jax.devices()  # this process's backend is up
    environ = CPU | {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    if X86:
        with pytest.raises(RuntimeError, match="already running"):
            cpu_env.set_xla_flags(environ)
    assert environ == CPU | {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}


# A fresh process: apply() before JAX starts, then compile a dot with no options.
ONEDNN_CHILD = """
from bert_jax import cpu_env
print("oneDNN dots" in cpu_env.apply())
import jax, jax.numpy as jnp
a = jnp.ones((64, 64))
print(jax.jit(lambda a: a @ a).lower(a).compile().as_text().count("__onednn_fusion"))
"""


def _onednn_child(**env_changes):
    out = subprocess.run(
        [sys.executable, "-c", ONEDNN_CHILD],
        cwd=REPO,
        env=_env(**env_changes),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    applied, fusions = out.stdout.split()
    return applied == "True", int(fusions)


@pytest.mark.skipif(not X86, reason="XLA's oneDNN path is for x86-64 CPUs")
def test_apply_before_the_backend_starts_routes_dots_to_onednn():
    assert _onednn_child() == (True, 1)
    assert _onednn_child(**{cpu_env.ONEDNN: "0"}) == (False, 0)


def test_bench_variants_override_the_flags_per_compile():
    from bert_jax.perf import bench  # the training stack: only here

    config, options = bench._compiler_options(
        ["model.scan_layers=True", "xla.xla_cpu_use_onednn=false", "xla.some_type=A,B"]
    )
    assert config == ["model.scan_layers=True"]
    assert options == {"xla_cpu_use_onednn": False, "some_type": "A,B"}
