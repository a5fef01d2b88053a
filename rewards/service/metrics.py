"""The reward service's metrics of one batch as a `RewardMetrics` (common/summary.py): sums and counts, merged by
adding them (the pool over its workers' chunks, the fleet over its rollout actors); `RewardMetrics.flat()` gives the
metric keys: `reward/total_mean`, `reward/<part>_mean` (over rows that have the part), `errors/total`,
`errors/<kind>` (kinds: registry.ERROR_KINDS), `sandbox/programs`, `sandbox/seconds_total|mean|max` (wall seconds per
sandboxed program), `sandbox/<outcome>` (finished, timeout, output_cap, crashed, refused: how programs ended),
`sandbox/orphans` (processes that outlived their run or checker and had to be killed: must be 0),
`sandbox/cpu_seconds_total|max` (CPU seconds of all of a run's processes, where per-run cgroups count them), `rows`.
The pool adds `pool/worker_restarts`, `pool/chunks_retried`, `pool/rows_scored`.
"""
from __future__ import annotations

from collections import Counter, defaultdict

from common.messages import RewardResult
from common.summary import RewardMetrics
from rewards.service.registry import error_kind


def summarize(results: list[RewardResult], sandbox_records: list[tuple[float, str]],
              orphans: int | None = None, cpu_seconds: list[float] | None = None) -> RewardMetrics:
    """Metrics of one batch: its results, the (seconds, outcome) of every sandboxed program it ran and the number of
    sandbox processes found alive after their run or checker ended (`sandbox/orphans`, must stay 0)."""
    part_values: dict[str, list[float]] = defaultdict(list)
    for result in results:
        for name, value in result.parts.items():
            part_values[name].append(value)
    seconds = [s for s, _ in sandbox_records]
    kinds = [error_kind(r.error) for r in results]  # None: no error
    return RewardMetrics(
        rows=len(results), reward_sum=sum(r.total for r in results),
        part_sums={name: sum(values) for name, values in sorted(part_values.items())},
        part_rows={name: len(values) for name, values in sorted(part_values.items())},
        errors=dict(sorted(Counter(kind for kind in kinds if kind is not None).items())),
        programs=len(seconds), program_seconds=sum(seconds), program_seconds_max=max(seconds, default=None),
        outcomes=dict(sorted(Counter(o for _, o in sandbox_records).items())), orphans=orphans,
        cpu_seconds=sum(cpu_seconds) if cpu_seconds else None,
        cpu_seconds_max=max(cpu_seconds) if cpu_seconds else None)
