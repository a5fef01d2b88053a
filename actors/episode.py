"""One episode, prompts -> RolloutBatch, in four named stages (docs/design.md, "Rollout"):

  generate      G completions per prompt with the policy (rows grouped by prompt)
  score         rewards through the one scoring path (`ScoreFn`: the RewardPool actor in training)
  advantages    leave-one-out within each group
  teacher       mask seeds s[j, m] and the teacher targets S_old / S_ref for every (inner iteration, mc draw)

Plain functions: no Ray, no weight handling (actors/engine.py), so tests run an episode in-process. Legend: B rows
(prompts x G), P prompt, L completion, J inner iterations, M mc draws.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from actors.advantages import leave_one_out
from actors.sampling import rows_per_call, sample
from actors.teacher import draw_mask_seeds, teacher_logps
from common.algorithms import get_algorithm
from common.batch import RolloutBatch
from common.config import RunConfig, SamplerConfig
from common.denoiser import Denoiser
from common.messages import PromptItem, RewardResult
from common.summary import RewardMetrics, RolloutSummary
from common.tokenize import completion_mask, decode_completions, encode_prompts

# (texts, metas, tasks) -> (one RewardResult per row in input order, reward metrics):
# rewards.service.pool.RewardPool.score
ScoreFn = Callable[[list[str], list[dict], list[str]], tuple[list[RewardResult], RewardMetrics]]


@dataclass
class Generation:
    items: list[PromptItem]  # [B]: each prompt repeated G times
    prompt_ids: torch.Tensor  # [B, P] int64, left-padded
    prompt_len: torch.Tensor  # [B] real prompt tokens
    completion_ids: torch.Tensor  # [B, L] int64 (CPU)
    reveal_step: torch.Tensor  # [B, L]
    texts: list[str]  # [B] decoded completions
    seconds: float
    forwards: int


@dataclass
class Scores:
    results: list[RewardResult]
    metrics: RewardMetrics  # the reward service's
    reward: torch.Tensor  # [B] float32
    parts: dict[str, torch.Tensor]  # name -> [B] float32 (0 where a row lacks the part)
    seconds: float


@dataclass
class TeacherTargets:
    mask_seeds: torch.Tensor  # [J, M] int64, shared by every row
    old_logp: torch.Tensor  # [B, J, M] float32, NaN when not computed here
    ref_logp: torch.Tensor  # [B, J, M] float32, NaN when not computed here
    seconds: float


def generate(policy: Denoiser, prompts: list[PromptItem], group_size: int, *, sampler: SamplerConfig,
             generator: torch.Generator, chat_template: bool) -> Generation:
    """Stage 1: G completions per prompt, in row chunks whose logits fit `sampler.logits_budget_mb`."""
    items = [p for p in prompts for _ in range(group_size)]
    prompt_ids, prompt_len = encode_prompts(policy.tokenizer, [it.prompt for it in items], chat_template=chat_template,
                                            systems=[it.system for it in items], prefills=[it.prefill for it in items])
    rows = rows_per_call(sampler, vocab_size=policy.model.args.vocab_size, dtype=next(policy.model.parameters()).dtype)
    start = time.perf_counter()
    outs = [sample(policy, prompt_ids[lo:lo + rows].to(policy.device), sampler, generator,
                   prompt_len=prompt_len[lo:lo + rows]) for lo in range(0, len(items), rows)]
    seconds = time.perf_counter() - start
    completion = torch.cat([o.completion_ids for o in outs]).cpu()  # [B, L]
    return Generation(items=items, prompt_ids=prompt_ids, prompt_len=prompt_len, completion_ids=completion,
                      reveal_step=torch.cat([o.reveal_step for o in outs]).cpu(), seconds=seconds,
                      forwards=sum(o.forwards for o in outs),
                      texts=decode_completions(policy.tokenizer, completion, policy.eos_id))


def score(score_fn: ScoreFn, gen: Generation) -> Scores:
    """Stage 2: one result per row, in row order (a row the reward service failed on scores 0 with an error)."""
    start = time.perf_counter()
    results, metrics = score_fn(gen.texts, [it.meta for it in gen.items], [it.task for it in gen.items])
    if len(results) != len(gen.texts):
        raise RuntimeError(f"the reward service returned {len(results)} results for {len(gen.texts)} rows")
    seconds = time.perf_counter() - start
    reward = torch.tensor([r.total for r in results], dtype=torch.float32, device="cpu")
    names = sorted({k for r in results for k in r.parts})
    parts = {k: torch.tensor([r.parts.get(k, 0.0) for r in results], dtype=torch.float32, device="cpu") for k in names}
    return Scores(results=results, metrics=metrics, reward=reward, parts=parts, seconds=seconds)


def teacher_targets(cfg: RunConfig, policy: Denoiser, reference: Denoiser | None, gen: Generation, *,
                    generator: torch.Generator) -> TeacherTargets:
    """Stage 4: mask seeds, then S_old (algorithm.teacher_source=rollout) and S_ref (with a reference copy) for the
    sequence-level algorithms; per-token algorithms leave both NaN (the learner computes theirs). Forwards of
    learner.micro_batch_rows rows, the learner's micro-batches (learner/micro.py): the same forwards on both sides."""
    alg, start = cfg.algorithm, time.perf_counter()
    B = len(gen.items)
    seeds = draw_mask_seeds(alg.mu, alg.num_mc, generator)  # [J, M]
    spec = get_algorithm(alg.name)
    s_variant = spec.s_variant
    prompt_ids, completion = gen.prompt_ids.to(policy.device), gen.completion_ids.to(policy.device)
    nan = torch.full((B, alg.mu, alg.num_mc), float("nan"), device="cpu")
    old_logp = ref_logp = nan
    if s_variant is not None and spec.old_on(alg.teacher_source) == "actor":  # SPG is ratio-free: no S_old
        old_logp = teacher_logps(policy, prompt_ids, completion, seeds, s_variant=s_variant,
                                 rows_per_forward=cfg.learner.micro_batch_rows, prompt_len=gen.prompt_len)
    if s_variant is not None and reference is not None:
        ref_logp = teacher_logps(reference, prompt_ids, completion, seeds, s_variant=s_variant,
                                 rows_per_forward=cfg.learner.micro_batch_rows, prompt_len=gen.prompt_len)
    return TeacherTargets(mask_seeds=seeds, old_logp=old_logp, ref_logp=ref_logp,
                          seconds=time.perf_counter() - start)


