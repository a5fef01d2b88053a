"""Batched KV-free diffusion sampling (LLaDA `generate`; Dream's schedule in sampler_dream.py), one batch per forward.

x = [prompt, MASK * L]; the completion is split into blocks of `block_length` revealed left to right; `steps` are
split evenly over blocks; in a block the masked count is split evenly over its steps, remainder to the first steps.
Each step is one bidirectional forward over the whole sequence (no KV cache). Logits are computed only at the
masked positions of the current block (with `draw_mask`, also earlier ones still masked); a masked position draws
x^ = argmax(exp(logits) / (-log u)^T) with the noise in float64 or the model dtype (`sampler.gumbel_dtype`; T = 0:
argmax), its confidence is p(x^) (low_confidence), sum p log p (entropy, i.e. -entropy), top1 - top2 (topk_margin)
or uniform (random), the softmax in float32 or the model dtype (`sampler.confidence_dtype`); the k most confident are
revealed. Noise and confidence run `draw_chunk` positions at a time (no float32 / float64 copy of the whole [N, V]
logits; the chunk follows `sampler.logits_budget_mb`). Nothing is ever re-masked. Rows with nothing left to reveal
skip the forward. The MASK token
(`sampler.draw_mask`): false = its logit is -inf, never drawn, every position of a block is revealed in that block
(an untrained model would otherwise "reveal" MASKs); true = LLaDA's generate as GDSD runs it: argmax and softmax over
the whole vocabulary, a position that draws MASK stays masked and competes again in the next steps and blocks
(masked positions anywhere before the block's end compete; it may end as MASK, reveal_step -1).
`sampler.schedule: dream` hands over to Dream's own schedule (actors/sampler_dream.py).
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


def reveal_schedule(masked: int, steps: int) -> list[int]:
    """Tokens revealed per step for one block: masked // steps each, the remainder to the first steps."""
    base, extra = divmod(masked, steps)
    return [base + (1 if i < extra else 0) for i in range(steps)]


