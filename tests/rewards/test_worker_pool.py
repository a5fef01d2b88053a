"""RewardWorker and RewardPool on a local Ray: order, per-row errors, metrics, math off the main thread, a worker
killed mid-batch (also with the pool itself a Ray actor, as training uses it), no leaked workers, and the start-up
check that fails a job whose code task cannot run its sandbox."""
from __future__ import annotations

import threading
import time
from collections import deque

import pytest

import ray

from rewards.verifiers.math_answer import MathChecker, math_correctness
from rewards.service.pool import RemoteRewardPool, RewardPool, _Chunk
from rewards.sandbox import SandboxConfig, SandboxUnavailable
from rewards.service.registry import RewardServiceConfig
from rewards.service.worker import create_workers

SUDOKU = {"puzzle": "1004300220034001", "solution": "1234341221434321"}
ADD = "```python\ndef add(a, b):\n    return a + b\n```\n"


def wait_until(condition, what: str, timeout_s: float = 120.0) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout_s` (a slow machine only waits longer)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def mixed_batch() -> tuple[list, list[dict], list[str], list[float | None]]:
    """(texts, metas, tasks, expected totals; None where the row must be an error row)."""
    rows = [
        ("<answer>1234341221434321</answer>", SUDOKU, "sudoku", 1.0),
        ("<answer>(3+5)*2</answer>", {"numbers": [3, 5, 2], "target": 16}, "countdown", 1.0),
        ("<answer>__import__('os')</answer>", {"numbers": [3, 5, 2], "target": 16}, "countdown", 0.1),
        ("<reasoning>\nr\n</reasoning>\n<answer>\n72\n</answer>\n", {"answer": "72"}, "gsm8k", 3.987),
        ("<answer>\\boxed{\\frac{2}{4}}</answer>", {"answer": "0.5"}, "math", 3.0),
        (ADD, {"tests": ["assert add(1, 2) == 3", "assert add(1, 1) == 3"]}, "code", 1.5),
        ("x", {}, "poetry", None),  # unknown task
        ("<answer>1</answer>", {"puzzle": "1"}, "sudoku", None),  # bad meta
        (b"\xff\xfe<answer>", SUDOKU, "sudoku", None),  # undecodable bytes
        ("bad \udc80 surrogate", SUDOKU, "sudoku", None),  # not encodable as UTF-8
        (None, SUDOKU, "sudoku", None),  # not text at all
        ("<answer>0000000000000000</answer>", SUDOKU, "sudoku", 0.0),
    ]
    texts, metas, tasks, expected = (list(col) for col in zip(*rows))
    return texts, metas, tasks, expected


def check(results, expected) -> None:
    assert len(results) == len(expected)
    for i, (result, want) in enumerate(zip(results, expected)):
        if want is None:
            assert result.total == 0.0 and result.error, (i, result)
        else:
            assert result.error is None and result.total == pytest.approx(want), (i, result)


def test_worker_scores_a_mixed_batch_in_order(ray_local):
    worker = create_workers(1, num_cpus=1, config=RewardServiceConfig(threads=2))[0]
    texts, metas, tasks, expected = mixed_batch()
    results = ray.get(worker.score.remote(texts, metas, tasks))  # the call rollout actors make
    check(results, expected)
    kinds = [r.error.split(":")[0] for r in results if r.error]
    assert kinds == ["unknown_task", "bad_meta", "undecodable", "undecodable", "bad_input"]
    ray.kill(worker)


def test_worker_rejects_mismatched_lengths(ray_local):
    worker = create_workers(1, num_cpus=1)[0]
    with pytest.raises(ray.exceptions.RayTaskError, match="lengths differ"):
        ray.get(worker.score.remote(["a", "b"], [{}], ["sudoku", "sudoku"]))
    ray.kill(worker)


@ray.remote(num_cpus=0, max_concurrency=2)
class ThreadedCaller:
    """A threaded actor: its methods run on non-main threads, where math-verify's signal.alarm cannot work."""

    def __init__(self) -> None:
        self.checker = MathChecker()

    def score(self, gold: str, text: str) -> tuple[bool, float]:
        on_main = threading.current_thread() is threading.main_thread()
        return on_main, math_correctness({"answer": gold}, text, checker=self.checker).total


def test_math_scores_on_a_ray_actor_thread(ray_local):
    caller = ThreadedCaller.remote()
    on_main, total = ray.get(caller.score.remote("\\frac{1}{3}", "<answer>\\boxed{2/6}</answer>"))
    assert not on_main and total == 2.0
    on_main, total = ray.get(caller.score.remote("\\frac{1}{3}", "<answer>\\boxed{0.3}</answer>"))
    assert not on_main and total == 0.0
    ray.kill(caller)


def test_pool_keeps_order_and_reports_metrics(ray_local):
    pool = RewardPool(2, config=RewardServiceConfig(threads=1), chunk_size=3)
    try:
        texts, metas, tasks, expected = mixed_batch()
        # many rows whose totals reveal their position: countdown targets 0..29, every other answer right
        for k in range(30):
            right = k % 2 == 0
            texts.append(f"<answer>{k}+1-1</answer>" if right else f"<answer>{k}+1+1</answer>")
            metas.append({"numbers": [k, 1, 1], "target": k})
            tasks.append("countdown")
            expected.append(1.0 if right else 0.1)
        results, metrics = pool.score(texts, metas, tasks)
        metrics = metrics.flat()
        check(results, expected)
        assert metrics["rows"] == len(texts) == metrics["pool/rows_scored"]
        assert metrics["errors/total"] == 5 and metrics["errors/undecodable"] == 2
        assert metrics["reward/code_tests_mean"] == 0.5 and metrics["reward/sudoku_mean"] == 0.5
        assert metrics["sandbox/programs"] == 1 and metrics["sandbox/finished"] == 1
        assert 0 < metrics["sandbox/seconds_mean"] < 5
        assert metrics["pool/worker_restarts"] == 0
    finally:
        pool.shutdown()


def test_pool_survives_a_worker_killed_mid_batch(ray_local):
    pool = RewardPool(2, config=RewardServiceConfig(threads=1), chunk_size=2)
    try:
        n = 12
        # each program sleeps 0.4 s in the sandbox and returns its row number, so a row scored for another row's
        # meta (or twice into the wrong slot) would fail its test
        texts = [f"```python\nimport time\ntime.sleep(0.4)\ndef row():\n    return {i}\n```\n" for i in range(n)]
        metas = [{"tests": [f"assert row() == {i}"]} for i in range(n)]
        out: dict = {}
        scorer = threading.Thread(target=lambda: out.update(zip(("results", "metrics"),
                                                                 pool.score(texts, metas, ["code"] * n))))
        victim = pool.handles[0]
        ray.get(victim.pid.remote())  # started and busy-able
        scorer.start()
        wait_until(lambda: 0 in pool.busy_workers(), "worker 0 never got a chunk")
        assert scorer.is_alive(), "the batch finished before the kill: make the rows slower"
        ray.kill(victim)
        scorer.join(timeout=120)
        results, metrics = out["results"], out["metrics"]
        assert [r.total for r in results] == [2.0] * n, results
        assert metrics.pool.worker_restarts == 1 and metrics.pool.chunks_retried == 1
        assert metrics.pool.rows_scored == n  # every row counted from exactly one successful chunk
        assert pool.handles[0] is not victim
        assert ray.get(pool.handles[0].pid.remote()) > 0  # the replacement works
    finally:
        pool.shutdown()


def test_a_row_that_keeps_killing_workers_is_isolated():
    """The re-queue rule: dead chunks split in halves; a single row gets max_attempts tries, then an error."""
    pool = RewardPool.__new__(RewardPool)
    pool.max_attempts = 2
    pending: deque = deque()
    results: list = [None] * 4
    pool._requeue(_Chunk(0, 4), pending, results, RuntimeError("died"))
    assert [(c.start, c.stop, c.attempts) for c in pending] == [(0, 2, 0), (2, 4, 0)]
    pending.clear()
    pool._requeue(_Chunk(1, 2), pending, results, RuntimeError("died"))
    assert [(c.start, c.stop, c.attempts) for c in pending] == [(1, 2, 1)]
    pending.clear()
    pool._requeue(_Chunk(1, 2, attempts=1), pending, results, RuntimeError("died"))
    assert not pending and results[1].error.startswith("worker_died:") and results[1].total == 0.0


def _slow_code_rows(n: int) -> tuple[list[str], list[dict]]:
    """Each program sleeps 0.4 s in the sandbox and returns its row number, so a row scored for another row's meta
    (or twice into the wrong slot) fails its test."""
    texts = [f"```python\nimport time\ntime.sleep(0.4)\ndef row():\n    return {i}\n```\n" for i in range(n)]
    return texts, [{"tests": [f"assert row() == {i}"]} for i in range(n)]


def _alive(handle) -> bool:
    try:
        ray.get(handle.pid.remote(), timeout=30)
        return True
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return False


def test_pool_as_an_actor_survives_a_killed_worker_and_leaks_none(ray_local):
    pool = RemoteRewardPool.remote(2, config={"threads": 1}, chunk_size=2)
    victim = ray.get(pool.worker_handles.remote())[0]
    assert _alive(victim)
    n = 12
    texts, metas = _slow_code_rows(n)
    pending = pool.score.remote(texts, metas, ["code"] * n)  # the call rollout actors make
    wait_until(lambda: 0 in ray.get(pool.busy_workers.remote()), "worker 0 never got a chunk")
    ray.kill(victim)
    results, metrics = ray.get(pending, timeout=180)
    assert [r.total for r in results] == [2.0] * n, results  # no row lost, none scored for another
    assert metrics.pool.worker_restarts == 1 and metrics.pool.rows_scored == n
    workers = ray.get(pool.worker_handles.remote())
    assert victim not in workers and all(_alive(w) for w in workers)
    ray.get(pool.shutdown.remote())
    # ray.kill only asks Ray to end an actor: a worker may still answer for a moment (seen once in CI under load)
    wait_until(lambda: not any(_alive(w) for w in workers), "shutdown left a reward worker alive", timeout_s=60)
    # workers are owned by the pool actor: if the pool goes without shutdown, Ray ends them with it
    pool2 = RemoteRewardPool.remote(1)
    orphans = ray.get(pool2.worker_handles.remote())
    ray.kill(pool2)
    wait_until(lambda: not any(_alive(w) for w in orphans), "a killed pool leaked its workers", timeout_s=60)


def test_check_ready_fails_the_job_when_a_code_task_cannot_run_its_sandbox(ray_local):
    broken = RewardServiceConfig(sandbox=SandboxConfig(bwrap="/nonexistent/bwrap"))
    pool = RemoteRewardPool.remote(1, config=broken)
    try:
        with pytest.raises(SandboxUnavailable, match=r"tasks \['code'\] run generated code.*bubblewrap"):
            ray.get(pool.check_ready.remote())
    finally:
        ray.get(pool.shutdown.remote())
        ray.kill(pool)
    # without a code task nothing needs the sandbox: the same machine is ready
    no_code = broken.model_copy(update={"reward_functions": {"sudoku": ["sudoku"]}})
    ok = RewardPool(1, config=no_code)
    try:
        assert ok.check_ready() == [{}]
    finally:
        ok.shutdown()
    good = RewardPool(1)
    try:
        (ready,) = good.check_ready()
        assert ready["mode"] == "bwrap" and ready["seccomp"] == "on"
    finally:
        good.shutdown()


def _numbered_rows(first: int, n: int, sleep_s: float = 0.0) -> tuple[list[str], list[dict]]:
    """Rows whose program returns its own number: a row scored for another caller's meta fails its test."""
    texts = [f"```python\nimport time\ntime.sleep({sleep_s})\ndef row():\n    return {i}\n```\n"
             for i in range(first, first + n)]
    return texts, [{"tests": [f"assert row() == {i}"], "timeout_s": 5.0} for i in range(first, first + n)]


def test_pool_actor_serves_callers_concurrently(ray_local):
    """Issue 23, class 8: a caller with fast rows is not queued behind another caller's slow row (the pool used to
    serve one score call at a time), and concurrent callers each get their own rows back, in order."""
    pool = RemoteRewardPool.remote(2, config={"threads": 1})
    try:
        ray.get(pool.check_ready.remote())
        slow_texts, slow_metas = _numbered_rows(1000, 1, sleep_s=4.0)
        fast_texts, fast_metas = _numbered_rows(0, 3)
        slow = pool.score.remote(slow_texts, slow_metas, ["code"])
        wait_until(lambda: ray.get(pool.busy_workers.remote()), "the slow row never reached a worker")
        start = time.monotonic()
        fast_results, _ = ray.get(pool.score.remote(fast_texts, fast_metas, ["code"] * 3), timeout=120)
        fast_s = time.monotonic() - start
        assert [r.total for r in fast_results] == [2.0] * 3
        assert not ray.wait([slow], timeout=0)[0], f"the fast call ({fast_s:.1f}s) waited for the slow one"
        assert [r.total for r in ray.get(slow, timeout=120)[0]] == [2.0]
        calls = [pool.score.remote(*_numbered_rows(100 * c, 5), ["code"] * 5) for c in range(4)]
        for results, metrics in ray.get(calls, timeout=300):
            assert [r.total for r in results] == [2.0] * 5 and metrics.pool.rows_scored == 5
    finally:
        ray.get(pool.shutdown.remote())
        ray.kill(pool)


def test_concurrent_callers_survive_a_killed_worker(ray_local):
    """Dead-worker replacement with several calls in flight: the worker is replaced once, every caller gets all of
    its rows, each scored for its own meta."""
    pool = RemoteRewardPool.remote(2, config={"threads": 1}, chunk_size=1)
    try:
        victim = ray.get(pool.worker_handles.remote())[0]
        assert _alive(victim)
        calls = [pool.score.remote(*_numbered_rows(100 * c, 4, sleep_s=0.4), ["code"] * 4) for c in range(3)]
        wait_until(lambda: 0 in ray.get(pool.busy_workers.remote()), "worker 0 never got a chunk")
        assert len(ray.wait(calls, num_returns=3, timeout=0)[0]) < 3, "the calls finished before the kill"
        ray.kill(victim)
        outs = ray.get(calls, timeout=300)
        for results, _ in outs:
            assert [r.total for r in results] == [2.0] * 4, results
        assert sum(m.pool.worker_restarts for _, m in outs) == 1
        workers = ray.get(pool.worker_handles.remote())
        assert victim not in workers and all(_alive(w) for w in workers)
    finally:
        ray.get(pool.shutdown.remote())
        ray.kill(pool)
