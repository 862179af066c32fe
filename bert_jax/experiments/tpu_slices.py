"""TPU slices as users name them (v5p-16, v5e-8, v6e-8, v4-32): validation, the gcloud
accelerator type, the runtime image and the number of TPU VMs (workers).

What the numbers mean, from the Cloud TPU documentation:

* v4-N and v5p-N count TensorCores, two per chip (megacore), and a TPU VM
  holds 4 chips: v5p-8 is 4 chips on 1 VM, v5p-16 is 8 chips on 2 VMs
  (https://cloud.google.com/tpu/docs/v5p, "Configurations": topology 2x2x1 =
  8 cores, 4 chips, 1 host; 2x2x2 = 16 cores, 8 chips, 2 hosts).
* v5e-N and v6e-N count chips, one TensorCore each. gcloud spells v5e
  `v5litepod-N` (https://cloud.google.com/tpu/docs/jax-pods creates a
  `v5litepod-32`). A v5e TPU VM holds 1, 4 or 8 chips
  (https://cloud.google.com/tpu/docs/v5e, "VM types"): slices of up to 8
  chips are one VM, larger ones are made of 4-chip VMs (ct5lp-hightpu-4t;
  https://cloud.google.com/kubernetes-engine/docs/concepts/tpus: a 16x16
  ct5lp-hightpu-4t slice is 64 nodes). v6e is laid out the same way
  (https://cloud.google.com/tpu/docs/v6e: "shares many similarities with v5e",
  256 chips per pod, 1x1 ... 16x16 slices).
* Runtime images (../shared/REFERENCES.md): v6e `v2-alpha-tpuv6e`, v5p
  `v2-alpha-tpuv5`, v5e `v2-alpha-tpuv5-lite`, v4 `tpu-ubuntu2204-base`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import NamedTuple


class Generation(NamedTuple):
    gcloud_prefix: str  # the accelerator type gcloud wants: PREFIX-N
    runtime_version: str
    counts_cores: bool  # N counts TensorCores (2 per chip) rather than chips


GENERATIONS = {
    "v4": Generation("v4", "tpu-ubuntu2204-base", True),
    "v5p": Generation("v5p", "v2-alpha-tpuv5", True),
    "v5e": Generation("v5litepod", "v2-alpha-tpuv5-lite", False),
    "v6e": Generation("v6e", "v2-alpha-tpuv6e", False),
}
ALIASES = {"v5litepod": "v5e"}  # gcloud's name for v5e is accepted as well
CHIPS_PER_VM = 4  # multi-host slices of every generation here
# v5e/v6e slice shapes 1x1, 2x2, 2x4, 4x4, ..., 16x16 (the v5e and v6e pages).
SMALL_CHIP_COUNTS = (1, 4, 8, 16, 32, 64, 128, 256)

_TYPE = re.compile(r"^([a-z0-9]+)-([0-9]+)$")
_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")  # us-east5-a, europe-west4-b
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")  # a Compute Engine resource name
_PROJECT = re.compile(r"^[a-z][-a-z0-9.:]{4,61}[a-z0-9]$")
_RUNTIME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _type_help() -> str:
    return (
        f"expected GENERATION-SIZE with GENERATION one of {', '.join(GENERATIONS)} "
        "(v5litepod also accepted for v5e), e.g. v5p-16, v5e-8, v6e-8, v4-32; v4/v5p sizes "
        "count TensorCores (a multiple of 8), v5e/v6e sizes count chips "
        f"({', '.join(map(str, SMALL_CHIP_COUNTS))})"
    )


def parse_tpu_type(tpu_type: str) -> tuple[str, int]:
    """`"v5p-16"` -> `("v5p", 16)`; a clear ValueError for anything else."""
    m = _TYPE.match(tpu_type)
    generation = ALIASES.get(m.group(1), m.group(1)) if m else ""
    if not m or generation not in GENERATIONS:
        raise ValueError(f"unknown TPU type {tpu_type!r}: {_type_help()}")
    size = int(m.group(2))
    if GENERATIONS[generation].counts_cores:
        ok = size >= 8 and size % 8 == 0
    else:
        ok = size in SMALL_CHIP_COUNTS
    if not ok:
        raise ValueError(
            f"unknown TPU type {tpu_type!r} (no such {generation} size): {_type_help()}"
        )
    return generation, size


@dataclasses.dataclass(frozen=True)
class Slice:
    """One TPU VM slice; every field is validated when the Slice is made."""

    name: str  # TPU VM / node name (also the queued resource's id)
    zone: str  # e.g. us-east5-a
    tpu_type: str  # as users write it: v5p-16, v5e-8, v6e-8, v4-32
    project: str = ""  # "" -> gcloud's configured project
    spot: bool = False
    reserved: bool = False
    runtime_version: str = ""  # "" -> from the generation (GENERATIONS)

    def __post_init__(self):
        if not _NAME.match(self.name):
            raise ValueError(
                f"TPU name {self.name!r}: lower-case letters, digits and '-', starting with a "
                "letter, at most 63 characters (e.g. bert-v5p)"
            )
        if not _ZONE.match(self.zone):
            raise ValueError(f"zone {self.zone!r} is not of the form us-east5-a")
        parse_tpu_type(self.tpu_type)
        if self.project and not _PROJECT.match(self.project):
            raise ValueError(f"project {self.project!r} is not a Google Cloud project id")
        if self.spot and self.reserved:
            raise ValueError("--spot and --reserved exclude each other: choose one")
        if self.runtime_version and not _RUNTIME.match(self.runtime_version):
            raise ValueError(f"runtime version {self.runtime_version!r} is not a version name")

    @property
    def generation(self) -> str:
        return parse_tpu_type(self.tpu_type)[0]

    @property
    def chips(self) -> int:
        generation, size = parse_tpu_type(self.tpu_type)
        return size // 2 if GENERATIONS[generation].counts_cores else size

    @property
    def workers(self) -> int:
        """TPU VMs in the slice: one process each (see the module docstring)."""
        if self.generation in ("v5e", "v6e") and self.chips <= 8:
            return 1  # one VM of 1, 4 or 8 chips
        return max(1, self.chips // CHIPS_PER_VM)

    @property
    def accelerator_type(self) -> str:
        """The name gcloud wants (v5e-16 -> v5litepod-16)."""
        generation, size = parse_tpu_type(self.tpu_type)
        return f"{GENERATIONS[generation].gcloud_prefix}-{size}"

    @property
    def runtime(self) -> str:
        return self.runtime_version or GENERATIONS[self.generation].runtime_version
