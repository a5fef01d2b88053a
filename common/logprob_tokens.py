"""Per-token one-step log-probs of d1 (diffu-GRPO, Zhao et al., arXiv:2504.12216) and wd1.

The mean-field one-step estimate: the whole completion is replaced by MASK, the prompt tokens selected by
`prompt_mask` (d1 draws each real prompt token w.p. p_mask_prompt = 0.15, see
`learner/losses/token_baselines.py::diffu_grpo_prompt_mask`) are replaced by MASK too, one forward, and
log p(x0^n | masked input) = log_softmax(logits)[x0^n] at every completion position n (official d1 / wd1
`forward_process` + `_get_per_token_logps`). Legend: B rows, P prompt, L completion, V vocab.
"""
from __future__ import annotations

import torch

from common.denoiser import Denoiser, padding_mask


def onestep_inputs(prompt_ids: torch.Tensor, completion_ids: torch.Tensor, prompt_mask: torch.Tensor,
                   mask_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs [B, P+L], read bool [B, P+L]): masked prompt + all-MASK completion; `read` marks the completion."""
    if prompt_mask.shape != prompt_ids.shape or prompt_mask.dtype != torch.bool:
        raise ValueError(f"prompt_mask must be bool {tuple(prompt_ids.shape)} like prompt_ids, got "
                         f"{prompt_mask.dtype} {tuple(prompt_mask.shape)}")
    prompt = torch.where(prompt_mask.to(prompt_ids.device), mask_id, prompt_ids)
    inputs = torch.cat([prompt, torch.full_like(completion_ids, mask_id)], dim=1)
    read = torch.cat([torch.zeros_like(prompt_ids, dtype=torch.bool),
                      torch.ones_like(completion_ids, dtype=torch.bool)], dim=1)
    return inputs, read


def onestep_token_logprob(denoiser: Denoiser, prompt_ids: torch.Tensor, completion_ids: torch.Tensor,
                          prompt_mask: torch.Tensor, *, prompt_len: torch.Tensor | None = None) -> torch.Tensor:
    """float32 [B, L]: log p(x0^n | prompt with `prompt_mask` masked, completion all masked), one forward.

    The LM head runs only at the B*L completion positions (for a Dream-style shifted denoiser, position n is read
    from hidden n-1, which the Denoiser adapter handles). log_softmax is taken in float32. Differentiable: the
    learner calls it with grad for the policy, under no_grad for the old and reference log-probs. `prompt_len` [B]:
    real prompt tokens (the left pads are masked out of attention; None = no padding).
    """
    B, L = completion_ids.shape
    inputs, read = onestep_inputs(prompt_ids, completion_ids, prompt_mask, denoiser.mask_id)
    attention = padding_mask(None if prompt_len is None else prompt_len.to(inputs.device), prompt_ids.shape[1], L)
    token_logp = denoiser.logprob(inputs, read, completion_ids.reshape(-1), attention_mask=attention)  # [B*L]
    return token_logp.view(B, L)