def gumbel_argmax(logits: torch.Tensor, temperature: float, generator: torch.Generator | None,
                  dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """LLaDA's add_gumbel_noise + argmax: argmax exp(logits) / (-log u)^T with logits and u in `dtype`; T = 0 is plain
    argmax. LLaDA's generate.py uses float64 (low-precision Gumbel-max sharpens sampling); the official GDSD training
    rollouts pass the model dtype (`sampler.gumbel_dtype: model`): with bf16 u, P(top-1) on a V=8192 toy is ~2x the
    exact value (tests/actors/test_sampler_recipe.py, docs/recipe.md)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.to(dtype)
    u = torch.rand(logits.shape, generator=generator, dtype=dtype, device=logits.device)
    return (logits.exp() / (-torch.log(u)) ** temperature).argmax(dim=-1)


def noise_dtype(denoiser: Denoiser, cfg: SamplerConfig) -> torch.dtype:
    """The Gumbel noise precision of `sampler.gumbel_dtype`: float64, or the dtype of the model's weights."""
    return torch.float64 if cfg.gumbel_dtype == "float64" else next(denoiser.model.parameters()).dtype


def confidence_dtype(denoiser: Denoiser, cfg: SamplerConfig) -> torch.dtype:
    """The precision of `sampler.confidence_dtype`: float32, or the dtype of the model's weights."""
    return torch.float32 if cfg.confidence_dtype == "float32" else next(denoiser.model.parameters()).dtype


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Set logits outside the smallest set of probability mass >= top_p to -inf (the top token always stays)."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    mass_before = sorted_logits.softmax(dim=-1).cumsum(dim=-1) - sorted_logits.softmax(dim=-1)
    drop_sorted = mass_before >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


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


def draw_blocks(logits: torch.Tensor, cfg: SamplerConfig, generator: torch.Generator | None, *, mask_id: int,
                noise: torch.dtype, conf_dtype: torch.dtype, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [N], float32 confidence [N]) of one LLaDA step over logits [N, V] (model dtype, edited in place: MASK's
    logit, top_p), `chunk` positions at a time. The Gumbel noise of every chunk is drawn before any random
    confidence, as in one unchunked pass, so a CPU generator gives the same draws whatever the chunk (CUDA's Philox
    offsets depend on the call sizes: the same distribution, other numbers)."""
    if not cfg.draw_mask:
        logits[:, mask_id] = float("-inf")
    parts = chunks(logits.shape[0], chunk)
    if cfg.top_p is not None and cfg.top_p < 1:
        for part in parts:
            logits[part] = top_p_filter(logits[part], cfg.top_p)
    tokens = torch.cat([gumbel_argmax(logits[part], cfg.temperature, generator, noise) for part in parts])
    conf = torch.cat([confidence(logits[part], tokens[part], cfg.remasking, generator, conf_dtype).float()
                      for part in parts])  # bf16 values exactly (confidence_dtype: model)
    return tokens, conf


def rows_per_call(cfg: SamplerConfig, *, vocab_size: int, dtype: torch.dtype) -> int:
    """How many rows one sampler call may take: the logits of one forward ([rows x positions, V], positions = the
    block, or the whole completion on Dream's schedule) must fit in `sampler.logits_budget_mb`. Callers split larger
    batches (actors/episode.py::generate): evaluation batches of hundreds of prompts stay bounded."""
    positions = cfg.gen_length if cfg.schedule == "dream" else cfg.block_length
    per_row = positions * vocab_size * torch.empty((), dtype=dtype, device="meta").element_size()
    return max(1, int(cfg.logits_budget_mb * 2**20 // per_row))


def check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    """Noise is drawn where the logits are: a generator on another device is a bug of the caller (common/devices.py)."""
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"sampler: the noise generator is on {generator.device} but the model is on {device}; make "
                         "it with common.devices.make_generator(model device)")


@torch.no_grad()
def sample(denoiser: Denoiser, prompt_ids: torch.Tensor, cfg: SamplerConfig,
           generator: torch.Generator | None = None, *, prompt_len: torch.Tensor | None = None) -> SamplerOutput:
    """Generate cfg.gen_length tokens after each left-padded prompt of `prompt_ids` [B, P] (`prompt_len` [B] real
    tokens each: the pads are masked out of attention; None = no padding)."""
    check_generator(generator, prompt_ids.device)
    if cfg.schedule == "dream":
        from actors.sampler_dream import sample_dream  # its own module; it imports this one's helpers

        return sample_dream(denoiser, prompt_ids, cfg, generator, prompt_len=prompt_len)
    B, P = prompt_ids.shape
    L, device = cfg.gen_length, prompt_ids.device
    attention = padding_mask(None if prompt_len is None else prompt_len.to(device), P, L)  # [B, T] or None
    x = torch.cat([prompt_ids, torch.full((B, L), denoiser.mask_id, dtype=torch.long, device=device)], dim=1)
    masked = torch.cat([torch.zeros_like(prompt_ids, dtype=torch.bool), torch.ones(B, L, dtype=torch.bool,
                                                                                   device=device)], dim=1)  # [B, T]
    reveal_step = torch.full((B, L), -1, dtype=torch.int32, device=device)
    num_blocks = L // cfg.block_length
    steps_per_block = cfg.steps // num_blocks
    schedule = reveal_schedule(cfg.block_length, steps_per_block)
    forwards = rows_forwarded = 0
    step = 0
    for block in range(num_blocks):
        lo, hi = P + block * cfg.block_length, P + (block + 1) * cfg.block_length
        in_block = torch.zeros(1, P + L, dtype=torch.bool, device=device)
        # draw_mask: positions of earlier blocks that drew MASK compete too (official: x0_p[:, end:] = -inf only)
        in_block[:, (P if cfg.draw_mask else lo):hi] = True
        for k in schedule:
            if k == 0:  # more steps than tokens in the block: nothing to reveal, no forward needed
                step += 1
                continue
            select = masked & in_block  # [B, T] masked positions of the current block
            active = select.any(dim=1)  # [B]
            rows = active.nonzero().squeeze(1)  # sync point: which rows still need this block
            if rows.numel() == 0:
                step += 1
                continue
            x_active, select_active = (x, select) if rows.numel() == B else (x[rows], select[rows])
            attention_active = attention if attention is None or rows.numel() == B else attention[rows]
            logits = denoiser.logits(x_active, positions=select_active, attention_mask=attention_active)  # [N, V]
            tokens, conf_n = draw_blocks(logits, cfg, generator, mask_id=denoiser.mask_id,
                                         noise=noise_dtype(denoiser, cfg), conf_dtype=confidence_dtype(denoiser, cfg),
                                         chunk=draw_chunk(cfg, logits.shape[1]))  # [N] each
            del logits
            conf = torch.full(select_active.shape, float("-inf"), device=device)  # [b, T]
            conf[select_active] = conf_n
            drawn = torch.zeros_like(x_active)
            drawn[select_active] = tokens
            # reveal the k most confident masked positions of the block (k capped by what is left in a row)
            take = torch.minimum(select_active.sum(dim=1), torch.tensor(k, device=device))  # [b]
            top = conf.topk(k, dim=1).indices  # [b, k]
            keep = torch.arange(k, device=device)[None, :] < take[:, None]  # [b, k]
            reveal = torch.zeros_like(select_active).scatter(1, top, keep)  # [b, T]
            x_active = torch.where(reveal, drawn, x_active)
            reveal &= drawn != denoiser.mask_id  # a drawn MASK leaves the position masked (draw_mask only)
            if rows.numel() == B:
                x, masked = x_active, masked & ~reveal
            else:
                x[rows], masked[rows] = x_active, masked[rows] & ~reveal
            reveal_step[rows] = torch.where(reveal[:, P:], step, reveal_step[rows])
            forwards += 1
            rows_forwarded += int(rows.numel())
            step += 1
    return SamplerOutput(completion_ids=x[:, P:], reveal_step=reveal_step, forwards=forwards,
                         rows_forwarded=rows_forwarded)
