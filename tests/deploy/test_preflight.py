"""Late mistakes fail fast, before any actor exists (deploy/preflight.py, called by deploy/job.py).

Each used to surface after the expensive start: a missing model.path at the end of a 40-line traceback after the
learner started, --resume without a checkpoint after the actors were built (leaving files behind), a cluster without
the requested resources as a progress bar at 0% forever. The job runs in this process on the session's Ray instance
(8 logical CPUs, no GPU), so the timing covers the job's own work; the actor table of Ray's GCS (dead actors
included) must not grow.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from ray._private.state import actors as gcs_actors

from deploy import job
from deploy.preflight import demands, shortfalls
from common.config import load_config

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "sudoku_tiny.yaml")


def run_job(tmp_path, capsys, *overrides, resume=False):
    """(exit code, stderr, seconds); asserts that no actor was created. Module imports are done first (a config
    load imports torch): the 5 s are the job's own work, not a cold interpreter on a loaded box."""
    load_config(CONFIG)
    before = set(gcs_actors())
    start = time.monotonic()
    code = job.main(["--config", CONFIG, f"run_dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}", *overrides]
                    + (["--resume"] if resume else []))
    seconds = time.monotonic() - start
    assert set(gcs_actors()) == before, "an actor was created before the mistake was reported"
    return code, capsys.readouterr().err, seconds


def test_missing_model_path(ray_local, tmp_path, capsys):
    code, err, seconds = run_job(tmp_path, capsys, f"model.path={tmp_path / 'no-such-model'}")
    assert code == 2 and seconds < 5
    assert "'model.path'" in err and "no-such-model" in err and "is not a directory" in err
    assert not (tmp_path / "run").exists()


def test_model_path_without_config_json(ray_local, tmp_path, capsys):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.safetensors").write_bytes(b"")
    code, err, seconds = run_job(tmp_path, capsys, f"model.path={tmp_path / 'weights'}")
    assert code == 2 and seconds < 5
    assert "'model.path'" in err and "no config.json" in err and "model.safetensors" in err


def test_resume_without_checkpoint(ray_local, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    code, err, seconds = run_job(tmp_path, capsys, resume=True)
    assert code == 2 and seconds < 5
    assert "--resume: no checkpoint in run_dir" in err
    assert list((tmp_path / "run").iterdir()) == []  # nothing left behind


@pytest.mark.parametrize("overrides, expected", [
    (["learner.gpus_per_rank=1", "rollout.gpus_per_actor=1"],
     "GPU: the config asks for 2 (rollout.num_actors x rollout.gpus_per_actor = 1 + learner.num_ranks x "
     "learner.gpus_per_rank = 1), the cluster has 0"),
    (["rollout.cpus_per_actor=20"], "CPU: the config asks for 21.5 (rollout.num_actors x rollout.cpus_per_actor = 20 "
                                    "+ reward.num_workers x reward.cpus_per_worker = 0.5 + learner.num_ranks x "
                                    "learner.cpus_per_rank = 1)"),
    (["rollout.resources={rollout_node: 1}"], "rollout_node: the config asks for 1 (rollout.num_actors x "
                                              "rollout.resources.rollout_node = 1), the cluster has 0"),
])
def test_cluster_lacking_resources(ray_local, tmp_path, capsys, overrides, expected):
    code, err, seconds = run_job(tmp_path, capsys, *overrides)
    assert code == 2 and seconds < 5
    assert expected in err, err
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").iterdir())


def test_head_started_with_the_core_count_is_named():
    """`python -m deploy.head start` defaults to the core count (2 on the dev box); the tiny config needs 2.5."""
    problems = shortfalls(demands(load_config(CONFIG)), [{"CPU": 2.0, "memory": 1e9}])
    assert problems == ["CPU: the config asks for 2.5 (rollout.num_actors x rollout.cpus_per_actor = 1 + "
                        "reward.num_workers x reward.cpus_per_worker = 0.5 + learner.num_ranks x learner.cpus_per_rank "
                        "= 1), the cluster has 2"]
    assert shortfalls(demands(load_config(CONFIG)), [{"CPU": 3.0}]) == []


def test_reward_resources_count_the_workers_and_the_pool():
    """reward.resources are asked by each worker and by the pool actor (num_workers + 1 times); a node must hold one
    worker with its CPUs."""
    cfg = load_config(CONFIG, ["reward.num_workers=2", "reward.resources={reward_node: 1}"])
    assert ("reward pool", 1, {"reward_node": 1.0}) in demands(cfg)
    assert shortfalls(demands(cfg), [{"CPU": 4.0}, {"CPU": 1.0, "reward_node": 3.0}]) == []
    assert shortfalls(demands(cfg), [{"CPU": 4.0}, {"CPU": 1.0, "reward_node": 2.0}]) == [
        "reward_node: the config asks for 3 (reward.num_workers x reward.resources.reward_node = 2 + the reward pool "
        "actor x reward.resources.reward_node = 1), the cluster has 2"]
    problems = shortfalls(demands(cfg), [{"CPU": 4.0}, {"CPU": 0.25, "reward_node": 3.0}])
    assert len(problems) == 1 and "one reward actor asks for {'CPU': 0.5, 'reward_node': 1.0} (reward.* keys)" in \
        problems[0]


def test_each_actor_must_fit_on_one_node():
    cfg = load_config(CONFIG, ["learner.cpus_per_rank=3"])
    problems = shortfalls(demands(cfg), [{"CPU": 2.0}, {"CPU": 2.0}, {"CPU": 2.0}])
    assert len(problems) == 1 and "one learner rank asks for {'CPU': 3.0}" in problems[0]


def test_config_whose_memory_plan_exceeds_the_gpu(ray_local, tmp_path, capsys):
    """deploy/plan.py at start: an actor or rank that cannot fit one GPU fails before any actor exists, naming the
    plan line and the keys that shrink it (the GPU memory from cluster.gpu_mem_gib here; no GPU on this box)."""
    code, err, seconds = run_job(tmp_path, capsys, "learner.gpus_per_rank=1", "rollout.gpus_per_actor=1",
                                 "cluster.gpu_mem_gib=3", "learner.micro_batch_rows=24",
                                 "cluster.plan_prompt_tokens=4096")
    assert code == 2 and seconds < 5
    assert "preflight error: the memory plan does not fit a GPU of 3 GiB (cluster.gpu_mem_gib)" in err, err
    assert "one learner rank needs" in err and "'activations (micro-batch)'" in err
    assert "learner.micro_batch_rows" in err and "learner.activation_checkpointing" in err
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").iterdir())
    # the same config with checkpointing and short prompts fits; the job then stops at the next check (no GPU here)
    code, err, _ = run_job(tmp_path, capsys, "learner.gpus_per_rank=1", "rollout.gpus_per_actor=1",
                           "cluster.gpu_mem_gib=3", "cluster.plan_prompt_tokens=64", "--overwrite")
    assert code == 2 and "memory plan" not in err and "GPU: the config asks for 2" in err, err
