"""Transparent huge pages for glibc's malloc, set before a CLI process does any work.

On a CPU host, XLA:CPU, tf.data and PyTorch allocate and free step-sized
buffers every step. glibc hands large freed blocks back to the kernel, and the
next step faults them in again 4 KiB at a time: a 200-step tiny pretraining run
took 5.7 million minor page faults and spent 16 of its 73 CPU-seconds in the
kernel; the small pretraining benchmark step faulted in about 1.4 GB per step.
glibc 2.35 added the tunable `glibc.malloc.hugetlb=1`, which advises the kernel
to back malloc's memory with 2 MiB transparent huge pages, so one fault maps
512 pages: the same run then took 0.37 million faults and 7 CPU-seconds in the
kernel (docs/performance.md has the step times, before and after).

Tunables are read once when a process starts, so `reexec()` restarts the
current command with the tunable added to GLIBC_TUNABLES (same PID, same
arguments), before it does any work. It does nothing where the tunable cannot
help (not Linux with glibc >= 2.35, transparent huge pages off), when the
variable already sets `glibc.malloc.hugetlb`, or when BERT_JAX_MALLOC_HUGEPAGES=0.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "BERT_JAX_MALLOC_HUGEPAGES"  # "0": leave the process as it was started
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


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


def enabled(environ: Mapping[str, str]) -> bool:
    """Whether this process's malloc was started with huge pages."""
    return TUNABLE in environ.get("GLIBC_TUNABLES", "").split(":")


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether a process started with `environ` should restart with the tunable."""
    if environ.get(OPT_OUT, "1") == "0":
        return False
    if "glibc.malloc.hugetlb=" in environ.get("GLIBC_TUNABLES", ""):
        return False  # the user chose a value; keep it
    return sys.platform == "linux" and _glibc_version() >= (2, 35) and _thp_available()


def with_tunable(environ: Mapping[str, str]) -> dict[str, str]:
    env = dict(environ)
    env["GLIBC_TUNABLES"] = ":".join(t for t in (env.get("GLIBC_TUNABLES", ""), TUNABLE) if t)
    return env


def without_tunable(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` as a process with glibc's default malloc gets it (other tunables kept)."""
    env = dict(environ)
    kept = [t for t in env.pop("GLIBC_TUNABLES", "").split(":") if t and t != TUNABLE]
    if kept:
        env["GLIBC_TUNABLES"] = ":".join(kept)
    return env


def reexec() -> None:
    """Restart this command with malloc on huge pages, when that helps; else return."""
    if not wanted(os.environ):
        return
    # sys.orig_argv is the command as typed, interpreter options and `-m` included.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, with_tunable(os.environ))
