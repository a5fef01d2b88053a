"""Shared test data of the learner tests: two real rollout batches from a RolloutActor, with random (non-zero)
rewards so the GDSD term has a gradient."""
from __future__ import annotations

from contextlib import contextmanager

import ray
import torch

from actors.advantages import leave_one_out
from actors.rollout import RemoteRolloutActor
from common.batch import RolloutBatch
from common.tasks import make_prompts
from learner.group import LearnerGroup
from rewards.service.pool import RemoteRewardPool

GROUP = 6


def with_advantages(table, seed: int):
    """The actor's batch with seeded random rewards and their leave-one-out advantages, back in the object store."""
    batch = RolloutBatch.from_arrow(table)
    batch.reward = torch.rand(batch.num_rows, generator=torch.Generator().manual_seed(seed))
    batch.advantage = leave_one_out(batch.reward, GROUP)
    return ray.put(batch.to_arrow())


@contextmanager
def actor_batches(cfg, model_dir):
    """(cfg, actor, prompts, two batch refs of 2 prompts x GROUP rows each); the actor and pool are killed after."""
    pool = RemoteRewardPool.remote(1, num_cpus_per_worker=0.5)
    actor = RemoteRolloutActor.options(num_cpus=1).remote(cfg, model_dir, reward_pool=pool)
    prompts = make_prompts(task="sudoku", prompt_format="compact", split="train", num=4, seed=1)
    refs = [actor.rollout.remote(prompts[i:i + 2], GROUP)[0] for i in (0, 2)]
    try:
        yield cfg, actor, prompts, [with_advantages(ray.get(r), i) for i, r in enumerate(refs)]
    finally:
        ray.kill(actor)
        ray.get(pool.shutdown.remote())
        ray.kill(pool)


def full_state(group) -> dict:
    """Every weight of a LearnerGroup, gathered through its export path (rank 0 -> object store)."""
    ref, _ = group.export_weights()
    return ray.get(ref)


def run_step(cfg, model_dir, batch_refs) -> tuple[dict, dict]:
    """One learner step of a fresh LearnerGroup on `batch_refs`: (its metrics, every weight after it)."""
    group = LearnerGroup(cfg, model_dir)
    try:
        return group.train_step(batch_refs), full_state(group)
    finally:
        group.shutdown()
