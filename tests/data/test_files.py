"""Tests for bert_jax.data.files: reading (gzip, missing paths), globs, atomic writes."""

import gzip
import os
import re
from pathlib import Path

import pytest

from bert_jax.data import files


def _write(path, data: bytes) -> str:
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return str(path)


@pytest.mark.parametrize("name", ["a.txt", "a.txt.gz"])
def test_open_read_local_and_gzip(tmp_path, name):
    path = _write(tmp_path / name, b"first\nsecond\n")
    with files.open_read(path) as f:
        assert list(f) == [b"first\n", b"second\n"]
    with files.open_read(tmp_path / name) as f:  # A PathLike too.
        assert f.read() == b"first\nsecond\n"


@pytest.mark.parametrize("name", ["nope.txt", "nope.txt.gz"])
def test_missing_file_names_the_path(tmp_path, name):
    path = str(tmp_path / name)
    with pytest.raises(FileNotFoundError, match=re.escape(path)), files.open_read(path):
        pass
    with pytest.raises(FileNotFoundError, match=re.escape(path)):
        list(files.numbered_lines(path))


def test_numbered_lines_bom_crlf_and_bad_bytes(tmp_path):
    path = _write(tmp_path / "a.txt.gz", b"\xef\xbb\xbfhead\r\nx\ry\n\xff\n\nlast")
    lines = list(files.numbered_lines(path))
    assert lines[:2] == [(1, "head"), (2, "x\ry")]  # BOM and one "\r" before "\n" dropped.
    assert lines[2][0] == 3 and isinstance(lines[2][1], UnicodeDecodeError)
    assert lines[3:] == [(4, ""), (5, "last")]


def test_expand_globs_comma_separated(tmp_path):
    for name in ["b.txt", "a2.txt", "a1.txt", "c.txt.gz"]:
        _write(tmp_path / name, b"x\n")
    (tmp_path / "a_dir.txt").mkdir()  # Directories are not inputs.
    files_found = files.expand_globs(f"{tmp_path}/c.txt.gz, {tmp_path}/a*.txt,{tmp_path}/*1.txt,")
    assert files_found == [str(tmp_path / n) for n in ["a1.txt", "a2.txt", "c.txt.gz"]]
    assert files.expand_globs([f"{tmp_path}/b.txt", f"{tmp_path}/a1.txt"]) == [
        str(tmp_path / "a1.txt"),
        str(tmp_path / "b.txt"),
    ]


def test_missing_pattern_is_named(tmp_path):
    _write(tmp_path / "a.txt", b"x\n")
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path}/nope*.txt")):
        files.expand_globs(f"{tmp_path}/a.txt,{tmp_path}/nope*.txt")
    with pytest.raises(FileNotFoundError, match="no input patterns"):
        files.expand_globs(" , ")


@pytest.mark.parametrize("name", ["out.txt", "out.txt.gz"])
def test_atomic_write(tmp_path, name):
    path = tmp_path / name
    with files.atomic_write(str(path)) as f:
        f.write(b"one\n")
        assert os.listdir(tmp_path) != [name]  # Only a temporary file so far.
    assert os.listdir(tmp_path) == [name]
    with files.open_read(str(path)) as f:
        assert f.read() == b"one\n"
    first = path.read_bytes()
    with pytest.raises(RuntimeError), files.atomic_write(str(path)) as f:
        f.write(b"two\n")
        raise RuntimeError("disk on fire")
    assert os.listdir(tmp_path) == [name] and path.read_bytes() == first  # Untouched.
    with files.atomic_write(str(path)) as f:
        f.write(b"one\n")
    assert path.read_bytes() == first  # Gzip too: the same text, the same bytes.


def test_atomic_paths_all_or_nothing(tmp_path):
    targets = [str(tmp_path / "a"), str(tmp_path / "b")]
    with pytest.raises(ValueError), files.atomic_paths(targets) as temps:
        for t in temps:
            _write(Path(t), b"partial")
        raise ValueError("no examples")
    assert os.listdir(tmp_path) == []
    with files.atomic_paths(targets) as temps:
        for t, text in zip(temps, [b"A", b"B"], strict=True):
            _write(Path(t), text)
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]
    assert (tmp_path / "b").read_bytes() == b"B"
