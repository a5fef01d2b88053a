"""Typed summaries that cross the service seams: the reward service's metrics (`RewardMetrics`, rewards -> actors ->
deploy) and one rollout chunk's summary (`RolloutSummary`, actors -> deploy).

`RewardMetrics` carries sums and counts, never means: merging the metrics of chunks (the pool over its workers, the
fleet over its rollout actors) adds them up, and the means are derived once, from the merged sums (`flat`). Averaging
means would weight each by the wrong count (a per-program mean by rows, say).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

_N = TypeVar("_N", int, float)  # a count or a sum of seconds: merged values keep their type


@dataclass
class PoolCounters:
    """What the reward pool adds for one score call (rewards/service/pool.py)."""

    worker_restarts: int = 0
    chunks_retried: int = 0
    rows_scored: int = 0  # rows its workers returned (rows of a chunk whose worker raised are not counted)


@dataclass
class RewardMetrics:
    """The reward service's metrics of scored rows. `flat()` gives the metric keys (rewards/README.md,
    deploy/README.md): `rows`, `reward/total_mean`, `reward/<part>_mean` (over the rows that have the part),
    `errors/total`, `errors/<kind>`, `sandbox/programs`, `sandbox/seconds_total|mean|max` (wall seconds per sandboxed
    program), `sandbox/<outcome>`, `sandbox/orphans`, `sandbox/cpu_seconds_total|max`,
    `pool/worker_restarts|chunks_retried|rows_scored`."""

    rows: int = 0
    reward_sum: float = 0.0
    part_sums: dict[str, float] = field(default_factory=dict)  # part -> sum over the rows that have it
    part_rows: dict[str, int] = field(default_factory=dict)  # part -> rows that have it
    errors: dict[str, int] = field(default_factory=dict)  # error kind -> rows
    programs: int = 0  # sandboxed programs run
    program_seconds: float = 0.0  # their wall seconds, summed
    program_seconds_max: float | None = None
    outcomes: dict[str, int] = field(default_factory=dict)  # how programs ended -> count
    orphans: int | None = None  # None: not counted (no sandbox behind these rows)
    cpu_seconds: float | None = None  # CPU seconds of all runs' processes, where per-run cgroups count them
    cpu_seconds_max: float | None = None
    pool: PoolCounters | None = None

    @classmethod
    def merge(cls, parts: list[RewardMetrics]) -> RewardMetrics:
        """The metrics of the union of the parts' rows and programs: counts and sums add up, maxima stay maxima."""
        out = cls()
        for p in parts:
            out.rows += p.rows
            out.reward_sum += p.reward_sum
            out.part_sums = _add(out.part_sums, p.part_sums)
            out.part_rows = _add(out.part_rows, p.part_rows)
            out.errors = _add(out.errors, p.errors)
            out.programs += p.programs
            out.program_seconds += p.program_seconds
            out.program_seconds_max = _max(out.program_seconds_max, p.program_seconds_max)
            out.outcomes = _add(out.outcomes, p.outcomes)
            out.orphans = _sum(out.orphans, p.orphans)
            out.cpu_seconds = _sum(out.cpu_seconds, p.cpu_seconds)
            out.cpu_seconds_max = _max(out.cpu_seconds_max, p.cpu_seconds_max)
            if p.pool is not None:
                out.pool = out.pool or PoolCounters()
                out.pool.worker_restarts += p.pool.worker_restarts
                out.pool.chunks_retried += p.pool.chunks_retried
                out.pool.rows_scored += p.pool.rows_scored
        return out

    def flat(self) -> dict[str, float]:
        """One flat dict[str, float] for the Metrics sink; the means are derived here from sums and counts."""
        out: dict[str, float] = {"rows": float(self.rows)}
        if self.rows:
            out["reward/total_mean"] = self.reward_sum / self.rows
        for name in sorted(self.part_sums):
            out[f"reward/{name}_mean"] = self.part_sums[name] / self.part_rows[name]
        out["errors/total"] = float(sum(self.errors.values()))
        for kind, count in sorted(self.errors.items()):
            out[f"errors/{kind}"] = float(count)
        out["sandbox/programs"] = float(self.programs)
        if self.programs:
            out["sandbox/seconds_total"] = self.program_seconds
            out["sandbox/seconds_mean"] = self.program_seconds / self.programs
            out["sandbox/seconds_max"] = float(self.program_seconds_max or 0.0)
        for outcome, count in sorted(self.outcomes.items()):
            out[f"sandbox/{outcome}"] = float(count)
        if self.orphans is not None:
            out["sandbox/orphans"] = float(self.orphans)
        if self.cpu_seconds is not None:
            out["sandbox/cpu_seconds_total"] = self.cpu_seconds
            out["sandbox/cpu_seconds_max"] = float(self.cpu_seconds_max or 0.0)
        if self.pool is not None:
            out["pool/worker_restarts"] = float(self.pool.worker_restarts)
            out["pool/chunks_retried"] = float(self.pool.chunks_retried)
            out["pool/rows_scored"] = float(self.pool.rows_scored)
        return out


@dataclass
class RolloutSummary:
    """One rollout chunk, for the driver's logs and checks (the batch itself stays in the object store).
    `reward_mean` and `reward_parts` are means over all `rows` (a row without a part counts 0), so they merge
    row-weighted; the reward service's own metrics merge by their sums (`RewardMetrics.merge`)."""

    actor: int
    version: int  # the policy version that sampled
    rows: int
    groups: list[int]  # the step's group indices this chunk answered
    reward_mean: float
    reward_parts: dict[str, float]  # part -> mean over all rows
    reward_errors: int
    reward_metrics: RewardMetrics
    generate_seconds: float
    score_seconds: float
    teacher_seconds: float
    tokens_per_second: float
    forwards: int
    zero_variance_groups: int
    samples: list[tuple[str, str, float]]  # (prompt, completion, reward) of each group's first row
    batch_bytes: int = 0  # the Arrow table's size; set by the rollout actor (actors/rollout.py)


def _add(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in sorted({*a, *b})}


def _sum(a: _N | None, b: _N | None) -> _N | None:
    return b if a is None else a if b is None else a + b


def _max(a: _N | None, b: _N | None) -> _N | None:
    return b if a is None else a if b is None else max(a, b)
