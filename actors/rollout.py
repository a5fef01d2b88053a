"""RolloutActor: a thin Ray actor around the PolicyEngine (weights: actors/engine.py) and the episode function
(prompts -> RolloutBatch: actors/episode.py). Batches go to the object store as arrow tables; the learner pulls them
by ObjectRef.

Rewards go through the one scoring path with fault handling: the RewardPool actor whose handle deploy passes in
(`reward_pool.score.remote(texts, metas, tasks) -> (results, metrics)`); actors never import rewards/. The weight bus
methods run in the concurrency group "weights", a thread of their own, so the learner never waits for a rollout.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import ray
import torch

from actors.engine import PolicyEngine
from actors.episode import ScoreFn, evaluate, run_episode
from common.config import RunConfig, SamplerConfig
from common.devices import make_generator, service_device
from common.machine import intra_op_threads
from common.messages import PromptItem, RewardResult
from common.summary import RewardMetrics, RolloutSummary


def pool_scorer(reward_pool: Any) -> ScoreFn:
    """The ScoreFn of a RewardPool actor handle (a synchronous call: the episode needs the rewards to continue)."""
    def score_fn(texts: list[str], metas: list[dict], tasks: list[str]) -> tuple[list[RewardResult], RewardMetrics]:
        return ray.get(reward_pool.score.remote(texts, metas, tasks))

    return score_fn


class RolloutActor:
    """Use as `RemoteRolloutActor` (below); the driver names it `rollout-<index>` for the dashboard."""

    def __init__(self, cfg: RunConfig, model_path: str, *, reward_pool: Any, actor_index: int = 0) -> None:
        torch.set_num_threads(cfg.rollout.torch_threads)
        self.cfg, self.actor_index = cfg, actor_index
        # the device contract (common/devices.py): Ray's assigned GPU, else CPU; the engine and the noise live there
        self.device = service_device(cfg.rollout.gpus_per_actor, what="rollout.gpus_per_actor")
        self.engine = PolicyEngine(cfg, model_path, device=self.device, name=f"rollout-{actor_index}")
        # the fleet passes the pool by name: a handle among a restartable actor's constructor arguments would sit in
        # the object store, which Ray flags (its restart would fail if the handle were lost; ray-project/ray#53727)
        self.score_fn = pool_scorer(ray.get_actor(reward_pool) if isinstance(reward_pool, str) else reward_pool)
        # one stream for sampling noise (on the device: it is drawn where the logits are), one for mask seeds (CPU: the
        # masks are a pure function of the seed, common/masking.py); both a pure function of (seed, actor index)
        self.sample_rng = make_generator(self.device, cfg.seed * 1_000_003 + 2 * actor_index)
        self.seed_rng = make_generator("cpu", cfg.seed * 1_000_003 + 2 * actor_index + 1)

    def set_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> int:
        """Load a full state dict (passed by ObjectRef, resolved by Ray before the call) as policy version v."""
        return self.engine.load(state_dict, version)

    @ray.method(concurrency_group="weights")
    def join_weight_bus(self, address: tuple[str, int], rank: int, world_size: int, generation: int,
                        sender_signature: str) -> int:
        return self.engine.join_bus(address, rank, world_size, generation, sender_signature)

    @ray.method(concurrency_group="weights")
    def receive_weights(self) -> int:
        """Receive and stage the next version; the next rollout / evaluation loads it (not this thread)."""
        return self.engine.receive()

    def ping(self) -> int:
        """The policy version held, after loading staged weights (the driver uses it to notice a restarted actor)."""
        return self.engine.load_staged(0)

    def evaluate(self, prompts: list[PromptItem], sampler: SamplerConfig,
                 min_version: int = 0) -> list[dict[str, Any]]:
        """One completion per prompt with `sampler` (greedy for evaluation), scored: [{uid, text, reward, parts}]."""
        self.engine.load_staged(min_version)
        with intra_op_threads(self.cfg.eval.torch_threads or self.cfg.rollout.torch_threads):
            return evaluate(self.engine.policy, prompts, sampler=sampler, score_fn=self.score_fn,
                            generator=self.sample_rng, chat_template=self.cfg.model.chat_template)

    def _reseed(self, step: int, group_offset: int) -> None:
        """Noise of a training rollout as a pure function of (seed, step, first group): a resumed run, or a chunk
        re-issued after its actor died, draws exactly what the original would have (a running stream would restart
        from its initial state in a new or restarted actor process)."""
        sample_seed, mask_seed = np.random.SeedSequence([self.cfg.seed, step, group_offset]).generate_state(2)
        self.sample_rng.manual_seed(int(sample_seed))
        self.seed_rng.manual_seed(int(mask_seed))

    @ray.method(num_returns=2)
    def rollout(self, prompts: list[PromptItem], group_size: int, group_offset: int = 0,
                step: int | None = None, min_version: int = 0) -> tuple[pa.Table, RolloutSummary]:
        """One episode. Returns (RolloutBatch as an arrow table, a small summary for the driver's logs); the caller
        passes the first ObjectRef on to the learner without fetching it. With `step`, the noise is reseeded from
        (seed, step, group_offset); without it, the actor's running streams continue. `min_version`: the last
        version pushed before this call (waited for when it travels over the weight bus)."""
        version = self.engine.load_staged(min_version)
        if step is not None:
            self._reseed(step, group_offset)
        batch, summary = run_episode(prompts, cfg=self.cfg, policy=self.engine.policy,
                                     reference=self.engine.reference, score_fn=self.score_fn, group_size=group_size,
                                     group_offset=group_offset, version=version, sample_rng=self.sample_rng,
                                     seed_rng=self.seed_rng, actor=self.actor_index)
        table = batch.to_arrow()
        summary.batch_bytes = table.nbytes
        return table, summary


# The Ray actor class: the weight bus methods run in the concurrency group "weights", a thread of their own.
# (ignore: Ray's stubs type ray.remote(**options) with the task options only, no concurrency_groups)
RemoteRolloutActor = ray.remote(concurrency_groups={"weights": 1})(RolloutActor)  # type: ignore[call-overload]
