"""`learner.max_restarts`: a learner rank that dies mid-run (here rank 1 of 2, killed right before step 3's update,
so rank 0 would sit in a collective) makes the driver rebuild the learner group from the last checkpoint (step 2)
and go on. With synchronous rollouts seeded by (seed, step, group) the run then ends exactly where an uninterrupted
run ends: the same records for every step and the same evaluation. Both weight paths: the object store, and the
weight bus, whose group is rebuilt with the new rank 0 (a new TCPStore the actors connect to)."""
from __future__ import annotations

import pytest
import ray

from common.config import load_config
from records import deterministic  # tests/deploy/records.py
from deploy.trainer import Trainer

KEYS = ("reward", "version")  # the training outcome of a step
pytestmark = pytest.mark.slow
STEPS, KILL_AT = 4, 3


def run(jobs, tmp_path, name: str, *overrides: str, kill: bool) -> tuple[dict, dict[int, dict]]:
    cfg = load_config(jobs.repo / "configs/sudoku_tiny.yaml", [
        *jobs.tiny, f"steps={STEPS}", "learner.num_ranks=2", "learner.cpus_per_rank=1", "learner.micro_batch_rows=6",
        "checkpoint.every=2", "checkpoint.export_hf=false", "learner.max_restarts=1", f"run_dir={tmp_path / name}",
        f"cache_dir={tmp_path / 'cache'}", *overrides])
    trainer = Trainer(cfg)
    first = trainer.learner
    train_step = first.train_step

    def train_step_then_die(batch_refs):
        if trainer.step + 1 == KILL_AT:  # the update of step KILL_AT
            ray.kill(first.workers[1], no_restart=True)
        return train_step(batch_refs)

    if kill:
        first.train_step = train_step_then_die
    try:
        result = trainer.run()
    finally:
        trainer.shutdown()
    if kill:
        assert trainer.learner is not first
    records = {r["step"]: r for r in jobs.step_records(trainer.run_dir)}  # the last record of a step wins
    return result, records


@pytest.mark.parametrize("weight_sync", ["object_store", "broadcast"])
def test_dead_learner_rank_restarts_from_checkpoint(ray_local, jobs, tmp_path, weight_sync):
    sync = f"pipeline.weight_sync={weight_sync}"
    ref_result, ref = run(jobs, tmp_path, "ref", sync, kill=False)
    result, got = run(jobs, tmp_path, "killed", sync, kill=True)
    assert ref_result["learner_restarts"] == 0 and result["learner_restarts"] == 1
    assert result["step"] == STEPS and sorted(got) == sorted(ref) == list(range(1, STEPS + 1))
    assert {s: deterministic(r, KEYS) for s, r in got.items()} == {s: deterministic(r, KEYS) for s, r in ref.items()}
    assert result["eval"] == ref_result["eval"]


def test_without_restarts_the_job_ends(ray_local, jobs, tmp_path):
    with pytest.raises(ray.exceptions.RayActorError):
        run(jobs, tmp_path, "ends", "learner.max_restarts=0", "eval.num_prompts=0", kill=True)
