"""`pipeline.weight_sync: broadcast` (the weight bus, gloo here) trains exactly like the object-store push: same
rewards, losses and gradient norms step by step, and a teacher gap of exactly 0 at the first inner iteration of every
step — the actors sample with bit-identical copies of the learner's weights. Many small buckets, two actors, two
FSDP ranks (rank 1 takes part in the gather only).
(Deaths during a broadcast: tests/deploy/test_fault_tolerance.py.)"""
from __future__ import annotations

import pytest
import ray

from common.config import load_config
from records import deterministic  # tests/deploy/records.py
from deploy.trainer import Trainer
from deploy.weight_sync import BroadcastSync, ObjectStoreSync

KEYS = ("reward", "version")  # the training outcome of a step
pytestmark = pytest.mark.slow
STEPS = 3


def run(jobs, tmp_path, *overrides: str) -> tuple[Trainer, list[dict], list[int], dict]:
    cfg = load_config(jobs.repo / "configs/sudoku_tiny.yaml", [
        *jobs.tiny, f"steps={STEPS}", "rollout.num_actors=2", f"cache_dir={tmp_path / 'cache'}",
        "checkpoint.export_hf=false", *overrides])
    trainer = Trainer(cfg)
    try:
        result = trainer.run()
        versions = ray.get([a.ping.remote() for a in trainer.fleet.actors])
    finally:
        trainer.shutdown()
    return trainer, jobs.step_records(trainer.run_dir), versions, result


def test_broadcast_trains_exactly_like_the_object_store(ray_local, jobs, tmp_path):
    two_ranks = ("learner.num_ranks=2", "learner.cpus_per_rank=1")
    store, ref, ref_versions, ref_result = run(jobs, tmp_path, f"run_dir={tmp_path / 'store'}", *two_ranks)
    bus, got, versions, result = run(jobs, tmp_path, f"run_dir={tmp_path / 'bus'}", *two_ranks,
                                     "pipeline.weight_sync=broadcast",
                                     "pipeline.weight_bucket_mb=0.01")  # ~10 KB buckets: many broadcasts per push
    assert isinstance(store.weight_sync, ObjectStoreSync) and isinstance(bus.weight_sync, BroadcastSync)
    assert bus.weight_sync.generation == 0  # never rebuilt
    assert versions == ref_versions == [STEPS, STEPS]
    assert [deterministic(r, KEYS) for r in got] == [deterministic(r, KEYS) for r in ref]
    for r in got:  # S_old (actor) == S_theta (learner) before the first update: the weights arrived bit for bit
        assert r["learner"]["teacher_gap_max"] == 0.0 and r["learner"]["clamp_frac"][0] == 0.0
    assert result["eval"] == ref_result["eval"]  # evaluation loads the staged weights too


def test_broadcast_async_keeps_staleness_bounded(ray_local, jobs, tmp_path):
    _, records, versions, _ = run(jobs, tmp_path, f"run_dir={tmp_path / 'run'}", "pipeline.weight_sync=broadcast",
                                  "pipeline.max_staleness=1", "eval.num_prompts=0")
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert max(r["staleness"]["max"] for r in records) <= 1
    assert versions == [STEPS, STEPS]
