"""Measurement records: one JSON object per line, appended by the benchmark tools
(`bert_jax.perf.bench`, `bert_jax.perf.aot`) and read by `experiments/performance_doc.py`."""

from __future__ import annotations

import json
import os
import platform


def _cpuinfo(path: str) -> dict[str, str]:
    """The first processor's fields in `path` ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block ends here
                name, _, value = line.partition(":")
                fields.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    return fields


def machine(cpuinfo: str = "/proc/cpuinfo") -> dict[str, str]:
    """What the numbers were measured on, beside the accelerator the tools report.

    Virtual machines often report a bare model name ("AMD EPYC") for CPUs of
    different generations, whose matmul rates differ twofold; the family and
    model numbers tell them apart (AMD family 25 is Zen 3/4, 26 is Zen 5).
    """
    info = _cpuinfo(cpuinfo)
    out = {
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "host_cores": str(os.cpu_count()),
        "python": platform.python_version(),
    }
    for key, field in (("cpu_family", "cpu family"), ("cpu_model", "model")):
        if field in info:
            out[key] = info[field]
    return out


def append(path: str, row: dict) -> None:
    """Appends `row` (with the machine) to the JSON-lines file `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row | {"machine": machine()}) + "\n")


def read(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
