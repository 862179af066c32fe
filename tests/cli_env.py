"""The environment of a CLI subprocess started by a test.

The session's XLA flags stay (tests/conftest.py sets them: the CLI runs must
compile as the test process does, and share its compilation cache); only the
number of host devices changes.

`compile_cache=False` is for the long one-off runs (minutes of steps at
shapes no other test compiles): without the session's cache the CLI makes
its own CPU choice as a user's run does (bert_jax.cpu_env: XLA:CPU's dots in
oneDNN, which the cache cannot store), so those runs test that path and take
its faster steps.
"""

import os

CACHE_KEYS = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")


def cli_env(devices: int = 1, compile_cache: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    if not compile_cache:
        for key in CACHE_KEYS:
            env.pop(key, None)
    return env
