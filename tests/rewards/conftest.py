"""Fixtures of the reward tests: a real bubblewrap sandbox (the suite fails, naming the fix, where it cannot run).

The sandbox uids of this test session are a range of their own (from the pid), so the "no process outlived its run"
checks never see the sandboxes of another process on the same machine (another checkout's tests, a training job).
"""
from __future__ import annotations

import os

import pytest

from rewards.sandbox import Sandbox, SandboxConfig, SandboxUnavailable

TEST_UIDS = {"uid_base": 10_000_000 + (os.getpid() % 10_000) * 200_000, "uid_span": 100_000}


def session_config(**overrides) -> SandboxConfig:
    """A SandboxConfig in this session's uid range."""
    return SandboxConfig(**TEST_UIDS, **overrides)


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    box = Sandbox(session_config())
    try:
        box.check_ready()
    except SandboxUnavailable as exc:
        pytest.fail(f"the code sandbox cannot run here: {exc}. Run `make setup` (apt-get install bubblewrap).")
    yield box
    box.close()


def private_config(**overrides) -> SandboxConfig:
    """A SandboxConfig whose run and checker uids ([uid_base, uid_base + 2 * uid_span)) no other sandbox of this
    session uses, so a test can count every process of that range."""
    return SandboxConfig(uid_base=3_000_000_000 + (os.getpid() % 5000) * 200_000, uid_span=100_000, **overrides)


def range_processes(config: SandboxConfig) -> list[int]:
    """Live (non-zombie) processes whose uid is a run or checker uid of `config`."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        uid = int(fields["Uid"].split()[0])
        if (config.uid_base <= uid < config.uid_base + 2 * config.uid_span
                and not fields["State"].strip().startswith("Z")):
            pids.append(int(entry.name))
    return pids
