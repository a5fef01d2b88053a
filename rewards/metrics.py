"""Reward metrics as one flat dict[str, float], ready for the project's Metrics sink.

Keys: `reward/total_mean`, `reward/<part>_mean` (over rows that have the part), `errors/total`, `errors/<kind>`
(kinds: registry.ERROR_KINDS), `sandbox/programs`, `sandbox/seconds_total|mean|max` (wall seconds per sandboxed
program), `sandbox/<outcome>` (finished, timeout, output_cap, crashed, refused: how programs ended),
`sandbox/orphans` (processes that outlived their run or checker and had to be killed: must be 0),
`sandbox/cpu_seconds_total|max` (CPU seconds of all of a run's processes, where per-run cgroups count them), `rows`.
The pool adds `pool/worker_restarts`, `pool/chunks_retried`, `pool/rows_scored`.
"""
from __future__ import annotations

from collections import Counter, defaultdict

from common.messages import RewardResult
from rewards.registry import error_kind


def summarize(results: list[RewardResult], sandbox_records: list[tuple[float, str]],
              orphans: int | None = None, cpu_seconds: list[float] | None = None) -> dict[str, float]:
    """Metrics of one batch: its results, the (seconds, outcome) of every sandboxed program it ran and the number of
    sandbox processes found alive after their run or checker ended (`sandbox/orphans`, must stay 0)."""
    metrics: dict[str, float] = {"rows": float(len(results))}
    if results:
        metrics["reward/total_mean"] = sum(r.total for r in results) / len(results)
    per_part: dict[str, list[float]] = defaultdict(list)
    for result in results:
        for name, value in result.parts.items():
            per_part[name].append(value)
    for name, values in sorted(per_part.items()):
        metrics[f"reward/{name}_mean"] = sum(values) / len(values)
    kinds = Counter(error_kind(r.error) for r in results if r.error is not None)
    metrics["errors/total"] = float(sum(kinds.values()))
    for kind, count in sorted(kinds.items()):
        metrics[f"errors/{kind}"] = float(count)
    seconds = [s for s, _ in sandbox_records]
    metrics["sandbox/programs"] = float(len(seconds))
    if seconds:
        metrics["sandbox/seconds_total"] = sum(seconds)
        metrics["sandbox/seconds_mean"] = sum(seconds) / len(seconds)
        metrics["sandbox/seconds_max"] = max(seconds)
    for outcome, count in sorted(Counter(o for _, o in sandbox_records).items()):
        metrics[f"sandbox/{outcome}"] = float(count)
    if orphans is not None:
        metrics["sandbox/orphans"] = float(orphans)
    if cpu_seconds:
        metrics["sandbox/cpu_seconds_total"] = sum(cpu_seconds)
        metrics["sandbox/cpu_seconds_max"] = max(cpu_seconds)
    return metrics
