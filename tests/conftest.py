"""Shared fixtures: one local loopback-only Ray instance per test session, tiny models made on the fly."""
from __future__ import annotations

import common.cluster  # noqa: F401  (sets the loopback/auth environment before anything imports ray)

import pytest
import ray


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance bound to 127.0.0.1 (2 CPUs), shut down at the end of the session."""
    common.cluster.init_ray(num_cpus=4)
    yield ray
    ray.shutdown()
