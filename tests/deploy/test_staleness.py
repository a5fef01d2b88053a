"""StalenessGate alone (no Ray): which rollout batches the driver may issue at each learner version.

The gate is driven exactly as Trainer.run drives it: at the top of learner step v (the learner holds version v), issue
batches while `can_submit(version=v)`; then one batch is trained and the version becomes v + 1.
"""
from __future__ import annotations

import pytest

from deploy.staleness import StalenessGate


def admissions(max_staleness: int, total_steps: int, start: int = 0) -> list[list[int]]:
    """Per learner step, the batch indices issued at its top (what Trainer.run submits before collecting)."""
    gate = StalenessGate(max_staleness, submitted=start)
    issued = []
    for version in range(start, total_steps):
        now = []
        while gate.can_submit(version=version, total_steps=total_steps):
            now.append(gate.mark_submitted())
        issued.append(now)
    return issued


def test_sync_issues_one_batch_per_step():
    assert admissions(0, 4) == [[0], [1], [2], [3]]


def test_async_one_runs_one_batch_ahead():
    # batch s+1 is generated (with the weights of version s) while the learner trains on batch s
    assert admissions(1, 5) == [[0, 1], [2], [3], [4], []]


def test_async_two_runs_two_batches_ahead():
    assert admissions(2, 5) == [[0, 1, 2], [3], [4], [], []]


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_capacity_rule_bounds_staleness(k):
    """AReaL's rule: a batch issued while the learner is at version v is trained at version s (its index); the gap is
    never above k, every batch is issued exactly once, in order, and never beyond total_steps."""
    total = 7
    issued = admissions(k, total)
    flat = [s for now in issued for s in now]
    assert flat == list(range(total))
    for version, now in enumerate(issued):
        for s in now:
            assert 0 <= s - version <= k
        # at most k + 1 batches are outstanding (issued but not yet trained) at any time
        outstanding = sum(len(n) for n in issued[: version + 1]) - version
        assert outstanding <= k + 1


def test_resume_starts_from_the_checkpointed_step():
    # Trainer._resume sets step = 3; the gate starts with submitted = 3 so no batch is issued twice
    assert admissions(0, 5, start=3) == [[3], [4]]
    assert admissions(1, 5, start=3) == [[3, 4], []]


def test_nothing_beyond_total_steps():
    gate = StalenessGate(max_staleness=5)
    assert [gate.mark_submitted() for _ in range(2) if gate.can_submit(version=0, total_steps=2)] == [0, 1]
    assert not gate.can_submit(version=0, total_steps=2)
