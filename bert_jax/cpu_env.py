"""CPU process settings the CLIs start with: glibc's malloc and XLA:CPU's dots.

Every CLI (`bert_jax.main`, `tools.predict`, `tools.embed`, `tools.demo`,
`perf.bench`) calls `apply()` first thing, before any work and before JAX
starts a backend. It lives at the package root, in the training path's layer,
because `main` must call it and may import nothing above itself (tools/ and
perf/ sit above it; setup.cfg's import contracts).

Both settings are for XLA running on the CPU only (`cpu_backend()`:
JAX_PLATFORMS names only "cpu", or no accelerator device file is present).
On a GPU or TPU host the step's buffers live on the device and its dots run
there, so the process is left exactly as started: no restart, no new flags.

- glibc malloc tunables, read by glibc once at process start, so `apply()`
  restarts the command with them (exec: same PID, same arguments), at most
  once per process (RESTARTED holds the PID that restarted). One of:
  reused buffers (BERT_JAX_MALLOC_REUSE=0 turns it off), or huge pages where
  buffers are not reused (BERT_JAX_MALLOC_HUGEPAGES=0). Each is left out where
  it cannot help or where the user's GLIBC_TUNABLES already sets one of its
  tunables.
- XLA:CPU's dots in oneDNN through public XLA flags (ONEDNN_FLAGS, appended
  to XLA_FLAGS, which XLA reads when its first backend starts;
  BERT_JAX_XLA_CPU_ONEDNN=0 keeps XLA's default). x86-64 only, and not where
  XLA_FLAGS already names either flag (the user's value is kept) or where
  JAX_COMPILATION_CACHE_DIR is set: XLA:CPU cannot serialise a program with
  oneDNN fusions ("ToProto is not implemented for thunk kind: onednn-fusion",
  jaxlib 0.10.2), so the cache would warn and store nothing; a process that
  asked for the cache keeps it (the test suite does). A compile can still
  override the flags (`compile(compiler_options=...)`: the benchmark's `xla.`
  variants).

docs/performance.md has the step times before and after each setting.
"""

from __future__ import annotations

import glob
import os
import platform
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

# Device files of the accelerators JAX drives: NVIDIA GPUs, TPUs (v2-v3 accel, v4
# and later through VFIO), AMD GPUs.
ACCELERATORS = ("/dev/nvidia[0-9]*", "/dev/accel[0-9]*", "/dev/vfio/[0-9]*", "/dev/kfd")

# --- glibc malloc ------------------------------------------------------------
# XLA:CPU allocates a step's temporaries as one block (1.38 GB for the small
# pretraining step, strace) from one of its threads; glibc serves a block that
# large from a fresh mapping and unmaps it when the step ends, so every step
# faulted it in again (about 1,200 faults and 0.07-0.1 CPU-s zeroing memory on
# huge pages). With one arena, no mappings and no trimming the freed block stays
# in the process and the next step reuses it: no faults after the first step.
# The process keeps its peak heap until it exits, as accelerator runtimes keep
# device memory. CPU backend only: with an accelerator one arena would serialise
# the host's input threads (tf.data's, hundreds on a TPU VM) on one malloc lock.
REUSE = (
    "glibc.malloc.arena_max=1",
    "glibc.malloc.mmap_max=0",
    "glibc.malloc.trim_threshold=1099511627776",  # 1 TiB: never hand the heap back
)
# Without reuse, glibc hands large freed blocks back and the next step faults
# them in 4 KiB at a time (a 200-step tiny pretraining run: 5.7 million minor
# faults, 16 of 73 CPU-s in the kernel); on 2 MiB transparent huge pages one
# fault maps 512 pages (0.37 million faults, 7 CPU-s). With reuse they gain
# nothing in a steady step (1,078/1,085 ms with, 1,074/1,086 ms without) and cost
# while the heap grows (a growing bert-base loop: 3.42 seq/s with both, 4.38
# with reuse alone), so a process gets one of the two. glibc >= 2.35.
HUGEPAGES = ("glibc.malloc.hugetlb=1",)
# Opt-out variable ("0": leave malloc as the process was started) -> tunables;
# reuse first: huge pages only where it is not wanted.
MALLOC = {"BERT_JAX_MALLOC_REUSE": REUSE, "BERT_JAX_MALLOC_HUGEPAGES": HUGEPAGES}
MALLOC_NAMES = {HUGEPAGES: "huge pages", REUSE: "reused buffers"}
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
RESTARTED = "BERT_JAX_CPU_ENV_RESTARTED"  # the PID that restarted with the tunables

