"""Connecting to Ray: the cluster a job was submitted to, or a local instance bound to loopback.

Entry points (deploy.job, deploy.evaluate, benchmarks, tests/conftest.py) call `local_env()` first, before anything
imports ray: Ray reads some of these variables at import time, and every process it spawns must see them. Importing
this module changes nothing.
"""
from __future__ import annotations

import logging
import os

# A local instance listens on loopback only and writes no auth token (a token written by a standalone ray.init()
# makes a later `ray job submit` fail to authenticate). Defaults only: a job's runtime_env (deploy/runtime_env.yaml)
# or the user's environment wins.
LOCAL_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "GLOO_SOCKET_IFNAME": "lo",
             "RAY_USAGE_STATS_ENABLED": "0"}

log = logging.getLogger(__name__)
LOCAL_START_ATTEMPTS = 3


def local_env() -> None:
    """Set LOCAL_ENV's variables where unset. Call before `import ray` (idempotent)."""
    for key, value in LOCAL_ENV.items():
        os.environ.setdefault(key, value)


def init_ray(*, address: str | None = None, num_cpus: int | None = None, include_dashboard: bool = False) -> None:
    """Join `address` ("auto" inside `ray job submit`), else start a local loopback-only instance."""
    local_env()  # in case the entry point imported ray already: the processes started below still see them
    import ray

    if ray.is_initialized():
        return
    if address is None and os.environ.get("RAY_ADDRESS"):
        address = "auto"
    if address is not None:
        log.info("joining Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True)
        return
    for attempt in range(1, LOCAL_START_ATTEMPTS + 1):
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=include_dashboard, _node_ip_address="127.0.0.1",
                     dashboard_host="127.0.0.1", log_to_driver=True, runtime_env={"env_vars": dict(LOCAL_ENV)})
            return
        except Exception as err:
            # Ray gives a starting raylet a fixed 30 s to register; a box busy with other work can need longer
            if "timed out during startup" not in str(err) or attempt == LOCAL_START_ATTEMPTS:
                raise
            log.warning("local Ray instance: %s (attempt %d of %d); starting again", err, attempt,
                        LOCAL_START_ATTEMPTS)
            ray.shutdown()
