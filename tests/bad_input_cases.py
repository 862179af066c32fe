"""The bad-input catalogue's harness: a case builds its bad input, then calls the code.

Each case is `make(tmp_path) -> (call, bad_path)`: `make` writes the bad input
(and anything good it needs) under `tmp_path`; `call()` runs the public
function a command runs and must raise. `check` then asserts the exception
type, that its message matches the case's regex (where "{path}" stands for
the bad file, escaped), and that `tmp_path` holds exactly what it held before
`call()`: no partial output, no debris. docs/bad_input.md lists every case.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest


@dataclasses.dataclass(frozen=True)
class Case:
    make: Callable[[Path], tuple[Callable[[], object], Path | str]]
    error: type[BaseException]
    message: str  # a regex; "{path}" is replaced by the escaped bad path


def snapshot(root: Path) -> dict[str, int]:
    """Every file and folder under `root` with its size (folders: -1)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = -1
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = os.path.getsize(p)
    return out


def check(case: Case, tmp_path: Path) -> BaseException:
    call, bad = case.make(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(case.error) as info:
        call()
    pattern = case.message.replace("{path}", re.escape(str(bad)))
    assert re.search(pattern, str(info.value)), f"{pattern!r} not in {str(info.value)!r}"
    assert snapshot(tmp_path) == before, "the failure left files behind"
    return info.value


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