# --- XLA:CPU dots ------------------------------------------------------------
# By default (jax 0.10) XLA:CPU hands each dot to YNNPACK, except dots whose
# operands it lays out transposed, such as the weight gradients (dW = x^T dy),
# which run as plain dot thunks after a transpose. These put every dot alone
# into a oneDNN matmul: the small pretraining step (32 x 128, fp32) 2.62 s
# instead of 2.85 s on a 2-core AMD EPYC (docs/performance.md, opt/cpu-onednn),
# 1.19 s instead of 1.27 s on a family-26 EPYC (not recorded), with the same loss
# and gradients to fp32 rounding (tests/test_cpu_env.py). The fusion type `dot`
# (elementwise neighbours fused in) was as fast but crashed (SIGILL after
# oneDNN's "partition compile failed") on a two-layer tanh network's gradient.
ONEDNN_FLAGS = (
    "--xla_cpu_use_onednn=true",
    "--xla_cpu_experimental_onednn_fusion_type=individual_dot",
)
ONEDNN = "BERT_JAX_XLA_CPU_ONEDNN"  # "0": XLA's default dot libraries
_X86 = ("x86_64", "amd64")

OPT_OUTS = (*MALLOC, ONEDNN)


def cpu_backend(environ: Mapping[str, str] = os.environ, accelerators=ACCELERATORS) -> bool:
    """Whether JAX will run on the CPU: JAX_PLATFORMS is "cpu", or no accelerator is present.

    Args:
      environ: the process's environment.
      accelerators: glob patterns of accelerator device files (tests pass their own).
    """
    platforms = environ.get("JAX_PLATFORMS", "")
    if platforms:
        return all(p.strip() == "cpu" for p in platforms.split(","))
    return not any(glob.glob(pattern) for pattern in accelerators)


# --- glibc malloc ------------------------------------------------------------


def _glibc_version() -> tuple[int, int]:
    try:
        name = os.confstr("CS_GNU_LIBC_VERSION") or ""  # "glibc 2.36"
    except (ValueError, OSError):  # not glibc (musl, macOS)
        return (0, 0)
    major, _, minor = name.removeprefix("glibc ").partition(".")
    try:
        return (int(major), int(minor.split(".")[0]))
    except ValueError:
        return (0, 0)


def _thp_available() -> bool:
    try:
        mode = THP_MODE.read_text()  # "always [madvise] never": the bracketed one is set
    except OSError:
        return False
    return "[never]" not in mode


def _tunables(environ: Mapping[str, str]) -> list[str]:
    return [t for t in environ.get("GLIBC_TUNABLES", "").split(":") if t]


def _useful(tunables: tuple[str, ...]) -> bool:
    if sys.platform != "linux" or _glibc_version() < (2, 26):  # 2.26: the malloc tunables
        return False
    return tunables is REUSE or (_glibc_version() >= (2, 35) and _thp_available())


def malloc_tunables(environ: Mapping[str, str], accelerators=ACCELERATORS) -> list[str]:
    """The tunables a process started with `environ` should restart with ([]: go on)."""
    if not cpu_backend(environ, accelerators):
        return []
    tunables = _tunables(environ)
    users = {t.partition("=")[0] for t in tunables}
    reused = set(REUSE).issubset(tunables)  # a restarted process has them
    out = []
    for opt_out, group in MALLOC.items():
        if environ.get(opt_out, "1") == "0" or not _useful(group):
            continue
        if group is HUGEPAGES and (reused or REUSE[0] in out):
            continue
        if users.isdisjoint(t.partition("=")[0] for t in group):  # else: the user chose
            out += group
    return out


def malloc_settings(environ: Mapping[str, str]) -> list[str]:
    """The settings a process started with `environ` has ("huge pages", "reused buffers")."""
    present = set(_tunables(environ))
    return [MALLOC_NAMES[t] for t in (HUGEPAGES, REUSE) if present.issuperset(t)]


