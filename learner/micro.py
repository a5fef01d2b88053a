"""Which rows each learner rank forwards together: the micro-batches of one training step.

One rule serves exactness and memory (docs/design.md, "Micro-batches"): a micro-batch is a *forward unit* of
`learner.micro_batch_rows` consecutive rows of one actor's RolloutBatch, starting at a multiple of that size — exactly
the row chunks in which the actor computed S_old / S_ref (actors/teacher.py). The learner's first-iteration S_theta
then runs the very forwards the actor ran (same rows, same shapes, same kernels), so in bf16 as in fp32 the teacher
gap |S_theta - S_old| is exactly 0 on the same device type. Units are pooled across the actors' batches and dealt to
ranks round-robin; ranks with fewer units get empty ones (zero rows: the forward and backward still run, so every
rank joins the same FSDP collectives). Group-normalised losses (wd1) need whole groups: their unit size is a
multiple of rollout.group_size (validated).

No model, no Ray, no device: plain bookkeeping on RolloutBatches, tested alone.
"""
from __future__ import annotations

import math

import torch

from common.batch import RolloutBatch


def forward_units(batch: RolloutBatch, rows: int) -> list[RolloutBatch]:
    """The batch cut into units of `rows` rows aligned with its source batch's chunks (row index // rows, where the
    row index is `mask_row`, the position in the actor's batch). Rows are kept in order; a chunk some of whose rows
    were filtered out becomes a smaller unit."""
    if batch.num_rows == 0:
        return []
    chunk = batch.mask_row // rows  # [B]: the actor's chunk of each row
    bounds = torch.nonzero(chunk[1:] != chunk[:-1]).squeeze(1) + 1  # where a new chunk starts (rows are in order)
    starts = [0, *bounds.tolist()]
    ends = [*bounds.tolist(), batch.num_rows]
    return [batch.select(slice(lo, hi)) for lo, hi in zip(starts, ends)]


def plan_micro_batches(batches: list[RolloutBatch], *, rows: int, rank: int, world_size: int) -> list[RolloutBatch]:
    """This rank's micro-batches of the step: every batch's forward units pooled (in batch order), dealt round-robin,
    padded with empty units to the same count on every rank."""
    if not batches:
        return []
    units = [u for b in batches for u in forward_units(b, rows)]
    per_rank = math.ceil(len(units) / world_size) if units else 0
    mine = units[rank::world_size]
    return mine + [batches[0].select([])] * (per_rank - len(mine))


def unit_count(batch_rows: list[int], rows: int) -> int:
    """Forward units of a step whose actor batches have `batch_rows` rows (validation: every rank needs one)."""
    return sum(math.ceil(n / rows) for n in batch_rows)


def drop_zero_advantage_groups(batch: RolloutBatch) -> tuple[RolloutBatch, int]:
    """Rows whose group has zero reward variance carry A = 0; drop them. Returns (kept rows, dropped count)."""
    groups = batch.group_id
    keep = torch.zeros(batch.num_rows, dtype=torch.bool, device="cpu")
    for gid in groups.unique():
        rows = groups == gid
        keep |= rows & bool(batch.reward[rows].std(unbiased=False) > 0)
    return batch.select(keep.nonzero().squeeze(1)), int((~keep).sum())