def run_episode(prompts: list[PromptItem], *, cfg: RunConfig, policy: Denoiser, reference: Denoiser | None,
                score_fn: ScoreFn, group_size: int, group_offset: int, version: int, sample_rng: torch.Generator,
                seed_rng: torch.Generator, actor: int = 0) -> tuple[RolloutBatch, RolloutSummary]:
    """prompts -> (RolloutBatch, a small summary for the driver's logs). Groups are numbered from `group_offset`
    (the step's first group of this chunk); `version` is the policy version that samples."""
    gen = generate(policy, prompts, group_size, sampler=cfg.sampler, generator=sample_rng,
                   chat_template=cfg.model.chat_template)
    scores = score(score_fn, gen)
    advantage = leave_one_out(scores.reward, group_size)
    targets = teacher_targets(cfg, policy, reference, gen, generator=seed_rng)

    B = len(gen.items)
    batch = RolloutBatch(
        prompt_ids=gen.prompt_ids, prompt_len=gen.prompt_len, completion_ids=gen.completion_ids,
        completion_mask=completion_mask(gen.completion_ids, policy.eos_id), reveal_step=gen.reveal_step,
        group_id=group_offset + torch.arange(B, dtype=torch.int64, device="cpu") // group_size,
        reward=scores.reward, advantage=advantage,
        mask_seeds=targets.mask_seeds.expand(B, -1, -1).contiguous(),
        mask_row=torch.arange(B, dtype=torch.int64, device="cpu"),
        mask_batch_rows=torch.full((B,), B, dtype=torch.int64, device="cpu"),
        old_logp=targets.old_logp, ref_logp=targets.ref_logp,
        policy_version=torch.full((B,), version, dtype=torch.int64, device="cpu"),
        prompt_uid=[it.uid for it in gen.items], task=[it.task for it in gen.items], text=gen.texts,
        reward_parts=scores.parts,
        meta={"actor": actor, "version": version, "sampler": cfg.sampler.model_dump(),
              "seconds": {"generate": gen.seconds, "score": scores.seconds, "teacher": targets.seconds}},
    )
    summary = RolloutSummary(
        actor=actor, version=version, rows=B, groups=list(range(group_offset, group_offset + len(prompts))),
        reward_mean=float(scores.reward.mean()), reward_parts={k: float(v.mean()) for k, v in scores.parts.items()},
        reward_errors=sum(r.error is not None for r in scores.results), reward_metrics=scores.metrics,
        generate_seconds=gen.seconds, score_seconds=scores.seconds, teacher_seconds=targets.seconds,
        tokens_per_second=B * cfg.sampler.gen_length / max(gen.seconds, 1e-9), forwards=gen.forwards,
        zero_variance_groups=int((scores.reward.view(-1, group_size).std(dim=1) == 0).sum()),
        samples=[(it.prompt, t, r.total) for it, t, r in list(zip(gen.items, gen.texts, scores.results))[::group_size]],
    )
    return batch, summary


def evaluate(policy: Denoiser, prompts: list[PromptItem], *, sampler: SamplerConfig, score_fn: ScoreFn,
             generator: torch.Generator, chat_template: bool) -> list[dict[str, Any]]:
    """One completion per prompt with `sampler` (greedy for evaluation), scored: [{uid, text, reward, parts, error}]."""
    gen = generate(policy, prompts, 1, sampler=sampler, generator=generator, chat_template=chat_template)
    scores = score(score_fn, gen)
    return [{"uid": it.uid, "text": t, "reward": r.total, "parts": r.parts, "error": r.error}
            for it, t, r in zip(gen.items, gen.texts, scores.results)]
