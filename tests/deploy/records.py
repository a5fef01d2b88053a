"""Shared by the whole-job tests: a step record of metrics.jsonl without what may differ between two runs that train
identically (wall-clock timings)."""
from __future__ import annotations

TIMING = {"seconds"}  # the learner's wall-clock field, the only learner value allowed to differ
WALL_CLOCK = ("time", "timestamp", "rollout", "busy")  # record sections holding timings and tokens per second


def deterministic(record: dict, keys: tuple[str, ...] | None = None) -> dict:
    """The record's `keys` (default: every section but the wall-clock ones) with the learner's timings removed."""
    kept = {k: v for k, v in record.items() if (k in keys if keys else k not in WALL_CLOCK) and k != "learner"}
    return {**kept, "learner": {k: v for k, v in record["learner"].items() if k not in TIMING}}
