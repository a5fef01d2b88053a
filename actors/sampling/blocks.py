"""LLaDA's block schedule (`generate` in LLaDA's generate.py), batched and KV-free, one batch per forward.

x = [prompt, MASK * L]; the completion is split into blocks of `block_length` revealed left to right; `steps` are
split evenly over blocks; in a block the masked count is split evenly over its steps, remainder to the first steps.
Each step is one bidirectional forward over the whole sequence (no KV cache). Logits are computed only at the
masked positions of the current block (with `draw_mask`, also earlier ones still masked); a masked position draws
x^ = argmax(exp(logits) / (-log u)^T) with the noise in float64 or the model dtype (`sampler.gumbel_dtype`; T = 0:
argmax), its confidence is p(x^) (low_confidence), sum p log p (entropy, i.e. -entropy), top1 - top2 (topk_margin)
or uniform (random), the softmax in float32 or the model dtype (`sampler.confidence_dtype`); the k most confident are
revealed. Noise and confidence run `draw_chunk` positions at a time (no float32 / float64 copy of the whole [N, V]
logits; the chunk follows `sampler.logits_budget_mb`). Nothing is ever re-masked. Rows with nothing left to reveal
skip the forward. The MASK token (`sampler.draw_mask`): false = its logit is -inf, never drawn, every position of a
block is revealed in that block (an untrained model would otherwise "reveal" MASKs); true = LLaDA's generate as GDSD
runs it: argmax and softmax over the whole vocabulary, a position that draws MASK stays masked and competes again in
the next steps and blocks (masked positions anywhere before the block's end compete; it may end as MASK,
reveal_step -1). `sampler.top_p` (LLaDA's generate has none): the smallest set of mass >= top_p (draw.top_p_filter).
Legend: B rows, P prompt, L completion, T = P + L, N selected positions, V vocab.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from actors.sampling.draw import (SamplerOutput, chunks, confidence, confidence_dtype, draw_chunk, initial_state,
                                  noise_dtype, reveal_most_confident, top_p_filter)
from common.denoiser import Denoiser

if TYPE_CHECKING:  # a type only: benchmarks/gpu_check.py imports the sampler where pydantic is absent
    from common.config import SamplerConfig


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
            logits[part] = top_p_filter(logits[part], cfg.top_p, keep_boundary=False, fill=float("-inf"))
    tokens = torch.cat([gumbel_argmax(logits[part], cfg.temperature, generator, noise) for part in parts])
    conf = torch.cat([confidence(logits[part], tokens[part], cfg.remasking, generator, conf_dtype).float()
                      for part in parts])  # bf16 values exactly (confidence_dtype: model)
    return tokens, conf


def sample_blocks(denoiser: Denoiser, prompt_ids: torch.Tensor, cfg: SamplerConfig,
                  generator: torch.Generator | None, prompt_len: torch.Tensor | None) -> SamplerOutput:
    """LLaDA's generate on left-padded prompts `prompt_ids` [B, P] (`prompt_len` [B] real tokens, None = no pads)."""
    state = initial_state(denoiser, prompt_ids, cfg.gen_length, prompt_len)
    x, masked, attention, reveal_step, P = state.x, state.masked, state.attention, state.reveal_step, state.prompt
    B, L, device = prompt_ids.shape[0], cfg.gen_length, prompt_ids.device
    num_blocks = L // cfg.block_length
    schedule = reveal_schedule(cfg.block_length, cfg.steps // num_blocks)
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
            rows = select.any(dim=1).nonzero().squeeze(1)  # sync point: which rows still need this block
            if rows.numel() == 0:
                step += 1
                continue
            whole = rows.numel() == B
            x_active, select_active = (x, select) if whole else (x[rows], select[rows])
            attention_active = attention if attention is None or whole else attention[rows]
            logits = denoiser.logits(x_active, positions=select_active, attention_mask=attention_active)  # [N, V]
            tokens, conf = draw_blocks(logits, cfg, generator, mask_id=denoiser.mask_id,
                                       noise=noise_dtype(denoiser, cfg), conf_dtype=confidence_dtype(denoiser, cfg),
                                       chunk=draw_chunk(cfg, logits.shape[1]))  # [N] each
            del logits
            # reveal the k most confident masked positions of the block (k capped by what is left in a row)
            take = torch.minimum(select_active.sum(dim=1), torch.tensor(k, device=device))  # [b]
            x_active, reveal = reveal_most_confident(x_active, select_active, tokens, conf, take, k, denoiser.mask_id)
            if whole:
                x, masked = x_active, masked & ~reveal
            else:
                x[rows], masked[rows] = x_active, masked[rows] & ~reveal
            reveal_step[rows] = torch.where(reveal[:, P:], step, reveal_step[rows])
            forwards += 1
            rows_forwarded += int(rows.numel())
            step += 1
    return SamplerOutput(completion_ids=x[:, P:], reveal_step=reveal_step, forwards=forwards,
                         rows_forwarded=rows_forwarded)