def with_malloc_tunables(environ: Mapping[str, str], accelerators=ACCELERATORS) -> dict[str, str]:
    """`environ` with the wanted tunables added to GLIBC_TUNABLES."""
    env = dict(environ)
    wanted = malloc_tunables(environ, accelerators)
    if wanted:
        env["GLIBC_TUNABLES"] = ":".join(_tunables(environ) + wanted)
    return env


def without_malloc_tunables(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` as a process with glibc's default malloc gets it (other tunables kept)."""
    env = dict(environ)
    ours = {t for group in MALLOC.values() for t in group}
    kept = [t for t in _tunables(env) if t not in ours]
    env.pop("GLIBC_TUNABLES", None)
    if kept:
        env["GLIBC_TUNABLES"] = ":".join(kept)
    return env


# --- XLA:CPU dots ------------------------------------------------------------


def xla_flags(
    environ: Mapping[str, str], machine: str | None = None, accelerators=ACCELERATORS
) -> list[str]:
    """The XLA_FLAGS a process with `environ` on `machine` should add ([]: none)."""
    if not cpu_backend(environ, accelerators) or environ.get(ONEDNN, "1") == "0":
        return []
    given = environ.get("XLA_FLAGS", "")
    if any(f.split("=")[0] in given for f in ONEDNN_FLAGS):
        return []  # the user chose; keep it
    if environ.get("JAX_COMPILATION_CACHE_DIR"):
        return []  # oneDNN programs cannot be cached; the cache was asked for
    if (machine or platform.machine()).lower() not in _X86:
        return []  # XLA's oneDNN path is built for x86-64
    return list(ONEDNN_FLAGS)


def onednn_dots(environ: Mapping[str, str]) -> bool:
    """Whether XLA_FLAGS routes a process's CPU dots to oneDNN (as `apply` sets them)."""
    return all(f in environ.get("XLA_FLAGS", "").split() for f in ONEDNN_FLAGS)


def _backend_started() -> bool:
    # jax has no public "has a backend started?" query (jax.extend.backend.backends()
    # starts them), so this one private call; XLA_FLAGS set after the start would be
    # silently ignored. Without jax imported, nothing has started.
    xla_bridge = sys.modules.get("jax._src.xla_bridge")
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(started and started())


# --- the entry point ---------------------------------------------------------


def apply(
    argv: Sequence[str] | None = None,
    environ: MutableMapping[str, str] = os.environ,
    accelerators=ACCELERATORS,
) -> list[str]:
    """Start this process with the CPU settings: call first thing in a CLI's `__main__`.

    Restarts the command (`argv`, default `sys.orig_argv`: the command as typed,
    interpreter options and `-m` included) when malloc tunables are wanted and
    this process has not restarted yet; then appends the XLA flags. Does nothing
    unless JAX will run on the CPU.

    Returns:
      The settings this process runs with ("reused buffers", "oneDNN dots", ...).
    """
    restart(argv, environ, accelerators)
    set_xla_flags(environ, accelerators)
    return malloc_settings(environ) + ["oneDNN dots"] * onednn_dots(environ)


def restart(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] = os.environ,
    accelerators=ACCELERATORS,
) -> None:
    """Restart the command with the wanted malloc tunables, at most once; else return."""
    if not malloc_tunables(environ, accelerators) or environ.get(RESTARTED) == str(os.getpid()):
        return
    env = with_malloc_tunables(environ, accelerators) | {RESTARTED: str(os.getpid())}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, list(argv or sys.orig_argv), env)


def set_xla_flags(
    environ: MutableMapping[str, str] = os.environ, accelerators=ACCELERATORS
) -> None:
    """Append `xla_flags(environ)` to environ's XLA_FLAGS; before JAX starts a backend."""
    flags = xla_flags(environ, accelerators=accelerators)
    if not flags:
        return
    if _backend_started():
        raise RuntimeError(
            "bert_jax.cpu_env runs before JAX starts a backend; one is already running, "
            "so XLA_FLAGS would be ignored"
        )
    environ["XLA_FLAGS"] = " ".join([environ.get("XLA_FLAGS", "").strip(), *flags]).strip()
