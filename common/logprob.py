"""Denoising log-prob S(x0) (docs/design.md, "Denoising log-prob").

  gdsd: S = 1/2 [ sum_{n in M} log p(x0^n | x_t) + sum_{n not in M} log p(x0^n | x~_t) ]
  tlc:  S = 1/2 [ sum_{n in M} log p(x0^n | x_t) / t + sum_{n not in M} log p(x0^n | x~_t) / (L/(L+1) - t) ]
over all L completion positions (EOS padding included, as the official code), t = |M| / (L+1). x~_t masks exactly
the completion positions x_t leaves visible, so each token is predicted exactly once across the pair. An empty sum
contributes 0 (its 1/t weight is never evaluated). log p = log_softmax of the logits, accumulated in float32.
"""
from __future__ import annotations

import torch

from common.algorithms import SVariant
from common.denoiser import Denoiser, padding_mask
from common.masking import mask_fraction
from common.models.lora import lora_dropout


def pair_inputs(prompt_ids: torch.Tensor, completion_ids: torch.Tensor, masks: torch.Tensor,
                mask_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs [2B, P+L], read bool [2B, P+L]): rows 0..B-1 are x_t (completion masked where `masks`), rows B..2B-1
    its complement x~_t; `read` marks the masked completion positions whose token is scored. The prompt is kept."""
    masks = masks.to(completion_ids.device)
    both = torch.cat([masks, ~masks], dim=0)  # [2B, L]: x_t masks M, x~_t masks the rest
    completion = torch.where(both, mask_id, completion_ids.repeat(2, 1))  # [2B, L]
    inputs = torch.cat([prompt_ids.repeat(2, 1), completion], dim=1)  # [2B, P+L]
    read = torch.cat([torch.zeros_like(prompt_ids, dtype=torch.bool).repeat(2, 1), both], dim=1)  # [2B, P+L]
    return inputs, read


def denoise_logprob(denoiser: Denoiser, prompt_ids: torch.Tensor, completion_ids: torch.Tensor, masks: torch.Tensor,
                    s_variant: SVariant = "gdsd", *, prompt_len: torch.Tensor | None = None,
                    dropout_seeds: torch.Tensor | None = None) -> torch.Tensor:
    """S(x0) float32 [B] for prompts [B, P] (left-padded, `prompt_len` [B] real tokens; None = no padding),
    completions [B, L] and masks bool [B, L] (True = masked in x_t).

    x_t and its complement run as one batch of 2B rows (the two forwards of the pair); the head and log_softmax run
    only at the B*L positions whose token is read, chunk by chunk in float32 (no [rows, T, V] float32 tensor).
    Differentiable: the learner calls it with grad, the actor without. `dropout_seeds` int64 [B]: LoRA dropout seeds
    of the rows (common.models.lora.row_seeds; the complement row gets its own); None = no dropout.
    """
    if s_variant not in ("gdsd", "tlc"):
        raise ValueError(f"unknown S(x0) variant {s_variant!r}; choose 'gdsd' or 'tlc'")
    B, L = completion_ids.shape
    per_pos = pair_token_logprob(denoiser, prompt_ids, completion_ids, masks, prompt_len=prompt_len,
                                 dropout_seeds=dropout_seeds)  # [2B, L]
    sum_masked, sum_rest = per_pos[:B].sum(dim=1), per_pos[B:].sum(dim=1)  # [B], [B]
    if s_variant == "gdsd":
        return 0.5 * (sum_masked + sum_rest)
    t = mask_fraction(masks).to(sum_masked.device)  # [B]
    t_rest = L / (L + 1) - t  # the complement's mask fraction
    weighted_masked = torch.where(t > 0, sum_masked / t.clamp_min(1e-12), 0.0)
    weighted_rest = torch.where(t_rest > 0, sum_rest / t_rest.clamp_min(1e-12), 0.0)
    return 0.5 * (weighted_masked + weighted_rest)


def pair_token_logprob(denoiser: Denoiser, prompt_ids: torch.Tensor, completion_ids: torch.Tensor,
                       masks: torch.Tensor, *, prompt_len: torch.Tensor | None = None,
                       dropout_seeds: torch.Tensor | None = None) -> torch.Tensor:
    """float32 [2B, L]: log p(x0^n | x_t) at the positions x_t masks (rows 0..B-1) and log p(x0^n | x~_t) at the
    positions its complement masks (rows B..2B-1), 0 elsewhere: the per-token terms of `denoise_logprob` (same
    arguments), for estimators that aggregate tokens otherwise (SPG's EUBO)."""
    B, L = completion_ids.shape
    inputs, read = pair_inputs(prompt_ids, completion_ids, masks, denoiser.mask_id)  # [2B, P+L] each
    both = read[:, prompt_ids.shape[1]:]  # [2B, L]
    attention = padding_mask(None if prompt_len is None else prompt_len.to(inputs.device).repeat(2),
                             prompt_ids.shape[1], L)  # [2B, P+L] or None
    targets = completion_ids.repeat(2, 1)[both]  # [B*L], row-major over (pair row, position)
    seeds = None if dropout_seeds is None else torch.cat([dropout_seeds, dropout_seeds ^ 0x5DEECE66D])  # [2B]
    with lora_dropout(denoiser.net, seeds):
        token_logp = denoiser.logprob(inputs, read, targets, attention_mask=attention)  # [B*L] f32
    return torch.zeros(2 * B, L, dtype=torch.float32, device=token_logp.device).masked_scatter(both, token_logp)

