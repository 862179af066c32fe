"""Checksums of a checkpoint's files, written at save time and verified before a restore.

Orbax detects a checkpoint that is incomplete or cut short, not one whose bytes
changed in place (a bad disk sector, a bit flip on a copy): such a checkpoint
restores without an error and the next step's loss is NaN. So every saved step
directory holds `bert_jax_checksums.json`, the size and CRC-32 of each file the
restore reads, and a restore compares them first (`problem`).

CRC-32 (zlib) because it is the fastest hash in the standard library on CPU
(2.35 GB/s on the 2-core Xeon of docs/reliability.md, 2.4x blake2b) and the
damage to detect is accidental, not adversarial. The commit markers and
orbax's step metadata are left out: orbax rewrites them at the commit, after
the manifest is made. The cost on save and restore: docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import zlib

from etils import epath

MANIFEST = "bert_jax_checksums.json"
ALGORITHM = "crc32"
# Written or rewritten by orbax after the manifest (the commit), or not read by a restore.
_SKIPPED = {MANIFEST, "commit_success.txt", "_CHECKPOINT_METADATA"}
_CHUNK = 16 << 20  # zlib releases the GIL on large buffers: background saves go on


def _crc32(path: epath.Path) -> str:
    crc = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def _files(step_dir: epath.Path) -> list[str]:
    """Paths (relative, sorted) of the files under `step_dir` that the manifest covers."""
    out, todo = [], [step_dir]
    while todo:  # epath's rglob refuses gs:// paths
        for path in todo.pop().iterdir():
            if path.is_dir():
                todo.append(path)
            elif path.name not in _SKIPPED and not path.name.startswith(MANIFEST):
                out.append(str(path.relative_to(step_dir)))
    return sorted(out)


def write(step_dir: str | os.PathLike) -> None:
    """Writes the manifest of `step_dir`'s files (temp file, then rename)."""
    d = epath.Path(step_dir)
    files = {
        name: {"size": (d / name).stat().length, ALGORITHM: _crc32(d / name)} for name in _files(d)
    }
    tmp = d / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"algorithm": ALGORITHM, "files": files}, indent=1))
    tmp.replace(d / MANIFEST)


def has_manifest(step_dir: str | os.PathLike) -> bool:
    return (epath.Path(step_dir) / MANIFEST).exists()


def problem(step_dir: str | os.PathLike) -> str | None:
    """What differs from the manifest (first file only), or None when all match.

    A directory without a manifest (written before checksums existed) is None:
    callers that care say so with `has_manifest`.
    """
    d = epath.Path(step_dir)
    if not (d / MANIFEST).exists():
        return None
    try:
        manifest = json.loads((d / MANIFEST).read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError) as e:
        return f"its checksum manifest {MANIFEST} cannot be read ({e})"
    for name, want in sorted(files.items()):
        path = d / name
        if not path.exists():
            return f"{name} is missing"
        size = path.stat().length
        if size != want["size"]:
            return f"{name} has {size} bytes, {want['size']} when saved"
        got = _crc32(path)
        if got != want[ALGORITHM]:
            return (
                f"{name} does not match its checksum ({ALGORITHM} {got}, {want[ALGORITHM]} when "
                "saved): its bytes changed on disk after the save"
            )
    return None
