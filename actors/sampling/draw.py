"""What both sampling schedules share: the starting state, the nucleus / top-k filters, the noise and confidence
rules, the chunked draw bookkeeping and the reveal of the most confident positions (actors/sampling/blocks.py: LLaDA's
blocks; actors/sampling/dream.py: Dream's timesteps).
Legend: B rows, P prompt, L completion, T = P + L, N selected positions, V vocab.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from common.denoiser import Denoiser, padding_mask

if TYPE_CHECKING:  # a type only: benchmarks/gpu_check.py imports the sampler where pydantic is absent
    from common.config import SamplerConfig


@dataclass
class SamplerOutput:
    completion_ids: torch.Tensor  # (B, L) int64, every position revealed
    reveal_step: torch.Tensor  # (B, L) int32, global step at which each position was revealed
    forwards: int  # number of batched forwards run
    rows_forwarded: int  # rows summed over forwards (the work actually done)


@dataclass
class SamplerState:
    """The canvas a schedule edits: x = [prompt, MASK * L], which positions are still masked, the attention mask of
    the left pads, and the step at which each completion position was revealed (-1: not yet)."""

    x: torch.Tensor  # [B, T] int64
    masked: torch.Tensor  # [B, T] bool, False on the prompt
    attention: torch.Tensor | None  # [B, T] bool, None = no padding
    reveal_step: torch.Tensor  # [B, L] int32
    prompt: int  # P


def initial_state(denoiser: Denoiser, prompt_ids: torch.Tensor, gen_length: int,
                  prompt_len: torch.Tensor | None) -> SamplerState:
    """The starting canvas of `gen_length` MASKs after each left-padded prompt of `prompt_ids` [B, P] (`prompt_len`
    [B] real tokens each: the pads are masked out of attention; None = no padding)."""
    B, P = prompt_ids.shape
    device = prompt_ids.device
    attention = padding_mask(None if prompt_len is None else prompt_len.to(device), P, gen_length)  # [B, T] or None
    x = torch.cat([prompt_ids, torch.full((B, gen_length), denoiser.mask_id, dtype=torch.long, device=device)], dim=1)
    masked = torch.zeros(B, P + gen_length, dtype=torch.bool, device=device)
    masked[:, P:] = True
    reveal_step = torch.full((B, gen_length), -1, dtype=torch.int32, device=device)
    return SamplerState(x=x, masked=masked, attention=attention, reveal_step=reveal_step, prompt=P)


def check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    """Noise is drawn where the logits are: a generator on another device is a bug of the caller (common/devices.py)."""
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"sampler: the noise generator is on {generator.device} but the model is on {device}; make "
                         "it with common.devices.make_generator(model device)")


def noise_dtype(denoiser: Denoiser, cfg: SamplerConfig) -> torch.dtype:
    """The Gumbel noise precision of `sampler.gumbel_dtype`: float64, or the dtype of the model's weights."""
    return torch.float64 if cfg.gumbel_dtype == "float64" else next(denoiser.model.parameters()).dtype


def confidence_dtype(denoiser: Denoiser, cfg: SamplerConfig) -> torch.dtype:
    """The precision of `sampler.confidence_dtype`: float32, or the dtype of the model's weights."""
    return torch.float32 if cfg.confidence_dtype == "float32" else next(denoiser.model.parameters()).dtype


def top_p_filter(logits: torch.Tensor, top_p: float, *, keep_boundary: bool, fill: float) -> torch.Tensor:
    """Nucleus filter: a token is dropped (set to `fill`) when the probability mass of the tokens sorted before it
    reaches top_p (`keep_boundary=False`: keep the smallest set of mass >= top_p, Holtzman et al.) or exceeds it
    (`keep_boundary=True`: Dream's top_p_logits, `cumsum > top_p` shifted right by one, so a token whose preceding
    mass equals top_p exactly stays). The top token always stays. The families differ only at that tie, and in the
    fill (LLaDA's generate has no nucleus filter: ours uses -inf; Dream fills with the dtype's minimum)."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    mass = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    over = mass > top_p if keep_boundary else mass >= top_p
    drop = torch.zeros_like(over)
    drop[..., 1:] = over[..., :-1]  # mass strictly before each token
    return logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), fill)


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Dream's top_k_logits: logits below the k-th largest become the dtype's minimum (ties with the k-th stay)."""
    kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, torch.finfo(logits.dtype).min)


def confidence(logits: torch.Tensor, tokens: torch.Tensor, remasking: str,
               generator: torch.Generator | None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[N] in `dtype` (random: float32): how sure the model is of each drawn token; the most confident are revealed
    first. The softmax runs in `dtype` (LLaDA's generate: float64; GDSD's rollouts: the model dtype)."""
    if remasking == "random":
        return torch.rand(tokens.shape, generator=generator, device=tokens.device)
    probs = logits.to(dtype).softmax(dim=-1)  # [N, V]
    if remasking in ("low_confidence", "maskgit_plus"):  # the same rule: LLaDA's name and Dream's
        return probs.gather(1, tokens[:, None]).squeeze(1)
    if remasking == "entropy":  # Dream: confidence = -entropy
        return (probs * torch.log(probs + 1e-10)).sum(dim=-1)
    if remasking == "topk_margin":  # Dream: top-1 minus top-2 probability
        top2 = probs.topk(2, dim=-1).values  # [N, 2]
        return top2[:, 0] - top2[:, 1]
    raise ValueError(f"sampler.remasking: unknown {remasking!r}")


DRAW_SHARE = 8  # one chunk's temporaries may take 1/DRAW_SHARE of sampler.logits_budget_mb


def draw_chunk(cfg: SamplerConfig, vocab_size: int) -> int:
    """Positions per chunk of the draw and the confidence: their float32 / float64 temporaries ([chunk, V], 8 bytes an
    element at most: the float64 Gumbel noise) stay within 1/DRAW_SHARE of `sampler.logits_budget_mb`, so a step's
    peak is the [N, V] logits in the model dtype (within the budget, rows_per_call) plus one chunk's temporaries."""
    return max(1, int(cfg.logits_budget_mb * 2**20 / DRAW_SHARE // (vocab_size * 8)))


def chunks(n: int, chunk: int) -> list[slice]:
    return [slice(lo, min(lo + chunk, n)) for lo in range(0, n, chunk)]


def reveal_most_confident(x: torch.Tensor, select: torch.Tensor, tokens: torch.Tensor, conf: torch.Tensor,
                          counts: torch.Tensor, k: int, mask_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's reveal: of the `select`ed positions [b, T] (drawn `tokens` [N], float32 `conf` [N] in the same
    order), row i reveals its counts[i] <= k most confident. Returns (x with them written, the revealed positions
    [b, T]); a drawn MASK is written but not counted as revealed (sampler.draw_mask: it stays masked)."""
    full = torch.full(select.shape, float("-inf"), device=x.device)  # [b, T]
    full[select] = conf
    drawn = torch.zeros_like(x)
    drawn[select] = tokens
    keep = torch.arange(k, device=x.device)[None, :] < counts[:, None]  # [b, k]: each row its own count
    reveal = torch.zeros_like(select).scatter(1, full.topk(k, dim=1).indices, keep)  # [b, T]
    x = torch.where(reveal, drawn, x)
    return x, reveal & (drawn != mask_id)
