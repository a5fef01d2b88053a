"""One rank's share of a training step on RolloutBatches: shard rows, rebuild masks, S_theta, loss, backward.

Two implementations of one small protocol (`UpdatePath`) run the step: `SequencePath` here (sequence-level S(x0):
gdsd, gdsd_tlc, espo) and `TokenPath` in learner/token_update.py (d1's per-token one-step estimate: diffu_grpo, wd1).
No Ray here: the LearnerWorker calls them with its sharded denoiser. Legend: b rows on this rank, L completion,
J inner iterations, M mc draws.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Protocol

import numpy as np
import torch

from common.batch import RolloutBatch
from common.config import RunConfig
from common.denoiser import Denoiser
from common.logprob import Variant, denoise_logprob
from common.masking import consistent_masks
from common.models.lora import row_seeds
from learner.losses import LossSpec

# fn(micro-batch index, inner iteration j) -> (loss metrics, teacher gap max |S_theta - S_old| at j = 0, else None)
MicroFn = Callable[[int, int], tuple[dict[str, torch.Tensor], torch.Tensor | None]]


class UpdatePath(Protocol):
    """How one family of losses turns this rank's rows into gradients. `group_size`: rows are split on group
    boundaries (group-normalised losses), else None. `use_ref`: the learner must hold a frozen reference copy."""

    group_size: int | None
    use_ref: bool

    def prepare(self, policy: Denoiser, reference: Denoiser | None, shards: list[RolloutBatch], *, version: int,
                num_rows: int, scale: float) -> tuple[list[RolloutBatch], MicroFn]:
        """Split the shards into micro-batches, compute what the loss needs once per step (teacher targets), and
        return (micro-batches, fn) where fn(i, j) runs forward + loss + backward of micro-batch i at iteration j.
        `num_rows`: global rows (the losses' normaliser); `scale`: the backward's factor (FSDP averages over ranks)."""
        ...


def check_on_policy(micros: list[RolloutBatch], version: int) -> None:
    """algorithm.teacher_source=learner: the learner's current weights must be the ones that sampled the rows."""
    stale = sum(int((m.policy_version != version).sum()) for m in micros)
    if stale:
        raise ValueError(f"algorithm.teacher_source=learner needs on-policy batches (synchronous mode), but {stale} "
                         f"rows were sampled by another version than the learner's {version}")


def _group_bounds(batch: RolloutBatch, parts: int, group_size: int, what: str) -> list[slice]:
    """`parts` contiguous row ranges that never split a group of `group_size` consecutive rows."""
    rows = batch.num_rows
    if rows % group_size or (rows and not bool((batch.group_id.view(-1, group_size) ==
                                                batch.group_id.view(-1, group_size)[:, :1]).all())):
        raise ValueError(f"a rollout batch of {rows} rows is not made of whole groups of rollout.group_size="
                         f"{group_size} consecutive rows; the loss needs whole groups on each rank")
    groups = rows // group_size
    if groups < parts:
        raise ValueError(f"{what}: {groups} groups of {group_size} rows cannot be split into {parts} parts without "
                         "splitting a group (the loss normalises within a group); lower learner.num_ranks / "
                         "learner.grad_accum or raise the prompts per rollout batch")
    return [slice(int(ix[0]) * group_size, (int(ix[-1]) + 1) * group_size)
            for ix in np.array_split(np.arange(groups), parts)]


def shard_rows(batch: RolloutBatch, rank: int, world_size: int, group_size: int | None = None) -> RolloutBatch:
    """This rank's contiguous slice of the rows (sizes differ by at most one). With `group_size`, the split is on
    group boundaries (group counts differ by at most one) and a batch with fewer groups than ranks is an error."""
    if group_size is not None:
        return batch.select(_group_bounds(batch, world_size, group_size, "learner.num_ranks")[rank])
    bounds = np.array_split(np.arange(batch.num_rows), world_size)[rank]
    return batch.select(slice(int(bounds[0]), int(bounds[-1]) + 1)) if len(bounds) else batch.select([])


def split_micro(batch: RolloutBatch, parts: int, group_size: int | None = None) -> list[RolloutBatch]:
    if group_size is not None:
        return [batch.select(s) for s in _group_bounds(batch, parts, group_size, "learner.grad_accum")]
    return [batch.select(slice(int(ix[0]), int(ix[-1]) + 1)) for ix in np.array_split(np.arange(batch.num_rows), parts)]


def drop_zero_advantage_groups(batch: RolloutBatch) -> tuple[RolloutBatch, int]:
    """Rows whose group has zero reward variance carry A = 0; drop them. Returns (kept rows, dropped count)."""
    groups = batch.group_id
    keep = torch.zeros(batch.num_rows, dtype=torch.bool)
    for gid in groups.unique():
        rows = groups == gid
        keep |= rows & bool(batch.reward[rows].std(unbiased=False) > 0)
    return batch.select(keep.nonzero().squeeze(1)), int((~keep).sum())


def masks_for(batch: RolloutBatch, j: int, m: int) -> torch.Tensor:
    """bool [b, L]: the (j, m) masks, built for the whole source batch as the actor did, restricted to our rows."""
    seed, source_rows = int(batch.mask_seeds[0, j, m]), int(batch.mask_batch_rows[0])
    full = consistent_masks(seed, source_rows, batch.completion_ids.shape[1])  # [source B, L]
    return full[batch.mask_row]


def sequence_logp(denoiser: Denoiser, batch: RolloutBatch, j: int, *, variant: Variant) -> torch.Tensor:
    """S(x0) float32 [b, M] for inner iteration j (differentiable unless called under no_grad)."""
    device = denoiser.device
    prompt, completion = batch.prompt_ids.to(device), batch.completion_ids.to(device)
    per_draw = [denoise_logprob(denoiser, prompt, completion, masks_for(batch, j, m), variant=variant,
                                prompt_len=batch.prompt_len,
                                dropout_seeds=row_seeds(int(batch.mask_seeds[0, j, m]), batch.mask_row))
                for m in range(batch.mask_seeds.shape[2])]
    return torch.stack(per_draw, dim=1)


class MetricSum:
    """Accumulates loss metrics over micro-batches: `loss*` terms add up, everything else is a row-weighted mean."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), dtype=torch.float64))
        self.rows = 0

    def add(self, metrics: dict[str, torch.Tensor], rows: int) -> None:
        self.rows += rows
        for key, value in metrics.items():
            value = value.detach().double().cpu()
            self.sums[key] += value if key.startswith("loss") else value * rows

    def vector(self, keys: list[str]) -> torch.Tensor:
        return torch.stack([self.sums[k] for k in keys] + [torch.tensor(float(self.rows), dtype=torch.float64)])


class SequencePath:
    """Sequence-level S(x0) losses. S_old comes from the actor (algorithm.teacher_source=rollout) or is recomputed
    here under no_grad from the sampling weights on exactly the micro-batches the gradient forwards use, so S_old and
    S_theta of the first inner iteration run the same forwards (their gap is exactly 0 on CPU). S_ref always comes
    from the actor (its frozen reference copy)."""

    def __init__(self, spec: LossSpec, cfg: RunConfig) -> None:
        if spec.algorithm.s_variant is None:
            raise ValueError(f"SequencePath serves sequence-level S(x0) losses, not {spec.logp_variant!r}")
        self.spec, self.cfg = spec, cfg
        self.kwargs = spec.kwargs_from(cfg.algorithm)
        self.group_size: int | None = None
        self.use_ref = False

    @torch.no_grad()
    def _teacher(self, policy: Denoiser, micro: RolloutBatch, version: int) -> RolloutBatch:
        if self.cfg.algorithm.teacher_source == "rollout":
            if torch.isnan(micro.old_logp).any():
                raise ValueError("algorithm.teacher_source=rollout but the batch carries no S_old (NaN); the actors "
                                 "must run with the same algorithm config")
            return micro
        check_on_policy([micro], version)
        micro.old_logp = torch.stack([sequence_logp(policy, micro, j, variant=self.spec.logp_variant).float().cpu()
                                      for j in range(micro.mask_seeds.shape[1])], dim=1)  # [b, J, M]
        return micro

    def prepare(self, policy: Denoiser, reference: Denoiser | None, shards: list[RolloutBatch], *, version: int,
                num_rows: int, scale: float) -> tuple[list[RolloutBatch], MicroFn]:
        micros = [m for s in shards for m in split_micro(s, self.cfg.learner.grad_accum)]
        if self.spec.needs_old:
            micros = [self._teacher(policy, m, version) for m in micros]

        def run(i: int, j: int) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
            metrics, logp = loss_on_micro_batch(policy, micros[i], j, spec=self.spec, loss_kwargs=self.kwargs,
                                                num_rows=num_rows, scale=scale)
            gap = None
            if j == 0 and self.spec.needs_old:
                gap = (logp.cpu() - micros[i].old_logp[:, 0]).abs().max().double()
            return metrics, gap

        return micros, run


def loss_on_micro_batch(denoiser: Denoiser, micro: RolloutBatch, j: int, *, spec: LossSpec, loss_kwargs: dict,
                        num_rows: int, scale: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Forward, loss, backward for one micro-batch at inner iteration j. Returns (metrics, S_theta detached)."""
    device = denoiser.device
    logp = sequence_logp(denoiser, micro, j, variant=spec.logp_variant)  # [b, M]
    old = micro.old_logp[:, j].to(device) if spec.needs_old else None
    ref = micro.ref_logp[:, j].to(device) if spec.needs_ref and loss_kwargs.get("beta", 0) > 0 else None
    loss, metrics = spec.fn(logp, old, ref, micro.advantage.to(device), micro.completion_ids.shape[1],
                            num_rows=num_rows, **loss_kwargs)
    (loss * scale).backward()
    return metrics, logp.detach()
