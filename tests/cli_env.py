"""The environment of a CLI subprocess started by a test.

The session's XLA flags stay (tests/conftest.py sets them: the CLI runs must
compile as the test process does, and share its compilation cache); only the
number of host devices changes.
"""

import os


def cli_env(devices: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    return env
