"""A rollout actor killed mid-run (`ray.kill(handle, no_restart=False)`: Ray restarts it) does not end the run and
loses or duplicates no rows: the driver re-issues the dead actor's prompts to the restarted actor, after giving it the
current weights. Kill points: during a rollout (sync and async), during a weight push (sync), and idle between a
weight push and its next rollout (async; the restarted actor would otherwise sample with its initial weights). Both
weight paths: the object store, and the weight bus (`pipeline.weight_sync: broadcast`, gloo here), whose group is
rebuilt with the restarted actor. The Trainer runs in this process on the session's local Ray instance; the kill is
placed at a precise point by wrapping one of the fleet's or the weight sync's methods (the actor itself is real and
really dies).
"""
from __future__ import annotations

import logging
import time

import pytest
import ray

from common.config import load_config
from deploy.trainer import Trainer

pytestmark = pytest.mark.slow
STEPS, B, G = 4, 2, 6


def kill_and_wait_restart(victim) -> None:
    ray.kill(victim, no_restart=False)
    while True:  # until the restarted instance answers (with its initial version)
        try:
            if ray.get(victim.ping.remote()) == 0:
                break
        except ray.exceptions.RayActorError:
            time.sleep(0.2)


def run_with_kills(tmp_path, jobs, *, kills: dict[str, int], max_staleness: int,
                   weight_sync: str = "object_store") -> tuple[Trainer, dict, list[int]]:
    """Run STEPS steps with 2 actors, killing actor 1 once per entry of `kills`:
    rollout: n  right after it was handed its chunk of step n (it dies while generating)
    weights: n  object store: right after version n was queued on it (it dies while, or before, loading it);
                broadcast: right before version n is broadcast (the group has a dead member)
    idle: n     after it got version n, between two calls (Ray restarts it with version 0)"""
    cfg = load_config(jobs.repo / "configs/sudoku_tiny.yaml", [
        *jobs.tiny, f"steps={STEPS}", "rollout.num_actors=2", f"pipeline.max_staleness={max_staleness}",
        f"run_dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}", "eval.num_prompts=0",
        "checkpoint.export_hf=false", f"pipeline.weight_sync={weight_sync}", "pipeline.weight_sync_timeout_s=20"])
    trainer = Trainer(cfg)
    fleet, victim, killed = trainer.fleet, trainer.fleet.actors[1], []
    # every actor is up before the run: a kill must hit a running actor (one still in __init__ would just be created
    # again, and Ray would deliver the queued calls to the new instance; nothing to re-issue then)
    ray.get([a.ping.remote() for a in fleet.actors])
    submit, push = fleet.submit, fleet.push_weights

    def submit_then_kill(step, prompts, group_size, **kwargs):
        chunks = submit(step, prompts, group_size, **kwargs)
        if kills.get("rollout") == step:
            ray.kill(victim, no_restart=False)
            killed.append("rollout")
        return chunks

    def push_then_kill(state_ref, version):
        pushes = push(state_ref, version)
        if kills.get("weights") == version:
            ray.kill(victim, no_restart=False)
            killed.append("weights")
        if kills.get("idle") == version:
            ray.get(pushes)
            kill_and_wait_restart(victim)
            killed.append("idle")
        return pushes

    broadcast = trainer.weight_sync.push

    def broadcast_with_kills(*, wait):
        version = trainer.step + 1  # the version this call sends
        if kills.get("weights") == version:
            ray.kill(victim, no_restart=False)
            killed.append("weights")
        result = broadcast(wait=wait)
        if kills.get("idle") == version:
            kill_and_wait_restart(victim)
            killed.append("idle")
        return result

    fleet.submit = submit_then_kill
    if weight_sync == "broadcast":
        trainer.weight_sync.push = broadcast_with_kills
    else:
        fleet.push_weights = push_then_kill
    try:
        result = trainer.run()
        versions = ray.get([a.ping.remote() for a in fleet.actors])
    finally:
        trainer.shutdown()
    assert sorted(killed) == sorted(kills), killed
    return trainer, result, versions


@pytest.mark.parametrize("weight_sync,max_staleness,kills,min_reissued", [
    # sync: the chunk of step 1 is lost; the death during the step-2 push is healed by a second push
    ("object_store", 0, {"rollout": 1, "weights": 2}, 1),
    # async: the chunks of steps 0 and 1 were both queued on the victim; after the idle death the chunk launched
    # after push 2 comes back with version 0 and is re-issued
    ("object_store", 1, {"rollout": 1, "idle": 2}, 3),
    # the weight bus: the broadcast to a group with a dead member fails, the group is rebuilt and the version re-sent
    ("broadcast", 0, {"rollout": 1, "weights": 2}, 1),
    ("broadcast", 1, {"rollout": 1, "idle": 2}, 1),
], ids=["sync", "async", "broadcast-sync", "broadcast-async"])
def test_killed_rollout_actor(ray_local, jobs, tmp_path, caplog, weight_sync, max_staleness, kills, min_reissued):
    caplog.set_level(logging.WARNING, logger="deploy.fleet")
    trainer, result, versions = run_with_kills(tmp_path, jobs, kills=kills, max_staleness=max_staleness,
                                               weight_sync=weight_sync)
    if max_staleness == 0:  # the log counts steps as metrics.jsonl does (from 1): rollout batch 1 is step 2
        assert f"rollout-1 died during step {kills['rollout'] + 1}" in caplog.text, caplog.text
    assert result["step"] == STEPS
    assert result["reissued_chunks"] >= min_reissued
    if weight_sync == "broadcast":
        assert trainer.weight_sync.generation >= 2  # the group was rebuilt after each death
    assert versions == [STEPS, STEPS]  # the restarted actor holds the latest weights too

    records = jobs.step_records(trainer.run_dir)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    for r in records:
        # every step trained on exactly B x G rows: no chunk lost, none collected twice (Trainer._check_rows has
        # already compared the group ids 0..B-1 of each step), and both actors' chunks arrived
        assert r["learner"]["global_rows"] == B * G
        assert sorted(r["rollout"]) == ["actor0/tokens_per_s", "actor1/tokens_per_s"]
        # a restarted actor that sampled with its initial weights would show up as staleness > max_staleness
        assert r["staleness"]["max"] <= max_staleness
