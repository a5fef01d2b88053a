"""RolloutActor: one episode, top to bottom: prompts -> G completions each -> rewards -> advantages -> mask seeds ->
teacher targets S_old / S_ref -> a RolloutBatch in the object store.

The actor holds the policy at version v (its own copy) and a frozen reference copy. New weights arrive one of two
ways (`pipeline.weight_sync`): `set_weights` (from the object store; Ray runs it between two rollouts), or
`receive_weights` over the weight bus, which runs in its own thread (concurrency group "weights") so that the learner
never waits for a rollout to finish: it only stages the state dict, and the next rollout or evaluation loads it before
sampling. Either way a rollout never sees a half-loaded state dict.
"""
from __future__ import annotations

import datetime
import logging
import threading
import time
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import torch
import torch.distributed as dist

from actors.advantages import leave_one_out
from actors.sampler import sample
from actors.teacher import draw_mask_seeds, teacher_logps
from common.batch import RolloutBatch
from common.config import RunConfig, SamplerConfig
from common.denoiser import DTYPES, load_denoiser
from common.logprob import logp_variant
from common.messages import PromptItem, RewardResult
from common.tokenize import completion_mask, decode_completions, encode_prompts
from common.weight_bus import WeightBus, signature, wire_format

log = logging.getLogger(__name__)


