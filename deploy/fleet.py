"""The rollout side of a run: RolloutActors, the RewardPool actor they score through, prompt routing, and
re-issuing the prompts of an actor that died. Batches stay in the object store: only ObjectRefs and small summaries
pass through the driver. Which weights the actors hold (the version, and giving a restarted actor the current ones)
is the weight sync's business (deploy/weight_sync.py): the fleet is told the version and the restore step per call."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import ray
from pydantic import ValidationError
from ray.exceptions import RayActorError

from actors.rollout import RemoteRolloutActor
from common.config import ConfigError, RunConfig, SamplerConfig, explain
from common.messages import PromptItem
from common.summary import RewardMetrics, RolloutSummary
from rewards.service.pool import RemoteRewardPool
from rewards.service.registry import SANDBOX_FUNCTIONS, RewardServiceConfig

log = logging.getLogger(__name__)
RESTART_TIMEOUT_S = 300
# The reward service is one Ray actor (rewards/service/pool.py): it creates its RewardWorkers itself, replaces dead
# ones, splits and retries their chunks (bounded), and reserves no CPU (it only coordinates).
POOL_TASK_RETRIES = 2  # a score call lost with a dead pool actor runs again on its restart, at most this often


class Weights(Protocol):
    """What the fleet needs from the weight sync (deploy/weight_sync.py), which owns both."""

    version: int  # the last version pushed to the actors

    def restore(self, actor: int) -> None:
        """Give restarted actor `actor` (alive again) the current weights."""


class RestartTimeout(RuntimeError):
    """A lost rollout actor did not come back in time: no alive node can take it."""


def restart_timeout_message(cfg: RunConfig, actor: int, waited_s: float, free: list[dict[str, float]]) -> str:
    """Why rollout-`actor` is not back after `waited_s`: what one actor asks for (and the keys), what each alive node
    has free (`free`: Ray's available resources per node), and what to change. Pure (tested without Ray)."""
    r = cfg.rollout
    need = {"CPU": r.cpus_per_actor, **({"GPU": r.gpus_per_actor} if r.gpus_per_actor else {}), **r.resources}
    short = sorted({name for name, amount in need.items() if not any(n.get(name, 0.0) + 1e-9 >= amount for n in free)})
    custom = [name for name in r.resources if name in short]
    fix = (f"add a node that advertises {', '.join(custom)} (the node type rollout.resources asks for: an autoscaler "
           "or KubeRay worker group of that type), or change rollout.resources" if custom else
           "add a node with that much free, or lower those keys")
    lacking = ", ".join(short) or "none; a node may still be joining"
    per_node = [{k: n.get(k, 0.0) for k in need} for n in free]
    return (f"rollout-{actor} did not come back within {waited_s:g} s (deploy/fleet.py RESTART_TIMEOUT_S): "
            f"Ray restarts a lost actor only on a node with {need} free (rollout.cpus_per_actor, "
            f"rollout.gpus_per_actor, rollout.resources), and no alive node has that now (short of: {lacking}; "
            f"free per node: {per_node}). To go on, {fix}; then start the job again (with --resume where it wrote "
            "a checkpoint: checkpoint.every)")


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
    """Validate `reward.service` with the reward service's own schema; errors name the key (`reward.service.*`).
    The trainer calls it before the SFT warm start, so a bad key fails at once."""
    try:
        return RewardServiceConfig.model_validate(cfg.reward.service)
    except ValidationError as err:
        raise ConfigError(explain(err, prefix="reward.service.")) from None


def merge_reward_metrics(summaries: list[RolloutSummary]) -> dict[str, float]:
    """The reward service's metrics of one step from every chunk, as the metric keys (rewards/service/metrics.py): the
    chunks' sums and counts add up, the means are derived from the totals."""
    return RewardMetrics.merge([s.reward_metrics for s in summaries]).flat()


class RolloutFleet:
    def __init__(self, cfg: RunConfig, model_path: str) -> None:
        self.cfg = cfg
        rcfg = cfg.reward
        service = reward_service_config(cfg)
        # reward.resources go to the pool actor and to each of its workers: the service stays on its node type, and
        # a pool restarted after its node died comes back (with fresh workers) only where they can be met
        self.reward_pool = RemoteRewardPool.options(
            name="reward-pool", max_restarts=-1, max_task_retries=POOL_TASK_RETRIES, resources=rcfg.resources).remote(
            rcfg.num_workers, num_cpus_per_worker=rcfg.cpus_per_worker, config=service, resources=rcfg.resources)
        if any(name in SANDBOX_FUNCTIONS for name in service.reward_functions.get(cfg.task.name, [])):
            # fail now, naming the cause, rather than score every row of the run 0 (SandboxUnavailable)
            ray.get(self.reward_pool.check_ready.remote())
        self.actors = [
            RemoteRolloutActor.options(name=f"rollout-{i}", num_cpus=cfg.rollout.cpus_per_actor,
                                       num_gpus=cfg.rollout.gpus_per_actor, resources=cfg.rollout.resources,
                                       max_restarts=-1, max_task_retries=0)
            # by name, not handle: handles among constructor args live in the object store, which Ray flags for a
            # restartable actor (its restart would fail if they were lost; ray-project/ray#53727)
            .remote(cfg, model_path, actor_index=i, reward_pool="reward-pool")
            for i in range(cfg.rollout.num_actors)]
        self.reissued = 0

    def submit(self, step: int, prompts: list[PromptItem], group_size: int, *, version: int = 0) -> list[Chunk]:
        """Split the step's prompts over the actors (contiguous chunks); returns the in-flight chunks. `version`: the
        last weights version pushed (each actor waits for it before sampling)."""
        n = len(self.actors)
        bounds = [len(prompts) * i // n for i in range(n + 1)]
        return [self._launch(step, a, prompts[bounds[a]:bounds[a + 1]], bounds[a], group_size, version)
                for a in range(n) if bounds[a + 1] > bounds[a]]

    def _launch(self, step: int, actor: int, prompts: list[PromptItem], group_offset: int, group_size: int,
                version: int) -> Chunk:
        batch_ref, summary_ref = self.actors[actor].rollout.remote(prompts, group_size, group_offset, step, version)
        return Chunk(step, actor, prompts, group_offset, batch_ref, summary_ref, version)

    def collect(self, chunks: list[Chunk], group_size: int, *,
                weights: Weights) -> tuple[list[ray.ObjectRef], list[RolloutSummary]]:
        """Wait for every chunk; a chunk whose actor died, or which a restarted actor sampled with older weights than
        were pushed to it, is re-issued (after `weights.restore` gave the restarted actor the current weights, with
        `weights.version`) until it completes. Returns (batch refs, summaries) in chunk order."""
        refs, summaries = [], []
        for chunk in chunks:
            while True:
                try:
                    summary = ray.get(chunk.summary_ref)  # small; the batch itself stays put
                except RayActorError as err:
                    reason = f"died during step {chunk.step + 1} ({type(err).__name__})"  # metrics count from 1
                else:
                    if summary.version >= chunk.version:
                        summaries.append(summary)
                        refs.append(chunk.batch_ref)
                        break
                    # it died idle after loading our last push, and Ray restarted it with the initial weights
                    reason = f"sampled step {chunk.step + 1} with version {summary.version} < {chunk.version}"
                log.warning("rollout-%d %s; re-issuing its %d prompts", chunk.actor, reason, len(chunk.prompts))
                self.wait_alive(chunk.actor)
                weights.restore(chunk.actor)
                self.reissued += 1
                chunk = self._launch(chunk.step, chunk.actor, chunk.prompts, chunk.group_offset, group_size,
                                     weights.version)
        return refs, summaries

    @staticmethod
    def dead_nodes() -> int:
        """Ray nodes the cluster has lost (a rollout node that died takes its actors along: they restart elsewhere)."""
        return sum(not n.get("Alive") for n in ray.nodes())

    def wait_alive(self, actor: int, *, timeout_s: float | None = None) -> None:
        """Until the actor (restarted by Ray if it died) answers; after `timeout_s` (RESTART_TIMEOUT_S) a
        RestartTimeout that names what the restart needs and the keys that ask for it."""
        timeout_s = RESTART_TIMEOUT_S if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                ray.get(self.actors[actor].ping.remote(), timeout=max(1.0, min(30.0, deadline - time.monotonic())))
                break
            except (RayActorError, ray.exceptions.GetTimeoutError) as err:
                if time.monotonic() > deadline:
                    from ray._private.state import available_resources_per_node

                    raise RestartTimeout(restart_timeout_message(
                        self.cfg, actor, timeout_s, list(available_resources_per_node().values()))) from err
                time.sleep(1.0)

    def push_weights(self, state_ref: ray.ObjectRef, version: int) -> list[ray.ObjectRef]:
        """Queue a full state dict on every actor (each loads it after its in-flight rollout, never during one)."""
        return [a.set_weights.remote(state_ref, version) for a in self.actors]

    def evaluate(self, prompts: list[PromptItem], sampler: SamplerConfig, *, version: int = 0) -> list[dict[str, Any]]:
        n = len(self.actors)
        bounds = [len(prompts) * i // n for i in range(n + 1)]
        parts = [self.actors[a].evaluate.remote(prompts[bounds[a]:bounds[a + 1]], sampler, version)
                 for a in range(n) if bounds[a + 1] > bounds[a]]
        return [row for part in ray.get(parts) for row in part]

    def shutdown(self) -> None:
        try:
            ray.get(self.reward_pool.shutdown.remote(), timeout=30)  # its workers
        except Exception as err:  # noqa: BLE001  (shutting down: a dead pool has no workers left to stop)
            log.warning("reward pool shutdown: %s", err)
        for handle in [*self.actors, self.reward_pool]:
            ray.kill(handle, no_restart=True)
