"""Shared checks and small tensor helpers of the loss functions (no model, no device assumptions)."""
from __future__ import annotations

import torch
from torch import Tensor

Metrics = dict[str, Tensor]


def compute_dtype(t: Tensor) -> torch.dtype:
    """At least float32: bf16/fp16 inputs are upcast (S is a sum over L log-probs), float64 stays float64."""
    return torch.promote_types(t.dtype, torch.float32)


def rows_norm(num_rows: int | None, local_rows: int) -> int:
    """Rows the loss is normalised by: the global batch when a rank holds a shard, else the local batch."""
    n = local_rows if num_rows is None else int(num_rows)
    if n <= 0:
        raise ValueError(f"num_rows must be positive, got {n}")
    if n < local_rows:
        raise ValueError(f"num_rows ({n}) is smaller than the rows given ({local_rows})")
    return n


def check_gen_len(gen_len: int) -> int:
    if int(gen_len) <= 0:
        raise ValueError(f"gen_len must be positive, got {gen_len}")
    return int(gen_len)


def check_same_shape(name: str, t: Tensor | None, ref: Tensor, ref_name: str) -> None:
    if t is not None and t.shape != ref.shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(ref.shape)} like {ref_name}")


def check_rows(name: str, t: Tensor, ndim: int) -> None:
    if t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")


def check_advantages(advantages: Tensor, rows: int) -> None:
    if advantages.shape != (rows,):
        raise ValueError(f"advantages must have shape ({rows},), got {tuple(advantages.shape)}")


def detached(x: Tensor) -> Tensor:
    """A 0-dim metric that holds no graph and costs no host sync (call .item() once when logging)."""
    return x.detach().reshape(())


def zero_like(t: Tensor, dtype: torch.dtype) -> Tensor:
    return torch.zeros((), dtype=dtype, device=t.device)


def ppo_clip_objective(ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float) -> tuple[Tensor, Tensor]:
    """PPO-clip per element: -min(ρA, clip(ρ, 1-ε_lo, 1+ε_hi)A), and where the clip decides (zero gradient).

    The clipped region is the one the objective actually uses: ρ > 1+ε_hi with A > 0, or ρ < 1-ε_lo with A < 0
    (the convention of TRL's GRPO and the ESPO trainer's clip_ratio metric).
    """
    clipped_ratio = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    obj = torch.minimum(ratio * adv, clipped_ratio * adv)
    region = ((ratio > 1.0 + eps_high) & (adv > 0)) | ((ratio < 1.0 - eps_low) & (adv < 0))
    return -obj, region
