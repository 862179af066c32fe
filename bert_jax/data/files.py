"""Data files: read local or gs:// paths (gzip included), expand globs, write atomically.

Local paths go through Python's own `open` and `os`; paths with a scheme
("gs://bucket/...") through `tf.io.gfile`, imported only for them (importing
TensorFlow takes seconds, and the fine-tuning readers need it for nothing
else). Names ending in ".gz" are un-gzipped on reading and gzipped on writing.

    with files.open_read("gs://bucket/wiki-00.txt.gz") as f:
        for raw in f: ...                      # bytes, lines ending in b"\\n"
    for number, line in files.numbered_lines("train.tsv"): ...
    with files.atomic_write("vocab.txt") as f:
        f.write(b"[PAD]\\n")                   # appears at vocab.txt only when complete
"""

from __future__ import annotations

import contextlib
import gzip
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

_BOM = "\ufeff"


def _is_remote(path: str) -> bool:
    return "://" in path


def _gfile():
    import tensorflow as tf  # Only for remote paths and globs: see the module docstring.

    return tf.io.gfile


def _open_raw(path: str, mode: str) -> BinaryIO:
    """`mode` "rb" or "wb"; a missing remote file raises as a local one does."""
    if not _is_remote(path):
        return open(path, mode)  # noqa: SIM115 (closed by the caller's context)
    gfile = _gfile()
    # GFile defers the open to the first read, which would raise TF's NotFoundError.
    if mode == "rb" and not gfile.exists(path):
        raise FileNotFoundError(f"No such file: {path!r}")
    return gfile.GFile(path, mode)


@contextlib.contextmanager
def open_read(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Opens a file for reading bytes, un-gzipping a ".gz" one.

    Readers decode line by line themselves, so that a line that is not UTF-8
    is reported by its number (`numbered_lines`).

    Raises:
      FileNotFoundError: no file at `path`; the message names it.
    """
    path = os.fspath(path)
    with _open_raw(path, "rb") as f:
        if not path.endswith(".gz"):
            yield f
            return
        with gzip.GzipFile(fileobj=f, mode="rb") as g:  # Leaves `f` open: closed above.
            yield g


def numbered_lines(path: str | os.PathLike) -> Iterator[tuple[int, str | UnicodeDecodeError]]:
    """Yields (1-based line number, the line decoded as UTF-8) of a file, lazily.

    Lines end at "\\n" only (a stray "\\r" inside a line stays text) and lose
    one "\\r" before it (CRLF files). A byte-order mark before the first line
    is dropped, as `encoding="utf-8-sig"` would. A line that is not UTF-8 is
    yielded as its `UnicodeDecodeError`, for the reader's `on_bad_input`.
    """
    with open_read(path) as f:
        for number, raw in enumerate(f, start=1):
            raw = raw.removesuffix(b"\n").removesuffix(b"\r")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield number, e
                continue
            yield number, line.removeprefix(_BOM) if number == 1 else line


def expand_globs(patterns: str | Iterable[str]) -> list[str]:
    """Comma-separated globs (the original scripts' `--input_file`) -> sorted files.

    Args:
      patterns: e.g. "data/wiki_*.txt.gz,gs://bucket/books/*.txt", or a list
        of such strings.

    Returns:
      The matching files (not directories), sorted, each once.

    Raises:
      FileNotFoundError: a pattern matches no file; names the pattern.
    """
    if not isinstance(patterns, str):
        patterns = ",".join(patterns)
    gfile = _gfile()  # Its glob reads local folders and buckets alike.
    found = set()
    for pattern in (p.strip() for p in patterns.split(",")):
        if not pattern:
            continue
        matches = [f for f in gfile.glob(pattern) if not gfile.isdir(f)]
        if not matches:
            raise FileNotFoundError(f"no files match {pattern!r}")
        found.update(matches)
    if not found:
        raise FileNotFoundError(f"no input patterns in {patterns!r}")
    return sorted(found)


def _rename(src: str, dst: str) -> None:
    if _is_remote(dst):
        _gfile().rename(src, dst, overwrite=True)
    else:
        os.replace(src, dst)


def _remove_if_exists(path: str) -> None:
    if _is_remote(path):
        gfile = _gfile()
        if gfile.exists(path):
            gfile.remove(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


@contextlib.contextmanager
def atomic_paths(paths: Sequence[str]) -> Iterator[list[str]]:
    """Temporary paths to write `paths` through, renamed over them once the block ends.

    Each temporary path sits beside its target (the same disk or bucket, so
    the rename is cheap). If the block raises, the temporary files are
    removed and the targets keep what they held before: a failed run leaves
    no partial output. Close what writes them before the block ends.

    Yields:
      One temporary path per target, in order.
    """
    tag = f".tmp-{uuid.uuid4().hex[:8]}"
    temps = [f"{os.fspath(p)}{tag}" for p in paths]
    try:
        yield temps
        for temp, path in zip(temps, paths, strict=True):
            _rename(temp, os.fspath(path))
    except BaseException:
        for temp in temps:
            _remove_if_exists(temp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Opens `path` for writing bytes, gzipped for ".gz"; see `atomic_paths`.

    The file appears at `path` only once the block ends without an error.
    """
    path = os.fspath(path)
    with atomic_paths([path]) as (temp,), _open_raw(temp, "wb") as f:
        if not path.endswith(".gz"):
            yield f
            return
        # Named for the target, not the temporary file; mtime 0: the same text
        # gives the same bytes. Closed before `f`: it writes the trailer.
        name = os.path.basename(path).removesuffix(".gz")
        with gzip.GzipFile(name, mode="wb", fileobj=f, mtime=0) as g:
            yield g
