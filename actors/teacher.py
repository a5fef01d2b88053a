"""Per-step teacher targets: mask seeds s[j, m] and S_old / S_ref for every (inner iteration j, mc draw m).

The learner rebuilds the same masks from the seeds, so it never needs the old or reference weights
(docs/design.md, "RolloutBatch"). Legend: B rows, P prompt, L completion, J inner iterations, M mc draws.
"""
from __future__ import annotations

import torch

from common.denoiser import Denoiser
from common.algorithms import SVariant
from common.logprob import denoise_logprob
from common.masking import consistent_masks
from common.models.lora import row_seeds


def draw_mask_seeds(num_iters: int, num_mc: int, generator: torch.Generator) -> torch.Tensor:
    """int64 [J, M] seeds, one per (inner iteration, mc draw), shared by all rows of a batch."""
    return torch.randint(0, 2**62, (num_iters, num_mc), generator=generator, dtype=torch.int64, device="cpu")


@torch.no_grad()
def teacher_logps(denoiser: Denoiser, prompt_ids: torch.Tensor, completion_ids: torch.Tensor,
                  seeds: torch.Tensor, *, s_variant: SVariant, rows_per_forward: int,
                  prompt_len: torch.Tensor | None = None) -> torch.Tensor:
    """S(x0) float32 [B, J, M] under `denoiser` with the masks of `seeds` [J, M] built for the whole batch
    (`prompt_len` [B]: real tokens of the left-padded prompts, masked out of attention like on the learner). LoRA
    dropout (policy only) is seeded per (row, seed) as on the learner."""
    B, L = completion_ids.shape
    J, M = seeds.shape
    out = torch.empty(B, J, M, dtype=torch.float32, device=completion_ids.device)  # one host copy at the end
    for j in range(J):
        for m in range(M):
            masks = consistent_masks(int(seeds[j, m]), B, L, device=completion_ids.device)  # [B, L]
            drop = row_seeds(int(seeds[j, m]), torch.arange(B, device="cpu")) if denoiser.adapters else None  # [B]
            for lo in range(0, B, rows_per_forward):
                hi = min(B, lo + rows_per_forward)
                out[lo:hi, j, m] = denoise_logprob(denoiser, prompt_ids[lo:hi], completion_ids[lo:hi],
                                                   masks[lo:hi], s_variant=s_variant,
                                                   prompt_len=None if prompt_len is None else prompt_len[lo:hi],
                                                   dropout_seeds=None if drop is None else drop[lo:hi])
    return out.cpu()
