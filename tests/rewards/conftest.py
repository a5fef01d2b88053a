"""Fixtures of the reward tests: a real bubblewrap sandbox (the suite fails, naming the fix, where bwrap is missing)."""
from __future__ import annotations

import pytest

from rewards.sandbox import Sandbox, SandboxConfig, bwrap_problem


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    problem = bwrap_problem()
    if problem is not None:
        pytest.fail(f"the code sandbox needs bubblewrap: {problem}. Run `make setup` (apt-get install bubblewrap).")
    return Sandbox(SandboxConfig())

