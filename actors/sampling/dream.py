"""Dream's timestep schedule (`diffusion_generate` in Dream's generation_utils.py), batched and KV-free.

No blocks: timesteps t = linspace(1, eps = 1e-3, steps + 1) over the whole completion; at step i (t -> s) every
row reveals int(m * (1 - s / t)) of its m masked positions (all of them at the last step), computed in float32 as
Dream does, m counted per row (Dream divides the batch's count by the rows, the same when no row drew MASK); all
masked positions of a row compete. Per masked position: logits / T, then Dream's top_p and top_k filters
(`sampler.top_k`: the official calls inherit 50), probs = softmax, all in float32 or the model dtype
(`sampler.confidence_dtype`); T > 0 draws x^ from probs, T = 0 takes the argmax; the confidence is p(x^)
(maskgit_plus / low_confidence), top1 - top2 (topk_margin) or sum p log p (entropy: official GDSD Dream rollouts,
alg_temp 0 i.e. plain top-k). The draw runs `draw_chunk` positions at a time (actors/sampling/draw.py).
`sampler.draw_mask` as the block schedule: false = MASK never drawn; true = Dream's rule, a position that draws MASK
stays masked and competes at the next step (it may end as MASK). Padding and position ids for left pads are the
denoiser's business (models), not this schedule's.
Legend: B rows, P prompt, L completion, T = P + L, N selected positions, V vocab.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from actors.sampling.draw import (SamplerOutput, chunks, confidence, confidence_dtype, draw_chunk, initial_state,
                                  reveal_most_confident, top_k_filter, top_p_filter)
from common.denoiser import Denoiser

if TYPE_CHECKING:  # a type only: benchmarks/gpu_check.py imports the sampler where pydantic is absent
    from common.config import SamplerConfig

EPS = 1e-3  # Dream's DreamGenerationConfig.eps default (the official GDSD calls never set it)


def reveal_counts(masked: int, steps: int) -> list[int]:
    """Tokens revealed per step for `masked` positions, exactly as Dream computes them (float32 timesteps)."""
    t = torch.linspace(1, EPS, steps + 1, device="cpu")
    counts, left = [], torch.tensor(float(masked), device="cpu")
    for i in range(steps):
        k = int(left * (1 - t[i + 1] / t[i])) if i < steps - 1 else int(left)
        counts.append(k)
        left = left - k
    return counts


def draw(logits: torch.Tensor, cfg: SamplerConfig, generator: torch.Generator | None,
         dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [N], confidence [N]) of Dream's sample_tokens for logits [N, V], computed in `dtype`
    (`sampler.confidence_dtype`; Dream itself: its bf16 logits)."""
    if cfg.remasking == "random":
        raise ValueError("sampler.remasking=random is not a Dream alg; with sampler.schedule=dream use "
                         "entropy, maskgit_plus (= low_confidence) or topk_margin")
    logits = logits.to(dtype)
    if cfg.temperature > 0:
        logits = logits / cfg.temperature
    if cfg.top_p is not None and cfg.top_p < 1:  # Dream's top_p_logits: `cumsum > top_p`, dtype-minimum fill
        logits = top_p_filter(logits, cfg.top_p, keep_boundary=True, fill=torch.finfo(logits.dtype).min)
    if cfg.top_k is not None:
        logits = top_k_filter(logits, cfg.top_k)
    probs = logits.softmax(dim=-1)  # [N, V]
    if cfg.temperature > 0:
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    else:
        tokens = probs.argmax(dim=-1)
    return tokens, confidence(logits, tokens, cfg.remasking, generator, dtype)


def draw_chunked(logits: torch.Tensor, cfg: SamplerConfig, generator: torch.Generator | None, dtype: torch.dtype,
                 chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`draw` `chunk` positions at a time: no `dtype` copy of the whole [N, V] logits; the generator is called per
    chunk in order (a CPU generator gives the same draws as one pass; CUDA: same distribution, other numbers)."""
    parts = [draw(logits[part], cfg, generator, dtype) for part in chunks(logits.shape[0], chunk)]
    return torch.cat([t for t, _ in parts]), torch.cat([c for _, c in parts])


def sample_dream(denoiser: Denoiser, prompt_ids: torch.Tensor, cfg: SamplerConfig,
                 generator: torch.Generator | None, prompt_len: torch.Tensor | None) -> SamplerOutput:
    """Dream's diffusion_generate on left-padded prompts `prompt_ids` [B, P] (`prompt_len` [B]: real tokens; pads
    are masked out of attention and positions start at the first real token, as Dream's own generation does)."""
    state = initial_state(denoiser, prompt_ids, cfg.gen_length, prompt_len)
    x, masked, attention, reveal_step, P = state.x, state.masked, state.attention, state.reveal_step, state.prompt
    B, device = prompt_ids.shape[0], prompt_ids.device
    forwards = 0
    t = torch.linspace(1, EPS, cfg.steps + 1, device="cpu")  # float32, as Dream
    for step in range(cfg.steps):
        left = masked.sum(dim=1).float()  # [B] float32, as Dream's mask_index.sum() / rows
        ks = (left if step == cfg.steps - 1 else left * (1 - t[step + 1] / t[step]).to(device)).long()  # [B] trunc
        k = int(ks.max())
        if k == 0:  # Dream still runs the forward here; nothing it computes is used, so skip it
            continue
        logits = denoiser.logits(x, positions=masked, attention_mask=attention)  # [N, V], N = B * masked-per-row
        if not cfg.draw_mask:
            logits[:, denoiser.mask_id] = float("-inf")
        tokens, conf = draw_chunked(logits, cfg, generator, confidence_dtype(denoiser, cfg),
                                    draw_chunk(cfg, logits.shape[1]))
        del logits
        # conf.float(): bf16 values exactly (confidence_dtype: model)
        x, reveal = reveal_most_confident(x, masked, tokens, conf.float(), ks, k, denoiser.mask_id)
        masked &= ~reveal
        reveal_step = torch.where(reveal[:, P:], step, reveal_step)
        forwards += 1
    return SamplerOutput(completion_ids=x[:, P:], reveal_step=reveal_step, forwards=forwards,
                         rows_forwarded=forwards * B)
