"""glibc malloc tunables the CLIs restart with, set before a process does any work.

On a CPU host, XLA:CPU, tf.data and PyTorch allocate and free step-sized
buffers every step. Two settings, each with its own opt-out; a process gets one:

- Huge pages (`glibc.malloc.hugetlb=1`, glibc >= 2.35; BERT_JAX_MALLOC_HUGEPAGES=0
  turns it off), where buffers are not reused (below). glibc hands large freed
  blocks back to the kernel, and the next step faults them in again 4 KiB at a
  time: a 200-step tiny pretraining run took 5.7 million minor page faults and
  spent 16 of its 73 CPU-seconds in the kernel; with malloc's memory on 2 MiB
  transparent huge pages, one fault maps 512 pages: 0.37 million faults and 7
  CPU-seconds in the kernel.
- Reused buffers (`glibc.malloc.arena_max=1`, `mmap_max=0`, a trim threshold of
  1 TiB; BERT_JAX_MALLOC_REUSE=0 turns it off). XLA:CPU allocates a step's
  temporaries as one block (1.38 GB for the small pretraining step, strace) from
  one of its threads. glibc serves a block that large from a fresh mapping
  whatever the thresholds, since a thread's own arena cannot hold it, and unmaps
  it when the step ends: even on huge pages, about 1,200 faults and 0.07-0.1
  CPU-seconds in the kernel zeroing memory every step. With one arena (every
  thread in the main heap), no mappings and no trimming, the freed block stays in
  the process and the next step reuses it: no faults at all after the first step.
  The process keeps its peak heap until it exits, which is what accelerator
  runtimes do with device memory. Only where XLA runs on the CPU (JAX_PLATFORMS
  is "cpu", or no accelerator device is present): with an accelerator the step's
  buffers live on the device, and one arena would serialise the host's input
  threads (tf.data's, on a TPU VM with hundreds of cores) on one malloc lock.
  With buffers reused, huge pages gain nothing in a steady step (the small step
  1,078/1,085 ms with them, 1,074/1,086 ms without) and cost while the heap
  grows, most likely the kernel compacting memory for each new 2 MiB page (a
  bert-base loop that keeps its old parameters, so its heap grows, ran 3.42
  sequences/s with both, 4.38 with reused buffers alone; kernel time 18.7 s
  against 6.2 s).

docs/performance.md has the step times before and after each. Tunables are read
once when a process starts, so `reexec()` restarts the current command with them
added to GLIBC_TUNABLES (same PID, same arguments), before it does any work. A
setting is left out where it cannot help (not Linux with glibc, huge pages without
glibc >= 2.35 or with transparent huge pages off), when the user's GLIBC_TUNABLES
already sets one of its tunables, or when its opt-out variable is "0".
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Mapping
from pathlib import Path

HUGEPAGES = ("glibc.malloc.hugetlb=1",)
REUSE = (
    "glibc.malloc.arena_max=1",
    "glibc.malloc.mmap_max=0",
    "glibc.malloc.trim_threshold=1099511627776",  # 1 TiB: never hand the heap back
)
# Opt-out variable ("0": leave this setting as the process was started) -> tunables;
# reuse first: huge pages only where it is not wanted.
SETTINGS = {"BERT_JAX_MALLOC_REUSE": REUSE, "BERT_JAX_MALLOC_HUGEPAGES": HUGEPAGES}
NAMES = {HUGEPAGES: "huge pages", REUSE: "reused buffers"}
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
# Device files of the accelerators JAX drives: NVIDIA GPUs, TPUs (v2-v3 accel, v4
# and later through VFIO), AMD GPUs.
ACCELERATORS = ("/dev/nvidia[0-9]*", "/dev/accel[0-9]*", "/dev/vfio/[0-9]*", "/dev/kfd")


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


def _xla_on_cpu(environ: Mapping[str, str]) -> bool:
    platforms = environ.get("JAX_PLATFORMS", "")
    if platforms:
        return all(p.strip() == "cpu" for p in platforms.split(","))
    return not any(glob.glob(pattern) for pattern in ACCELERATORS)


def _useful(tunables: tuple[str, ...], environ: Mapping[str, str]) -> bool:
    if sys.platform != "linux" or _glibc_version() < (2, 26):  # 2.26: the malloc tunables
        return False
    if tunables is REUSE:
        return _xla_on_cpu(environ)
    return _glibc_version() >= (2, 35) and _thp_available()


def enabled(environ: Mapping[str, str]) -> list[str]:
    """The settings a process started with `environ` has ("huge pages", ...)."""
    present = set(_tunables(environ))
    return [NAMES[t] for t in (HUGEPAGES, REUSE) if present.issuperset(t)]


def wanted(environ: Mapping[str, str]) -> list[str]:
    """The tunables a process started with `environ` should restart with ([]: go on)."""
    users = {t.partition("=")[0] for t in _tunables(environ)}
    reused = set(REUSE).issubset(_tunables(environ))  # a restarted process has them
    out = []
    for opt_out, tunables in SETTINGS.items():
        if environ.get(opt_out, "1") == "0" or not _useful(tunables, environ):
            continue
        if tunables is HUGEPAGES and (reused or REUSE[0] in out):
            continue
        if users.isdisjoint(t.partition("=")[0] for t in tunables):  # else: the user chose
            out += tunables
    return out


def with_tunables(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` with the wanted tunables added to GLIBC_TUNABLES."""
    env = dict(environ)
    env["GLIBC_TUNABLES"] = ":".join(_tunables(environ) + wanted(environ))
    return env


def without_tunables(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` as a process with glibc's default malloc gets it (other tunables kept)."""
    env = dict(environ)
    ours = {t for tunables in SETTINGS.values() for t in tunables}
    kept = [t for t in _tunables(env) if t not in ours]
    env.pop("GLIBC_TUNABLES", None)
    if kept:
        env["GLIBC_TUNABLES"] = ":".join(kept)
    return env


def reexec() -> None:
    """Restart this command with the wanted tunables, when there are any; else return."""
    if not wanted(os.environ):
        return
    # sys.orig_argv is the command as typed, interpreter options and `-m` included.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, with_tunables(os.environ))
