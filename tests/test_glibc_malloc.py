"""The CLIs restart with glibc malloc tunables: huge pages, reused buffers (glibc_malloc)."""

import os
import subprocess
import sys
from pathlib import Path

from bert_jax.perf import glibc_malloc

REPO = Path(__file__).resolve().parents[1]
HUGEPAGES, REUSE = glibc_malloc.HUGEPAGES, glibc_malloc.REUSE
OTHER = "glibc.malloc.perturb=0"  # a tunable of the user's (perturb 0 changes nothing)

# The child restarts itself (or not), then through ctypes (numpy asks for huge
# pages on its own large arrays, XLA and tf.data buffers do not):
# - fills a 256 MiB block from glibc's malloc and reports how much of its memory
#   is on huge pages;
# - in a thread of its own, as XLA:CPU allocates a step's temporaries, fills and
#   frees a 256 MiB block twice, and reports the minor page faults of the second
#   time (0 when the first block's memory is reused);
# - reports its PID and GLIBC_TUNABLES.
CHILD = """
import ctypes, os, resource, threading
from bert_jax.perf import glibc_malloc
glibc_malloc.reexec()
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
"""


def _env(**changes) -> dict[str, str]:
    drop = ("GLIBC_TUNABLES", *glibc_malloc.SETTINGS)
    return {k: v for k, v in os.environ.items() if k not in drop} | changes


def _child(**env_changes):
    env = _env(**env_changes)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    pid, tunables, huge_kib, faults, last_byte = out.split()
    assert last_byte == "1"  # the block was really written
    tunables = "" if tunables == "-" else tunables
    return proc.pid, int(pid), tunables, int(huge_kib), int(faults)


def test_restart_adds_the_tunables_in_the_same_process():
    started_pid, pid, tunables, huge_kib, faults = _child()
    assert pid == started_pid  # exec, not a child process: signals and kill -9 still reach it
    wanted = glibc_malloc.wanted(_env())
    assert tunables == ":".join(wanted)
    if REUSE[0] in wanted:
        # The freed block stayed in the process: the thread's second one faulted
        # nothing in (4 KiB pages: 65,536 faults; huge pages: 128).
        assert faults < 16, faults
        # One setting a process: with reused buffers, no huge pages.
        assert glibc_malloc.enabled({"GLIBC_TUNABLES": tunables}) == ["reused buffers"]
    elif HUGEPAGES[0] in wanted:  # an accelerator host
        assert huge_kib >= 128 * 1024  # most of the 256 MiB buffer


def test_each_opt_out_turns_off_its_own_setting():
    _, _, tunables, huge_kib, faults = _child(BERT_JAX_MALLOC_REUSE="0")
    assert REUSE[0] not in tunables
    assert faults >= 64, faults  # without reuse the block is mapped afresh and faulted in
    if glibc_malloc.wanted({"BERT_JAX_MALLOC_REUSE": "0"}):  # glibc >= 2.35, THP on
        assert tunables == ":".join(HUGEPAGES)  # huge pages where buffers are not reused
        assert huge_kib >= 128 * 1024  # most of the 256 MiB buffer
    _, _, tunables, huge_kib, _ = _child(BERT_JAX_MALLOC_HUGEPAGES="0")
    assert tunables == ":".join(t for t in glibc_malloc.wanted(_env()) if t not in HUGEPAGES)
    thp = glibc_malloc.THP_MODE
    if thp.exists() and "[madvise]" in thp.read_text():
        # Huge pages only where malloc asks for them: the opt-out run has none.
        assert huge_kib < 16 * 1024
    _, _, tunables, _, _ = _child(BERT_JAX_MALLOC_HUGEPAGES="0", BERT_JAX_MALLOC_REUSE="0")
    assert tunables == ""


def test_a_users_own_value_keeps_that_setting_out():
    _, _, tunables, _, _ = _child(GLIBC_TUNABLES="glibc.malloc.hugetlb=0")
    assert tunables.split(":")[0] == "glibc.malloc.hugetlb=0"
    assert HUGEPAGES[0] not in tunables
    env = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}  # one of REUSE's: the group stays out
    assert not set(REUSE) & set(glibc_malloc.wanted(env))
    env = glibc_malloc.with_tunables(env)
    assert glibc_malloc.wanted(env) == []  # set once: the restarted process goes on
    assert "reused buffers" not in glibc_malloc.enabled(env)


def test_without_tunables_keeps_the_others():
    env = {"GLIBC_TUNABLES": ":".join((OTHER, *HUGEPAGES, *REUSE)), "X": "1"}
    assert glibc_malloc.without_tunables(env) == {"GLIBC_TUNABLES": OTHER, "X": "1"}
    assert glibc_malloc.without_tunables({"GLIBC_TUNABLES": ":".join(REUSE)}) == {}
    assert glibc_malloc.enabled(env) == ["huge pages", "reused buffers"]
    assert glibc_malloc.enabled({}) == []
    if glibc_malloc.wanted(_env()) == [*REUSE]:
        env = {"GLIBC_TUNABLES": ":".join((OTHER, *REUSE)), "X": "1"}
        assert glibc_malloc.with_tunables(glibc_malloc.without_tunables(env)) == env


def test_reused_buffers_only_where_xla_runs_on_the_cpu(tmp_path, monkeypatch):
    if REUSE[0] not in glibc_malloc.wanted({"JAX_PLATFORMS": "cpu"}):
        return  # not Linux with glibc: nothing is ever wanted
    assert REUSE[0] not in glibc_malloc.wanted({"JAX_PLATFORMS": "tpu"})
    assert REUSE[0] not in glibc_malloc.wanted({"JAX_PLATFORMS": "cuda,cpu"})
    # Without JAX_PLATFORMS, an accelerator's device file keeps reuse out.
    gpu = tmp_path / "nvidia0"
    monkeypatch.setattr(glibc_malloc, "ACCELERATORS", (str(tmp_path / "nvidia[0-9]*"),))
    assert REUSE[0] in glibc_malloc.wanted({})
    gpu.touch()
    # Huge pages instead, where they can help.
    assert glibc_malloc.wanted({}) == glibc_malloc.wanted({"BERT_JAX_MALLOC_REUSE": "0"})
