"""The learner's SPG path (``AlgorithmSpec.logp_kind == "tlc+eubo"``): Sandwiched Policy Gradient, on-policy.

SPG needs no teacher targets (no ratio, no KL: the official ``SPGTrainer`` raises for β ≠ 0), so nothing is
computed before the step. Per micro-batch and inner iteration j it runs the same seeded mask pairs as the ELBO
methods (``masks_for``: draw m is x_t and its complement x~_t, so M = ``algorithm.num_mc`` draws are 2M masked
forwards), keeps the per-token log-probs of all 2M forwards, and turns them into the official per-draw ELBO and the
EUBO of the same draws (learner/losses/elbo_baselines.py), then the sandwich loss. Official SPG w/ Mixture runs
``num_t = 2`` masked forwards per iteration: ``num_mc = 1`` here. No Ray here. Legend: b rows, L completion,
M draws (pairs), D = 2M forwards.
"""
from __future__ import annotations

import torch

from common.batch import RolloutBatch
from common.config import RunConfig
from common.denoiser import Denoiser
from common.logprob import pair_token_logprob
from common.models.lora import row_seeds
from learner.losses import LossSpec, spg_elbo_draws, spg_eubo
from learner.update import MicroFn, masks_for


def sandwich_terms(denoiser: Denoiser, batch: RolloutBatch, j: int, *, beta: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(ELBO draws [b, D], EUBO [b]) at sum scale for inner iteration j, differentiable unless under no_grad.
    Forward d = 2m is draw m's x_t, d = 2m + 1 its complement (LoRA dropout seeded as the ELBO methods')."""
    device = denoiser.device
    prompt, completion = batch.prompt_ids.to(device), batch.completion_ids.to(device)
    draws = batch.mask_seeds.shape[2]
    seeds = batch.mask_seeds[0, j].tolist() if batch.num_rows else [0] * draws  # [M] host ints
    logps, masked = [], []
    for m in range(draws):
        masks = masks_for(batch, j, m).to(device)  # [b, L]
        per_pos = pair_token_logprob(denoiser, prompt, completion, masks, prompt_len=batch.prompt_len,
                                     dropout_seeds=row_seeds(seeds[m], batch.mask_row))  # [2b, L]
        rows = masks.shape[0]
        logps += [per_pos[:rows], per_pos[rows:]]
        masked += [masks, ~masks]
    token_logp, draw_masks = torch.stack(logps, dim=1), torch.stack(masked, dim=1)  # [b, D, L] each
    return spg_elbo_draws(token_logp, draw_masks), spg_eubo(token_logp, draw_masks, beta=beta)


class SandwichPath:
    """SPG (an `UpdatePath`, learner/update.py): one forward set, loss and backward per (micro-batch, j); no teacher,
    no reference."""

    def __init__(self, spec: LossSpec, cfg: RunConfig) -> None:
        if spec.algorithm.logp_kind != "tlc+eubo":
            raise ValueError(f"SandwichPath serves logp_kind 'tlc+eubo', not {spec.algorithm.logp_kind!r}")
        self.spec, self.cfg = spec, cfg
        self.kwargs = spec.kwargs_from(cfg.algorithm)
        self.group_size: int | None = None

    def prepare(self, policy: Denoiser, reference: Denoiser | None, micros: list[RolloutBatch], *, version: int,
                num_rows: int, scale: float) -> MicroFn:
        beta = self.cfg.algorithm.eubo_beta

        def run(i: int, j: int) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
            micro = micros[i]
            elbo, eubo = sandwich_terms(policy, micro, j, beta=beta)
            loss, metrics = self.spec.fn(elbo, eubo, micro.advantage.to(policy.device), micro.completion_ids.shape[1],
                                         num_rows=num_rows, **self.kwargs)
            (loss * scale).backward()
            return metrics, None

        return run
