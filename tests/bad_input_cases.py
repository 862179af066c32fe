"""The bad-input catalogue's harness: a case builds its bad input, then calls the code.

Each case is `make(tmp_path) -> (call, bad_path)`: `make` writes the bad input
(and anything good it needs) under `tmp_path`; `call()` runs the public
function a command runs and must raise. `check` then asserts the exception
type, that its message matches the case's regex (where "{path}" stands for
the bad file, escaped), that `tmp_path` holds exactly what it held before
`call()` (every path and the sha256 of every file: no partial output, no
debris, nothing rewritten) and that `call()` traced and compiled nothing
(`count_compiles`). docs/bad_input.md lists every case.

`run_command` runs a case's command (`python -m ...`) as a user would, in a
fresh working directory with its own TMPDIR and an empty XLA compilation
cache: exit status 1, one `<prog>: error: <message>` line, no traceback, the
case's folder, the working directory and TMPDIR byte for byte as before, and
(`compiles=False`) no program compiled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli_env import cli_env

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Case:
    make: Callable[[Path], tuple[Callable[[], object], Path | str]]
    error: type[BaseException]
    message: str  # a regex; "{path}" is replaced by the escaped bad path


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` with the sha256 of its content, and every folder ("dir")."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            if os.path.islink(p) or not os.path.isfile(p):
                out[os.path.relpath(p, root)] = "not a file"
                continue
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.file_digest(fh, "sha256").hexdigest()
    return out


@contextlib.contextmanager
def count_compiles() -> Iterator[list[str]]:
    """The programs JAX traces, lowers or compiles inside the block, by event name.

    In process: a program already compiled by this process (same function,
    same shapes) runs from memory without an event; every new jit, eval_shape
    or eager op on a new shape records one. `run_command` counts exactly,
    with a fresh process and an empty compilation cache.
    """
    import jax

    events = []

    def listen(event, duration, **kwargs):
        del duration, kwargs
        if event.startswith("/jax/core/compile/"):
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def check(case: Case, tmp_path: Path, compiles: bool = False) -> BaseException:
    """Runs the case (see the module docstring); `compiles`: a known gap, where the
    refusal comes after JAX compiled something (the caller tests that on its own)."""
    call, bad = case.make(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(case.error) as info, count_compiles() as compiled:
        call()
    pattern = case.message.replace("{path}", re.escape(str(bad)))
    assert re.search(pattern, str(info.value)), f"{pattern!r} not in {str(info.value)!r}"
    assert snapshot(tmp_path) == before, "the failure left files behind"
    assert compiles or not compiled, f"refused after compiling: {compiled}"
    return info.value


@dataclasses.dataclass(frozen=True)
class Command:
    """A finished `run_command`: its stderr and what the XLA cache holds after it."""

    returncode: int
    stderr: str
    cache_entries: list[str]


def command_env(tmp: Path, cache: Path) -> dict[str, str]:
    """A CLI's environment: one CPU device, its own TMPDIR, an empty XLA cache that
    stores every program it compiles (so an empty cache means nothing compiled)."""
    env = cli_env(devices=1)
    env.update(
        PYTHONPATH=str(REPO),
        TMPDIR=str(tmp),
        JAX_COMPILATION_CACHE_DIR=str(cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        # bert_jax.cpu_env restarts a CLI once for glibc's malloc tunables: a
        # second interpreter start per case, for settings bad input never reaches.
        BERT_JAX_MALLOC_REUSE="0",
        BERT_JAX_MALLOC_HUGEPAGES="0",
    )
    return env


def run_command(
    root: Path, case_dir: Path, args: list[str], prog: str, message: str, compiles: bool = False
) -> Command:
    """`python -m args` on a case's input (under `case_dir`), failing as bad input must.

    The command runs in `root/cwd` with TMPDIR `root/tmp` and the XLA cache
    `root/xla_cache`, all three made empty here (outside `case_dir`). Asserts
    exit status 1, exactly one line `<prog>: error: ...` on stderr (its last
    line) matching `message`, no traceback, `case_dir`, the working directory
    and TMPDIR unchanged (content hashes), and unless `compiles`, no program
    compiled.
    """
    cwd, tmp, cache = (root / n for n in ("cwd", "tmp", "xla_cache"))
    for d in (cwd, tmp, cache):
        d.mkdir(parents=True)
    before = [snapshot(d) for d in (case_dir, cwd, tmp)]
    out = subprocess.run(
        [sys.executable, "-m", *map(str, args)],
        cwd=cwd,
        env=command_env(tmp, cache),
        capture_output=True,
        text=True,
        timeout=240,
    )
    tail = out.stderr[-3000:]
    assert "Traceback" not in out.stderr, tail
    assert out.returncode == 1, f"exit status {out.returncode}: {tail}"
    lines = out.stderr.rstrip("\n").splitlines()
    errors = [line for line in lines if line.startswith(f"{prog}: error: ")]
    assert len(errors) == 1 and errors[-1] == lines[-1], tail
    assert re.search(message, errors[0]), f"{message!r} not in {errors[0]!r}"
    after = [snapshot(d) for d in (case_dir, cwd, tmp)]
    for name, b, a in zip(("the case's folder", "the cwd", "TMPDIR"), before, after, strict=True):
        assert a == b, f"the command changed {name}: {sorted(set(a.items()) ^ set(b.items()))}"
    entries = sorted(p.name for p in cache.rglob("*") if p.is_file())
    if not compiles:
        assert not entries, f"compiled before refusing: {entries}"
    return Command(out.returncode, out.stderr, entries)


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


# A vocabulary with BERT's special tokens and the words the cases use.
VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    *["the", "a", "film", "is", "good", "bad", ".", ",", "and", "of", "to", "it", "was", "##s"],
]


def vocab_file(tmp_path: Path) -> Path:
    return write(tmp_path / "vocab" / "vocab.txt", "\n".join(VOCAB) + "\n")
