"""`RewardPool`: splits a batch over RewardWorker actors and returns results in input order, plus metrics.

Fault handling: a chunk whose worker dies (crash, OOM kill, `ray.kill`) is re-queued and the worker replaced by a
fresh actor. Every row lands in exactly one place in the output and is counted from exactly one successful chunk
(`pool/rows_scored` == rows), so no row is lost or scored twice. A dead chunk of several rows is split in halves
before it is retried, so a row that kills its worker every time ends up alone and, after `max_attempts`, is given
reward 0 with a `worker_died` error instead of taking its neighbours (or the batch) down with it.

As a Ray actor (training): `pool = RemoteRewardPool.remote(num_workers, config=...)`, `pool.check_ready.remote()`
before training (raises SandboxUnavailable where a configured task needs the sandbox and it cannot run), then from
any rollout actor `results, metrics = ray.get(pool.score.remote(texts, metas, tasks))`, and `pool.shutdown.remote()`
at the end (the workers are also owned by the pool actor, so Ray ends them when it goes). The actor is threaded
(`MAX_CONCURRENT_CALLS` score calls at once, more wait in Ray's queue): calls from several rollout actors share the
workers, each worker lent to one call's chunk at a time, so a caller's chunks never queue behind another caller's
slow chunk on a busy worker. A dead worker is replaced once, by the call that owned its chunk (the handle is compared
under the lock), and that call re-queues its own chunk.
Create it with max_restarts=0 / max_task_retries=0 (the defaults of RemoteRewardPool): its own retries are bounded.
"""
from __future__ import annotations

import logging
import math
import threading
from collections import deque
from dataclasses import dataclass, replace

import ray
from ray.exceptions import RayActorError, RayTaskError

from common.messages import RewardResult
from common.summary import PoolCounters, RewardMetrics
from rewards.service.metrics import summarize
from rewards.service.registry import RewardServiceConfig, error_result
from rewards.service.worker import check_batch, create_workers

log = logging.getLogger(__name__)


@dataclass
class _Chunk:
    start: int
    stop: int
    attempts: int = 0


