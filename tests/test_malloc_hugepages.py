"""The CLIs restart with glibc's malloc on transparent huge pages (bert_jax.malloc_hugepages)."""

import os
import subprocess
import sys
from pathlib import Path

from bert_jax import malloc_hugepages

REPO = Path(__file__).resolve().parents[1]

# The child restarts itself (or not), then fills a 256 MiB block from glibc's
# malloc (through ctypes: numpy already asks for huge pages on its own large
# arrays, XLA and tf.data buffers do not) and reports its PID, its
# GLIBC_TUNABLES and how much of its memory is on huge pages.
CHILD = """
import ctypes, os
from bert_jax import malloc_hugepages
malloc_hugepages.reexec()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
size = 2**28
block = libc.malloc(size)
ctypes.memset(block, 1, size)
huge_kib = 0
for line in open("/proc/self/smaps_rollup"):
    if line.startswith("AnonHugePages:"):
        huge_kib = int(line.split()[1])
last = ctypes.string_at(block + size - 1, 1)[0]
print(os.getpid(), os.environ.get("GLIBC_TUNABLES", ""), huge_kib, last)
"""


def _child(**env_changes):
    drop = ("GLIBC_TUNABLES", malloc_hugepages.OPT_OUT)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env |= env_changes
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    pid, *tunables, huge_kib, last_byte = out.split()
    assert last_byte == "1"  # the block was really written
    return proc.pid, int(pid), "".join(tunables), int(huge_kib)


def test_restart_adds_the_tunable_in_the_same_process_and_backs_malloc_with_huge_pages():
    started_pid, pid, tunables, huge_kib = _child()
    assert pid == started_pid  # exec, not a child process: signals and kill -9 still reach it
    if malloc_hugepages.wanted({}):
        assert tunables == malloc_hugepages.TUNABLE
        assert huge_kib >= 128 * 1024  # most of the 256 MiB buffer
    else:  # no glibc >= 2.35 or transparent huge pages off: nothing to gain, no restart
        assert tunables == ""


def test_opt_out_and_a_users_own_value_are_kept():
    _, _, tunables, huge_kib = _child(**{malloc_hugepages.OPT_OUT: "0"})
    assert tunables == ""
    thp = malloc_hugepages.THP_MODE
    if thp.exists() and "[madvise]" in thp.read_text():
        # Huge pages only where malloc asks for them: the opt-out run has none.
        assert huge_kib < 16 * 1024
    _, _, tunables, _ = _child(GLIBC_TUNABLES="glibc.malloc.hugetlb=0")
    assert tunables == "glibc.malloc.hugetlb=0"
    env = malloc_hugepages.with_tunable({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert malloc_hugepages.enabled(env)
    assert not malloc_hugepages.wanted(env)  # set once: the restarted process goes on


def test_without_tunable_keeps_the_others():
    env = {"GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{malloc_hugepages.TUNABLE}", "X": "1"}
    assert malloc_hugepages.without_tunable(env) == {
        "GLIBC_TUNABLES": "glibc.malloc.arena_max=2",
        "X": "1",
    }
    assert malloc_hugepages.without_tunable({"GLIBC_TUNABLES": malloc_hugepages.TUNABLE}) == {}
    assert malloc_hugepages.with_tunable(malloc_hugepages.without_tunable(env)) == env
