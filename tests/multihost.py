"""Several `bert_jax.main` processes on this machine as the hosts of one run (gloo on CPU)."""

import socket
import subprocess
from pathlib import Path

from tests.cli_env import cli_env

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(
    cmd: list[str], processes: int = 2, devices: int = 4, log_dir: Path | None = None
) -> list[subprocess.Popen]:
    """Starts `cmd` as `processes` hosts of `devices` CPU devices each, with a fresh
    coordinator port; each process's stdout and stderr come merged on its stdout, or
    go to `log_dir/process_<i>.log` (for processes nobody reads while they run: a full
    pipe would block them)."""
    port = free_port()
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)

    env = cli_env(devices) | {"JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"}
    procs = []
    for i in range(processes):
        log = None if log_dir is None else open(log_dir / f"process_{i}.log", "w")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [
                    *cmd,
                    "--jax_distributed",
                    f"--coordinator_address=localhost:{port}",
                    f"--num_processes={processes}",
                    f"--process_id={i}",
                ],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE if log is None else log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
        if log is not None:
            log.close()  # the process has its own copy
    return procs


def finish(procs: list[subprocess.Popen], timeout: float = 400) -> list[str]:
    """Each process's output once all have exited; fails unless every one exited 0."""
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for i, (p, out) in enumerate(zip(procs, outs, strict=True)):
        assert p.returncode == 0, f"process {i} exited {p.returncode}:\n{out[-4000:]}"
    return outs
