"""deploy/fleet.py's pure parts: the reward service's metrics of one step, merged over the rollout actors' chunks."""
from __future__ import annotations

import pytest

from common.messages import RewardResult
from common.summary import PoolCounters, RewardMetrics, RolloutSummary
from deploy.fleet import merge_reward_metrics
from rewards.service.metrics import summarize


def summary(actor: int, metrics: RewardMetrics) -> RolloutSummary:
    return RolloutSummary(actor=actor, version=0, rows=metrics.rows, groups=[actor], reward_mean=0.0, reward_parts={},
                          reward_errors=0, reward_metrics=metrics, generate_seconds=0.0, score_seconds=0.0,
                          teacher_seconds=0.0, tokens_per_second=0.0, forwards=0, zero_variance_groups=0, samples=[])


# two actors' rows and sandboxed programs, deliberately uneven: actor 0 has 6 rows (one with a code part) and 1
# program, actor 1 has 2 rows (both with a code part) and 4 programs, so row weights differ from part and program counts
ROWS = [[RewardResult(total=1.0, parts={"sudoku": 1.0}), RewardResult(total=0.0, parts={"sudoku": 0.0}),
         RewardResult(total=0.5, parts={"sudoku": 0.5}), RewardResult(total=0.0, error="undecodable: x"),
         RewardResult(total=0.25, parts={"sudoku": 0.25}), RewardResult(total=2.0, parts={"code_tests": 2.0})],
        [RewardResult(total=0.0, parts={"code_tests": 0.0}), RewardResult(total=1.0, parts={"code_tests": 1.0})]]
PROGRAMS = [[(0.5, "finished")], [(3.0, "timeout"), (0.1, "finished"), (0.2, "crashed"), (0.9, "finished")]]
CPU = [[0.4], [2.5, 0.1, 0.2, 0.8]]


def test_merged_metrics_of_two_actors_equal_the_metrics_of_the_union():
    chunks = [summarize(ROWS[a], PROGRAMS[a], orphans=a, cpu_seconds=CPU[a]) for a in (0, 1)]
    chunks[0].pool, chunks[1].pool = PoolCounters(1, 1, 6), PoolCounters(0, 0, 2)
    merged = merge_reward_metrics([summary(a, chunks[a]) for a in (0, 1)])
    union = summarize(ROWS[0] + ROWS[1], PROGRAMS[0] + PROGRAMS[1], orphans=1, cpu_seconds=CPU[0] + CPU[1])
    union.pool = PoolCounters(worker_restarts=1, chunks_retried=1, rows_scored=8)
    expected = union.flat()
    assert merged.keys() == expected.keys()
    for key, value in expected.items():
        assert merged[key] == pytest.approx(value), key
    # the values the old row-weighted merge got wrong, against a hand count
    assert merged["sandbox/seconds_mean"] == pytest.approx((0.5 + 3.0 + 0.1 + 0.2 + 0.9) / 5)
    assert merged["reward/code_tests_mean"] == pytest.approx((2.0 + 0.0 + 1.0) / 3)
    assert merged["reward/sudoku_mean"] == pytest.approx((1.0 + 0.0 + 0.5 + 0.25) / 4)
    assert merged["reward/total_mean"] == pytest.approx(4.75 / 8)
    assert merged["sandbox/seconds_max"] == 3.0 and merged["sandbox/cpu_seconds_max"] == 2.5
    assert merged["sandbox/finished"] == 3 and merged["errors/undecodable"] == 1 and merged["sandbox/orphans"] == 1


def test_one_chunk_merges_to_itself():
    metrics = summarize(ROWS[1], PROGRAMS[1], orphans=0, cpu_seconds=CPU[1])
    assert merge_reward_metrics([summary(0, metrics)]) == metrics.flat()


def test_metrics_without_sandbox_or_pool_have_only_row_keys():
    assert merge_reward_metrics([summary(0, RewardMetrics(rows=3, reward_sum=1.5))]) == {
        "rows": 3.0, "reward/total_mean": 0.5, "errors/total": 0.0, "sandbox/programs": 0.0}
