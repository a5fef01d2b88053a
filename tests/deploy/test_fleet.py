"""deploy/fleet.py: the reward service's metrics of one step, merged over the rollout actors' chunks; the error of a
lost actor that no node can take back."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import ray

from actors.rollout import RemoteRolloutActor
from common.config import load_config
from common.messages import RewardResult
from common.summary import PoolCounters, RewardMetrics, RolloutSummary
from deploy.fleet import RestartTimeout, RolloutFleet, merge_reward_metrics, restart_timeout_message
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


CONFIG = Path(__file__).resolve().parents[2] / "configs" / "sudoku_tiny.yaml"


def test_restart_timeout_names_the_resource_and_the_key():
    cfg = load_config(CONFIG, ["rollout.resources={rollout_node: 1}", "rollout.gpus_per_actor=1",
                              "learner.gpus_per_rank=1"])
    text = restart_timeout_message(cfg, 1, 300, [{"CPU": 3.0, "GPU": 1.0}, {"CPU": 2.0, "learner_node": 2.0}])
    assert text.startswith("rollout-1 did not come back within 300 s (deploy/fleet.py RESTART_TIMEOUT_S): Ray "
                           "restarts a lost actor only on a node with {'CPU': 1.0, 'GPU': 1.0, 'rollout_node': 1.0} "
                           "free (rollout.cpus_per_actor, rollout.gpus_per_actor, rollout.resources)"), text
    assert "short of: rollout_node;" in text and "add a node that advertises rollout_node" in text
    assert "or change rollout.resources" in text
    # no custom resource: a node is merely full
    text = restart_timeout_message(load_config(CONFIG), 0, 5, [{"CPU": 0.5}])
    assert "short of: CPU;" in text and "lower those keys" in text and "{'CPU': 1.0}" in text


def test_wait_alive_gives_up_naming_the_resource(ray_local):
    """A real RolloutActor that asks for a node type the cluster lacks stays pending, as one whose node was lost
    with no replacement: wait_alive ends (here after 1 s instead of RESTART_TIMEOUT_S) with RestartTimeout."""
    cfg = load_config(CONFIG, ["rollout.resources={rollout_node: 1}"])
    fleet = RolloutFleet.__new__(RolloutFleet)  # only the actors and the config: no reward pool is needed to wait
    fleet.cfg = cfg
    fleet.actors = [RemoteRolloutActor.options(resources=dict(cfg.rollout.resources), num_cpus=1).remote(
        cfg, "unused", actor_index=0, reward_pool="reward-pool")]
    start = time.monotonic()
    try:
        with pytest.raises(RestartTimeout, match=r"rollout-0 did not come back within 1 s .*short of: rollout_node;"):
            fleet.wait_alive(0, timeout_s=1)
    finally:
        ray.kill(fleet.actors[0])
    assert time.monotonic() - start < 10
