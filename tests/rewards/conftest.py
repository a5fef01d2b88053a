"""Fixtures of the reward tests: a real bubblewrap sandbox (the suite fails, naming the fix, where it cannot run)."""
from __future__ import annotations

import pytest

from rewards.sandbox import Sandbox, SandboxConfig, SandboxUnavailable


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    box = Sandbox(SandboxConfig())
    try:
        box.check_ready()
    except SandboxUnavailable as exc:
        pytest.fail(f"the code sandbox cannot run here: {exc}. Run `make setup` (apt-get install bubblewrap).")
    yield box
    box.close()
