"""Admission of rollout batches ahead of the learner (AReaL's capacity rule), free of Ray so it tests alone.

A batch for step s is admitted while submitted + 1 <= (max_staleness + version + 1) batches, i.e. the actors may run
at most `max_staleness` versions ahead of the learner; max_staleness = 0 is the synchronous loop.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StalenessGate:
    max_staleness: int
    submitted: int = 0  # rollout batches (steps) issued so far

    def can_submit(self, version: int, total_steps: int) -> bool:
        return self.submitted < total_steps and self.submitted < self.max_staleness + version + 1

    def mark_submitted(self) -> int:
        self.submitted += 1
        return self.submitted - 1
