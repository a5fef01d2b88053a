"""The rollout side of a run: RolloutActors (+ the RewardWorkers they score with), prompt routing, weight pushes,
and re-issuing the prompts of an actor that died. Batches stay in the object store: only ObjectRefs and small
summaries pass through the driver."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import ray
from ray.exceptions import RayActorError

from actors.rollout import RemoteRolloutActor
from pydantic import ValidationError

from common.config import ConfigError, RunConfig, SamplerConfig
from common.messages import PromptItem
from rewards.registry import RewardServiceConfig
from rewards.worker import RewardWorker

log = logging.getLogger(__name__)
RESTART_TIMEOUT_S = 300


@dataclass
class Chunk:
    """Prompts given to one actor for one step; re-issued as a whole if the actor dies."""

    step: int
    actor: int
    prompts: list[PromptItem]
    group_offset: int
    batch_ref: ray.ObjectRef
    summary_ref: ray.ObjectRef
    version: int  # weights the actor must hold when it runs the chunk: the last version pushed before the launch


def reward_service_config(cfg: RunConfig) -> RewardServiceConfig:
    """Validate `reward.service` once, before any actor starts; errors name the key."""
    try:
        return RewardServiceConfig.model_validate(cfg.reward.service)
    except ValidationError as err:
        raise ConfigError("; ".join(f"config key 'reward.service.{'.'.join(map(str, e['loc']))}': {e['msg']}"
                                    for e in err.errors())) from None


class RolloutFleet:
    def __init__(self, cfg: RunConfig, model_path: str) -> None:
        self.cfg = cfg
        rcfg = cfg.reward
        service = reward_service_config(cfg)
        self.reward_workers = [
            RewardWorker.options(name=f"reward-{i}", num_cpus=rcfg.cpus_per_worker, max_restarts=-1,
                                 max_task_retries=-1).remote(service)
            for i in range(rcfg.num_workers)]
        self.actors = [
            RemoteRolloutActor.options(name=f"rollout-{i}", num_cpus=cfg.rollout.cpus_per_actor,
                              num_gpus=cfg.rollout.gpus_per_actor, resources=cfg.rollout.resources,
                              max_restarts=-1, max_task_retries=0)
            .remote(cfg, model_path, actor_index=i, reward_workers=self.reward_workers)
            for i in range(cfg.rollout.num_actors)]
        self.version = 0  # the last weights version pushed to the actors
        self.weights: tuple[ray.ObjectRef, int] | None = None  # the last push through the object store
        # gives a restarted actor the current weights; the weight bus (deploy/weight_sync.py) replaces it
        self.restore_weights: Callable[[int], None] = self._restore_from_store
        self.reissued = 0

    def submit(self, step: int, prompts: list[PromptItem], group_size: int) -> list[Chunk]:
        """Split the step's prompts over the actors (contiguous chunks); returns the in-flight chunks."""
        n = len(self.actors)
        bounds = [len(prompts) * i // n for i in range(n + 1)]
        return [self._launch(step, a, prompts[bounds[a]:bounds[a + 1]], bounds[a], group_size)
                for a in range(n) if bounds[a + 1] > bounds[a]]

    def _launch(self, step: int, actor: int, prompts: list[PromptItem], group_offset: int, group_size: int) -> Chunk:
        version = self.version
        batch_ref, summary_ref = self.actors[actor].rollout.remote(prompts, group_size, group_offset, step, version)
        return Chunk(step, actor, prompts, group_offset, batch_ref, summary_ref, version)

    def collect(self, chunks: list[Chunk], group_size: int) -> tuple[list[ray.ObjectRef], list[dict[str, Any]]]:
        """Wait for every chunk; a chunk whose actor died, or which a restarted actor sampled with older weights than
        were pushed to it, is re-issued (after the restarted actor got the current weights) until it completes.
        Returns (batch refs, summaries) in chunk order."""
        refs, summaries = [], []
        for chunk in chunks:
            while True:
                try:
                    summary = ray.get(chunk.summary_ref)  # small; the batch itself stays put
                except RayActorError as err:
                    reason = f"died during step {chunk.step} ({type(err).__name__})"
                else:
                    if summary["version"] >= chunk.version:
                        summaries.append(summary)
                        refs.append(chunk.batch_ref)
                        break
                    # it died idle after loading our last push, and Ray restarted it with the initial weights
                    reason = f"sampled step {chunk.step} with version {summary['version']} < {chunk.version}"
                log.warning("rollout-%d %s; re-issuing its %d prompts", chunk.actor, reason, len(chunk.prompts))
                self._wait_restarted(chunk.actor)
                self.reissued += 1
                chunk = self._launch(chunk.step, chunk.actor, chunk.prompts, chunk.group_offset, group_size)
        return refs, summaries

    def _wait_restarted(self, actor: int) -> None:
        self.wait_alive(actor)
        self.restore_weights(actor)

    def wait_alive(self, actor: int) -> None:
        """Until the actor (restarted by Ray if it died) answers."""
        deadline = time.monotonic() + RESTART_TIMEOUT_S
        while True:
            try:
                ray.get(self.actors[actor].ping.remote(), timeout=30)
                break
            except (RayActorError, ray.exceptions.GetTimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    def _restore_from_store(self, actor: int) -> None:
        if self.weights is not None:  # a restarted actor starts from the initial weights: give it the current ones
            ray.get(self.actors[actor].set_weights.remote(*self.weights))

    def push_weights(self, state_ref: ray.ObjectRef, version: int) -> list[ray.ObjectRef]:
        """Queue the new weights on every actor (each loads them after its in-flight rollout, never during one)."""
        self.weights, self.version = (state_ref, version), version
        return [a.set_weights.remote(state_ref, version) for a in self.actors]

    def wait_pushed(self, pushes: list[ray.ObjectRef]) -> None:
        """Wait for the pushes of `push_weights`; an actor that died meanwhile is waited for and given the current
        weights once restarted (without this, a death during the weight push would end the run)."""
        for actor, ref in enumerate(pushes):
            try:
                ray.get(ref)
            except RayActorError:
                log.warning("rollout-%d died while loading weights; waiting for its restart", actor)
                self._wait_restarted(actor)

    def evaluate(self, prompts: list[PromptItem], sampler: SamplerConfig) -> list[dict[str, Any]]:
        n = len(self.actors)
        bounds = [len(prompts) * i // n for i in range(n + 1)]
        parts = [self.actors[a].evaluate.remote(prompts[bounds[a]:bounds[a + 1]], sampler, self.version)
                 for a in range(n) if bounds[a + 1] > bounds[a]]
        return [row for part in ray.get(parts) for row in part]

    def shutdown(self) -> None:
        for handle in self.actors + self.reward_workers:
            ray.kill(handle, no_restart=True)
