"""Batched KV-free diffusion sampling: one schedule table, shared drawing parts (draw.py), one module per schedule.

`sampler.schedule` picks an entry of SCHEDULES: `blocks` = LLaDA's generate (blocks.py), `dream` = Dream's
diffusion_generate (dream.py). Both start from the same canvas, filter, draw in chunks and reveal the most confident
positions with the helpers of draw.py; they differ in which positions compete and how many are revealed per step.
Adding a schedule = one module with a `sample_*` function + one entry here (and the name in SamplerConfig.schedule).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from actors.sampling.blocks import sample_blocks
from actors.sampling.draw import SamplerOutput, check_generator
from actors.sampling.dream import sample_dream
from common.denoiser import Denoiser

if TYPE_CHECKING:  # a type only: benchmarks/gpu_check.py imports the sampler where pydantic is absent
    from common.config import SamplerConfig

__all__ = ["SCHEDULES", "SamplerOutput", "Schedule", "rows_per_call", "sample"]


@dataclass(frozen=True)
class Schedule:
    """One `sampler.schedule`: its sampling loop and how many completion positions one forward scores per row."""

    sample: Callable[..., SamplerOutput]  # (denoiser, prompt_ids, cfg, generator, prompt_len) -> SamplerOutput
    positions: Callable[[SamplerConfig], int]


SCHEDULES: dict[str, Schedule] = {
    "blocks": Schedule(sample_blocks, positions=lambda cfg: cfg.block_length),  # the current block
    "dream": Schedule(sample_dream, positions=lambda cfg: cfg.gen_length),  # the whole completion competes
}


def schedule_of(cfg: SamplerConfig) -> Schedule:
    try:
        return SCHEDULES[cfg.schedule]
    except KeyError:
        raise ValueError(f"sampler.schedule: unknown {cfg.schedule!r}; choose one of {sorted(SCHEDULES)}") from None


def rows_per_call(cfg: SamplerConfig, *, vocab_size: int, dtype: torch.dtype) -> int:
    """How many rows one sampler call may take: the logits of one forward ([rows x positions, V], positions = the
    block, or the whole completion on Dream's schedule) must fit in `sampler.logits_budget_mb`. Callers split larger
    batches (actors/episode.py::generate): evaluation batches of hundreds of prompts stay bounded."""
    per_row = schedule_of(cfg).positions(cfg) * vocab_size * torch.empty((), dtype=dtype, device="meta").element_size()
    return max(1, int(cfg.logits_budget_mb * 2**20 // per_row))


@torch.no_grad()
def sample(denoiser: Denoiser, prompt_ids: torch.Tensor, cfg: SamplerConfig,
           generator: torch.Generator | None = None, *, prompt_len: torch.Tensor | None = None) -> SamplerOutput:
    """Generate cfg.gen_length tokens after each left-padded prompt of `prompt_ids` [B, P] (`prompt_len` [B] real
    tokens each: the pads are masked out of attention; None = no padding) on `cfg.schedule`."""
    check_generator(generator, prompt_ids.device)
    return schedule_of(cfg).sample(denoiser, prompt_ids, cfg, generator, prompt_len)
