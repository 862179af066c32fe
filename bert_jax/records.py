"""Measurement records: one JSON object per line, appended by the benchmark tools
(`bert_jax.bench`, `bert_jax.aot`) and read by `experiments/performance_doc.py`."""

from __future__ import annotations

import json
import os
import platform


def machine() -> dict[str, str]:
    """What the numbers were measured on, beside the accelerator the tools report."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {"cpu": cpu, "host_cores": str(os.cpu_count()), "python": platform.python_version()}


def append(path: str, row: dict) -> None:
    """Appends `row` (with the machine) to the JSON-lines file `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row | {"machine": machine()}) + "\n")


def read(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
