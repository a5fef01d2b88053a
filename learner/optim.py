"""AdamW + constant-with-warmup LR (official GDSD: lr 3e-6, Adam(0.9, 0.99), wd 0.01, grad-norm clip 0.2)."""
from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor

from common.config import LearnerConfig


def build_optimizer(params, cfg: LearnerConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    warmup = cfg.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1)))
    return optimizer, scheduler


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Global grad-norm clip over sharded (DTensor) grads; returns the pre-clip norm (torchtitan's pattern)."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
    if isinstance(total, DTensor):
        total = total.full_tensor()  # the reduction across ranks happens here
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total
