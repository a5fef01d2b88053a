"""A step's metrics across the learner ranks: every inner iteration's sums in one all-reduce on the device (plus one
max for the teacher gap), then one host copy (docs/design.md, "Learner memory"). Means are per row; the loss terms
are already normalised by the global row count, so they are summed."""
from __future__ import annotations

import logging
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)
# docs/design.md, Numerical traps: warn when the first inner iteration's clamp fraction exceeds a few percent
FIRST_ITER_CLAMP_WARN = 0.05


def reduce_step(per_iter: list[torch.Tensor], keys: list[str], gap_max: torch.Tensor, head: dict[str, Any], *,
                world_size: int, rank: int, log_param_delta: bool, needs_old: bool, eps: float) -> dict[str, Any]:
    """`per_iter`: one [len(keys) + 3] vector per inner iteration (metric sums over this rank's rows, the row count,
    the grad norm, the parameter movement); `head`: scalars reported as they are (version, lr, ...). Returns the
    global metrics: a list over inner iterations per key. Collective: every rank calls it."""
    stacked: list[list[float]] = []  # [J][len(keys) + 3]
    if per_iter:
        summed = torch.stack(per_iter)  # [J, len(keys) + 3]
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        dist.all_reduce(gap_max, op=dist.ReduceOp.MAX)
        stacked = summed.tolist()  # the step's one device -> host sync
    out: dict[str, Any] = dict(head)
    for row in stacked:
        rows = row[len(keys)]
        for k, key in enumerate(keys):
            out.setdefault(key, []).append(row[k] if key.startswith("loss") else row[k] / max(rows, 1))
        out.setdefault("grad_norm", []).append(row[-2] / world_size)  # the same norm on every rank
        if log_param_delta:
            out.setdefault("param_delta", []).append(row[-1] / world_size)
    if stacked and needs_old:
        out["teacher_gap_max"] = float(gap_max)
        if "mean_abs_delta" in out:  # a loss that reports |S_theta - S_old|
            out["teacher_gap_mean"] = out["mean_abs_delta"][0]
        on_policy = max(head.get("staleness", []), default=0) == 0  # stale batches differ for real, not numerically
        if out.get("clamp_frac", [0])[0] > FIRST_ITER_CLAMP_WARN and on_policy and rank == 0:
            log.warning("clamp fraction %.2f at the first inner iteration: |S_theta - S_old| (max %.3g) exceeds "
                        "eps=%g; check that actor and learner use the same dtype (docs/design.md, Numerical traps)",
                        out["clamp_frac"][0], out["teacher_gap_max"], eps)
    return out
