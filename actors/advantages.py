"""Group advantages (docs/design.md, "Formulas"): leave-one-out baseline, no std scaling."""
from __future__ import annotations

import torch


def leave_one_out(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """A_i = r_i - mean_{j != i} r_j within each group of `group_size` consecutive rows. float32 [B]."""
    if group_size < 2 or rewards.numel() % group_size:
        raise ValueError(f"rollout.group_size: {group_size} must be >= 2 and divide the {rewards.numel()} rows")
    r = rewards.float().view(-1, group_size)  # [num_groups, G]
    others_mean = (r.sum(dim=1, keepdim=True) - r) / (group_size - 1)
    return (r - others_mean).view(-1)