def score_with_workers(workers: list[Any], texts: list[str], items: list[PromptItem]) -> list[RewardResult]:
    """Split rows over the RewardWorker handles, results in input order."""
    if not workers:
        raise ValueError("reward.num_workers: a rollout needs at least one RewardWorker handle")
    chunk = -(-len(texts) // len(workers))
    refs = [w.score.remote(texts[i:i + chunk], [it.meta for it in items[i:i + chunk]],
                           [it.task for it in items[i:i + chunk]])
            for w, i in zip(workers, range(0, len(texts), chunk))]
    return [r for part in ray.get(refs) for r in part]


class RolloutActor:
    """Use as `RemoteRolloutActor` (below); the driver names it `rollout-<index>` for the dashboard."""

    def __init__(self, cfg: RunConfig, model_path: str, *, actor_index: int = 0,
                 reward_workers: list[Any] | None = None) -> None:
        torch.set_num_threads(cfg.rollout.torch_threads)
        self.cfg, self.actor_index = cfg, actor_index
        self.policy = load_denoiser(cfg.model, model_path)
        # the frozen reference is needed only for sequence-level targets with a KL term (per-token algorithms get
        # theirs on the learner)
        needs_ref = cfg.algorithm.beta > 0 and logp_variant(cfg.algorithm.name) is not None
        self.reference = load_denoiser(cfg.model, model_path) if needs_ref else None
        self.reward_workers = list(reward_workers or [])
        self.version = 0
        # one stream for sampling noise, one for mask seeds: a pure function of (seed, actor index)
        self.sample_rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 2 * actor_index)
        self.seed_rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 2 * actor_index + 1)
        # weight bus state (pipeline.weight_sync: broadcast): the group, and the last received, not yet loaded weights
        self.bus: WeightBus | None = None
        self._bus_store: dist.Store | None = None
        self._bus_address: tuple[str, int] | None = None
        self._staged: tuple[dict[str, torch.Tensor], int] | None = None
        self._staged_cv = threading.Condition()

    def set_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> int:
        """Load a full state dict (passed by ObjectRef, resolved by Ray before the call) as policy version v."""
        self.policy.model.load_state_dict(state_dict)
        self.version = version
        return version

    # ---- weight bus ---------------------------------------------------------------------------------------------
    def _wire_like(self) -> dict[str, torch.Tensor]:
        """Names, shapes and dtypes of what the learner sends (meta tensors: no memory)."""
        meta = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in self.policy.model.state_dict().items()}
        return wire_format(meta, DTYPES[self.cfg.model.dtype])

    @ray.method(concurrency_group="weights")
    def join_weight_bus(self, address: tuple[str, int], rank: int, world_size: int, generation: int,
                        sender_signature: str) -> int:
        """Join generation `generation` of the weight group as bus rank `rank` (a rendezvous with every member)."""
        mine = signature(self._wire_like())
        if mine != sender_signature:
            raise RuntimeError(f"rollout-{self.actor_index}: the learner sends weights with signature "
                               f"{sender_signature}, this actor's model expects {mine} (model.* differs?)")
        pcfg = self.cfg.pipeline
        if self._bus_store is None or self._bus_address != tuple(address):  # a rebuilt learner has a new store
            self._bus_store = dist.TCPStore(address[0], address[1], is_master=False,
                                            timeout=datetime.timedelta(seconds=pcfg.weight_sync_timeout_s))
            self._bus_address = tuple(address)
        if self.bus is not None:
            self.bus.close()
        self.bus = WeightBus.join(self._bus_store, pcfg, rank=rank, world_size=world_size, generation=generation,
                                  device=self.policy.device)
        return generation

    @ray.method(concurrency_group="weights")
    def receive_weights(self) -> int:
        """Receive the next version from the bus and stage it; the next rollout / evaluation loads it (not this
        thread). Returns the version."""
        if self.bus is None:  # a restarted instance: the driver rebuilds the group when this fails
            raise RuntimeError(f"rollout-{self.actor_index} has not joined the weight bus (restarted?)")
        state, version = self.bus.receive(self._wire_like())
        with self._staged_cv:  # the latest push wins (lower than before only after the learner restarted)
            self._staged = (state, version)
            self._staged_cv.notify_all()
        return version

    def _load_staged(self, min_version: int) -> None:
        """Before sampling: load staged weights; on the bus, first wait for version `min_version` (pushed before this
        call was made, possibly still in flight on the weights thread)."""
        deadline = time.monotonic() + self.cfg.pipeline.weight_sync_timeout_s
        with self._staged_cv:
            while self.bus is not None and self.version < min_version and (
                    self._staged is None or self._staged[1] < min_version):
                if not self._staged_cv.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise RuntimeError(f"rollout-{self.actor_index}: weights version {min_version} did not arrive "
                                       f"within pipeline.weight_sync_timeout_s={self.cfg.pipeline.weight_sync_timeout_s}")
            staged, self._staged = self._staged, None
        if staged is not None:
            self.policy.model.load_state_dict(staged[0])
            self.version = staged[1]

    def generate(self, prompts: list[PromptItem], group_size: int,
                 sampler: SamplerConfig | None = None) -> dict[str, Any]:
        """G completions per prompt, rows grouped by prompt: ids, decoded texts, reveal steps, timing."""
        items = [p for p in prompts for _ in range(group_size)]
        prompt_ids, prompt_len = encode_prompts(self.policy.tokenizer, [it.prompt for it in items],
                                                chat_template=self.cfg.model.chat_template)
        start = time.perf_counter()
        out = sample(self.policy, prompt_ids.to(self.policy.device), sampler or self.cfg.sampler, self.sample_rng,
                     prompt_len=prompt_len)
        seconds = time.perf_counter() - start
        completion = out.completion_ids.cpu()
        return {"items": items, "prompt_ids": prompt_ids, "prompt_len": prompt_len, "completion_ids": completion,
                "reveal_step": out.reveal_step.cpu(), "seconds": seconds, "forwards": out.forwards,
                "texts": decode_completions(self.policy.tokenizer, completion, self.policy.eos_id)}

    def score(self, texts: list[str], items: list[PromptItem]) -> list[RewardResult]:
        return score_with_workers(self.reward_workers, texts, items)

    def evaluate(self, prompts: list[PromptItem], sampler: SamplerConfig,
                 min_version: int = 0) -> list[dict[str, Any]]:
        """One completion per prompt with `sampler` (greedy for evaluation), scored: [{uid, text, reward, parts}]."""
        self._load_staged(min_version)
        gen = self.generate(prompts, 1, sampler)
        results = self.score(gen["texts"], gen["items"])
        return [{"uid": it.uid, "text": t, "reward": r.total, "parts": r.parts, "error": r.error}
                for it, t, r in zip(gen["items"], gen["texts"], results)]

    def ping(self) -> int:
        """The policy version held, after loading staged weights (the driver uses it to notice a restarted actor)."""
        self._load_staged(0)
        return self.version

    def _reseed(self, step: int, group_offset: int) -> None:
        """Noise of a training rollout as a pure function of (seed, step, first group): a resumed run, or a chunk
        re-issued after its actor died, draws exactly what the original would have (a running stream would restart
        from its initial state in a new or restarted actor process)."""
        sample_seed, mask_seed = np.random.SeedSequence([self.cfg.seed, step, group_offset]).generate_state(2)
        self.sample_rng.manual_seed(int(sample_seed))
        self.seed_rng.manual_seed(int(mask_seed))

    @ray.method(num_returns=2)
    def rollout(self, prompts: list[PromptItem], group_size: int, group_offset: int = 0,
                step: int | None = None, min_version: int = 0) -> tuple[pa.Table, dict]:
        """One episode. Returns (RolloutBatch as an arrow table, a small summary for the driver's logs); the caller
        passes the first ObjectRef on to the learner without fetching it. With `step`, the noise is reseeded from
        (seed, step, group_offset); without it, the actor's running streams continue. `min_version`: the last
        version pushed before this call (waited for when it travels over the weight bus)."""
        cfg, alg = self.cfg, self.cfg.algorithm
        self._load_staged(min_version)
        if step is not None:
            self._reseed(step, group_offset)
        gen = self.generate(prompts, group_size)
        items, texts = gen["items"], gen["texts"]
        B = len(items)

        start = time.perf_counter()
        results = self.score(texts, items)
        score_seconds = time.perf_counter() - start
        reward = torch.tensor([r.total for r in results], dtype=torch.float32)
        part_names = sorted({k for r in results for k in r.parts})
        parts = {k: torch.tensor([r.parts.get(k, 0.0) for r in results], dtype=torch.float32) for k in part_names}

        start = time.perf_counter()
        seeds = draw_mask_seeds(alg.mu, alg.num_mc, self.seed_rng)  # [J, M]
        variant = logp_variant(alg.name)
        prompt_ids, completion = gen["prompt_ids"].to(self.policy.device), gen["completion_ids"].to(self.policy.device)
        nan = torch.full((B, alg.mu, alg.num_mc), float("nan"))
        old_logp = ref_logp = nan
        if variant is not None and alg.teacher_source == "rollout":
            old_logp = teacher_logps(self.policy, prompt_ids, completion, seeds, variant=variant,
                                     rows_per_forward=cfg.rollout.logprob_rows, prompt_len=gen["prompt_len"])
        if variant is not None and self.reference is not None:
            ref_logp = teacher_logps(self.reference, prompt_ids, completion, seeds, variant=variant,
                                     rows_per_forward=cfg.rollout.logprob_rows, prompt_len=gen["prompt_len"])
        teacher_seconds = time.perf_counter() - start

        L = cfg.sampler.gen_length
        batch = RolloutBatch(
            prompt_ids=gen["prompt_ids"], prompt_len=gen["prompt_len"], completion_ids=gen["completion_ids"],
            completion_mask=completion_mask(gen["completion_ids"], self.policy.eos_id),
            reveal_step=gen["reveal_step"],
            group_id=group_offset + torch.arange(B, dtype=torch.int64) // group_size,
            reward=reward, advantage=leave_one_out(reward, group_size),
            mask_seeds=seeds.expand(B, -1, -1).contiguous(), mask_row=torch.arange(B, dtype=torch.int64),
            mask_batch_rows=torch.full((B,), B, dtype=torch.int64), old_logp=old_logp, ref_logp=ref_logp,
            policy_version=torch.full((B,), self.version, dtype=torch.int64),
            prompt_uid=[it.uid for it in items], task=[it.task for it in items], text=texts, reward_parts=parts,
            meta={"actor": self.actor_index, "version": self.version, "sampler": cfg.sampler.model_dump(),
                  "seconds": {"generate": gen["seconds"], "score": score_seconds, "teacher": teacher_seconds}},
        )
        table = batch.to_arrow()
        summary = {
            "actor": self.actor_index, "version": self.version, "rows": B, "batch_bytes": table.nbytes,
            "groups": list(range(group_offset, group_offset + len(prompts))), "reward_mean": float(reward.mean()),
            "reward_parts": {k: float(v.mean()) for k, v in parts.items()},
            "reward_errors": sum(r.error is not None for r in results),
            "generate_seconds": gen["seconds"], "score_seconds": score_seconds, "teacher_seconds": teacher_seconds,
            "tokens_per_second": B * L / max(gen["seconds"], 1e-9), "forwards": gen["forwards"],
            "zero_variance_groups": int((reward.view(-1, group_size).std(dim=1) == 0).sum()),
            "samples": [(it.prompt, t, r.total) for it, t, r in list(zip(items, texts, results))[:: group_size]],
        }
        return table, summary


# The Ray actor class: the weight bus methods run in the concurrency group "weights", a thread of their own.
RemoteRolloutActor = ray.remote(concurrency_groups={"weights": 1})(RolloutActor)