class RewardPool:
    """`num_workers` CPU-only RewardWorker actors; `score(texts, metas, tasks) -> (results, metrics)`, safe to call
    from several threads at once (the Ray actor runs up to MAX_CONCURRENT_CALLS calls at a time). `resources`: the
    custom Ray resources each worker (the first ones and every replacement) asks for, to keep them on a node type."""

    def __init__(self, num_workers: int = 2, *, num_cpus_per_worker: float = 1.0,
                 config: RewardServiceConfig | dict | None = None, chunk_size: int | None = None,
                 max_attempts: int = 3, resources: dict[str, float] | None = None) -> None:
        if max_attempts < 1:
            raise ValueError(f"RewardPool max_attempts must be >= 1, got {max_attempts}")
        self.config = (config if isinstance(config, RewardServiceConfig)
                       else RewardServiceConfig.model_validate(config or {}))
        self.num_cpus, self.resources = num_cpus_per_worker, dict(resources or {})
        self.chunk_size, self.max_attempts = chunk_size, max_attempts
        self.handles = create_workers(num_workers, num_cpus=num_cpus_per_worker, config=self.config,
                                      resources=self.resources)
        self.worker_restarts = 0
        # Workers are lent to one call's chunk at a time: `_idle` holds the indices of workers with no chunk in
        # flight; calls take from it in turn, so a slow chunk of one caller never holds up another's queue.
        self._cond = threading.Condition()
        self._idle = list(range(num_workers))
        self._closed = False

    def check_ready(self) -> list[dict[str, str]]:
        """Every worker's sandbox probe; raises SandboxUnavailable (from the first worker that cannot run a task
        that needs it), so a job fails at start instead of scoring every code row 0."""
        with self._cond:
            handles = list(self.handles)
        return ray.get([handle.check_ready.remote() for handle in handles])

    def worker_handles(self) -> list:
        """The current worker handles (for tests and for diagnostics; replaced workers get new handles)."""
        with self._cond:
            return list(self.handles)

    def busy_workers(self) -> list[int]:
        """Indices of the workers with a chunk in flight (for tests that must act mid-batch, and for diagnostics)."""
        with self._cond:
            return sorted(set(range(len(self.handles))) - set(self._idle))

    def _replace(self, index: int, dead) -> bool:
        """Replace worker `index` if it is still the `dead` handle (True if this call replaced it)."""
        with self._cond:
            if self._closed or self.handles[index] is not dead:
                return False
            try:
                ray.kill(dead, no_restart=True)
            except Exception:  # noqa: BLE001  (already dead is fine)
                pass
            self.handles[index] = create_workers(1, num_cpus=self.num_cpus, config=self.config,
                                                 resources=self.resources)[0]
            self.worker_restarts += 1
            return True

    def _take_worker(self, block: bool) -> int | None:
        """An idle worker's index (waiting up to a moment for one when `block`), or None."""
        with self._cond:
            if block and not self._idle and not self._closed:
                self._cond.wait(timeout=0.5)
            if self._closed:
                raise RuntimeError("RewardPool was shut down while a score call was running")
            return self._idle.pop() if self._idle else None

    def _give_back(self, index: int) -> None:
        with self._cond:
            self._idle.append(index)
            self._cond.notify_all()

    def score(self, texts: list[str], metas: list[dict], tasks: list[str]
              ) -> tuple[list[RewardResult], RewardMetrics]:
        """Results in input order and merged metrics (rewards/service/metrics.py plus pool/* counters of this call)."""
        check_batch(texts, metas, tasks)
        with self._cond:
            if self._closed:
                raise RuntimeError("RewardPool was shut down")
        n = len(texts)
        # Two chunks per worker: an idle worker picks up the next chunk while a slow one finishes.
        size = self.chunk_size or max(1, math.ceil(n / (2 * len(self.handles))))
        pending = deque(_Chunk(a, min(a + size, n)) for a in range(0, n, size))
        results: list[RewardResult | None] = [None] * n
        inflight: dict[ray.ObjectRef, tuple[int, object, _Chunk]] = {}
        batch_metrics: list[RewardMetrics] = []
        restarts, retried = 0, 0
        try:
            while pending or inflight:
                while pending:
                    index = self._take_worker(block=not inflight)
                    if index is None:
                        break
                    chunk = pending.popleft()
                    with self._cond:
                        handle = self.handles[index]
                    ref = handle.score_with_metrics.remote(
                        texts[chunk.start:chunk.stop], metas[chunk.start:chunk.stop], tasks[chunk.start:chunk.stop])
                    inflight[ref] = (index, handle, chunk)
                if not inflight:
                    continue
                # With chunks still pending, look again soon for a worker another call gave back.
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.05 if pending else None)
                for ref in ready:
                    index, handle, chunk = inflight.pop(ref)
                    try:
                        chunk_results, metrics = ray.get(ref)
                    except RayActorError as exc:
                        log.warning("reward worker %d died on rows %d:%d (%s); replacing it and re-scoring",
                                    index, chunk.start, chunk.stop, type(exc).__name__)
                        restarts += self._replace(index, handle)
                        retried += 1
                        self._requeue(chunk, pending, results, exc)
                    except RayTaskError as exc:  # score itself raised (it catches row errors, so a bug): rows get 0
                        for i in range(chunk.start, chunk.stop):
                            results[i] = error_result("exception", f"reward worker raised {exc.cause!r}")
                    else:
                        results[chunk.start:chunk.stop] = chunk_results
                        batch_metrics.append(metrics)
                    self._give_back(index)
        finally:
            for index, _, _ in inflight.values():  # only on an exception: the workers go back to the others
                self._give_back(index)
        final = [r for r in results if r is not None]
        assert len(final) == n, "every chunk ends in results, an error row, or a re-queue"
        return final, _merge(final, batch_metrics, restarts=restarts, retried=retried)

    def _requeue(self, chunk: _Chunk, pending: deque, results: list, exc: Exception) -> None:
        if chunk.stop - chunk.start > 1:  # split to isolate a row that kills workers; splitting costs no attempt
            middle = (chunk.start + chunk.stop) // 2
            pending.extendleft([_Chunk(middle, chunk.stop, chunk.attempts),
                                _Chunk(chunk.start, middle, chunk.attempts)])
        elif chunk.attempts + 1 < self.max_attempts:
            pending.appendleft(_Chunk(chunk.start, chunk.stop, chunk.attempts + 1))
        else:
            results[chunk.start] = error_result("worker_died", f"the worker died {self.max_attempts} times on this "
                                                               f"row ({type(exc).__name__})")

    def shutdown(self) -> None:
        """Kill every worker (idempotent); score calls still running raise."""
        with self._cond:
            self._closed = True
            handles, self.handles = self.handles, []
            self._cond.notify_all()
        for handle in handles:
            try:
                ray.kill(handle, no_restart=True)
            except Exception:  # noqa: BLE001  (already dead is fine)
                pass


MAX_CONCURRENT_CALLS = 8  # score calls the pool actor serves at once (rollout actors); more wait in Ray's queue
# ignore: Ray's stubs type ray.remote(**options) with the task options only (no max_concurrency)
RemoteRewardPool = ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0,  # type: ignore[call-overload]
                              max_concurrency=MAX_CONCURRENT_CALLS)(RewardPool)


def _merge(results: list[RewardResult], batch_metrics: list[RewardMetrics], *, restarts: int,
           retried: int) -> RewardMetrics:
    """Pool-level metrics: reward/error stats recomputed over all rows (rows of a chunk whose worker raised included),
    sandbox stats added up from the chunks."""
    merged = RewardMetrics.merge(batch_metrics)
    rows = summarize(results, [])
    return replace(merged, rows=rows.rows, reward_sum=rows.reward_sum, part_sums=rows.part_sums,
                   part_rows=rows.part_rows, errors=rows.errors,
                   pool=PoolCounters(worker_restarts=restarts, chunks_retried=retried, rows_scored=merged.rows))
