"""`RewardWorker`: a CPU-only Ray actor that scores a batch of replies, one result per row, in input order.

Training scores through `RewardPool` (rewards/service/pool.py), which splits a batch over these workers, replaces a dead
one and collects metrics via `score_with_metrics`. A row that fails in any way (exception, undecodable text, a reply
over `max_reply_chars`, a verifier exceeding `row_timeout_s`) gets reward 0 and an error string; a batch never fails.
Workers are created with Ray restarts and task retries off: the pool owns recovery, with a bounded number of attempts.
"""
from __future__ import annotations

import concurrent.futures as futures
import math
import os
import time

import ray

from common.messages import RewardResult
from common.summary import RewardMetrics
from rewards.service.metrics import summarize
from rewards.service.registry import RewardServiceConfig, Scorer, error_result


def check_batch(texts: list, metas: list, tasks: list) -> None:
    if not (len(texts) == len(metas) == len(tasks)):
        raise ValueError(f"score(texts, metas, tasks): lengths differ ({len(texts)}, {len(metas)}, {len(tasks)})")


class RewardWorkerImpl:
    """The actor's body (a plain class, so tests and single-process tools can use it without Ray)."""

    def __init__(self, config: RewardServiceConfig | dict | None = None) -> None:
        self.config = (config if isinstance(config, RewardServiceConfig)
                       else RewardServiceConfig.model_validate(config or {}))
        self.scorer = Scorer(self.config)

    def check_ready(self) -> dict[str, str]:
        """Raises SandboxUnavailable if a configured task needs the sandbox and it cannot run on this node."""
        return self.scorer.check_ready()

    def score(self, texts: list[str], metas: list[dict], tasks: list[str]) -> list[RewardResult]:
        """One RewardResult per row, in input order."""
        return self.score_with_metrics(texts, metas, tasks)[0]

    def score_with_metrics(self, texts: list[str], metas: list[dict], tasks: list[str]
                           ) -> tuple[list[RewardResult], RewardMetrics]:
        """Results in input order and this batch's metrics (see rewards/service/metrics.py)."""
        check_batch(texts, metas, tasks)
        self.scorer.sandbox.drain_records()  # records of an abandoned earlier batch are not this batch's
        orphans_before = self.scorer.sandbox.drain_orphans()  # never lost: counted into this batch
        self.scorer.sandbox.drain_cpu_seconds()
        threads = self.config.threads or _assigned_cpus()
        # The safety net scales with the rows each thread has to do; inner timeouts normally end a row far sooner.
        deadline = time.monotonic() + self.config.row_timeout_s * math.ceil(max(1, len(texts)) / threads)
        pool = futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="reward-row")
        try:
            jobs = [pool.submit(self.scorer.score, task, meta, text) for text, meta, task in zip(texts, metas, tasks)]
            results = []
            for job in jobs:
                try:
                    results.append(job.result(timeout=max(0.0, deadline - time.monotonic())))
                except futures.TimeoutError:
                    results.append(error_result("timeout", f"row not scored within the worker's safety net "
                                                           f"({self.config.row_timeout_s}s per row)"))
                except Exception as exc:  # noqa: BLE001  (Scorer.score catches everything; this is belt and braces)
                    results.append(error_result("exception", f"{type(exc).__name__}: {exc}"))
        finally:
            # A row stuck past the safety net keeps its thread; do not wait for it.
            pool.shutdown(wait=False, cancel_futures=True)
        return results, summarize(results, self.scorer.sandbox.drain_records(),
                                  orphans_before + self.scorer.sandbox.drain_orphans(),
                                  self.scorer.sandbox.drain_cpu_seconds())

    def pid(self) -> int:
        """The worker's process id (tests use it; also a cheap liveness check)."""
        return os.getpid()

    def close(self) -> None:
        self.scorer.close()


def _assigned_cpus() -> int:
    """CPUs Ray reserved for this actor (at least 1), or 1 outside Ray."""
    if not ray.is_initialized():
        return 1
    return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))


RewardWorker = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(RewardWorkerImpl)


def create_workers(num_workers: int, *, num_cpus: float = 1.0, config: RewardServiceConfig | None = None,
                   resources: dict[str, float] | None = None) -> list:
    """`num_workers` RewardWorker actor handles, each reserving `num_cpus` CPUs, no GPU and the custom Ray
    `resources` (placement on a node type, e.g. {reward_node: 1}); no Ray restarts or retries (a row that kills its
    worker must not be retried forever: RewardPool bounds the attempts)."""
    if num_workers < 1:
        raise ValueError(f"rewards.num_workers must be >= 1, got {num_workers}")
    return [RewardWorker.options(num_cpus=num_cpus, num_gpus=0, resources=dict(resources or {})).remote(config)
            for _ in range(num_workers)]
