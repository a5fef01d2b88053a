"""The learner's per-token path (``AlgorithmSpec.logp_kind == "token_onestep"``): diffu-GRPO (d1) and wd1.

The RolloutBatch carries no per-token targets (old_logp / ref_logp are sequence-level [B, J, M], NaN for these
algorithms), so they are recomputed here, on the learner, in synchronous mode (``algorithm.teacher_source=learner``):

  * prompt mask of inner iteration j: ``diffu_grpo_prompt_mask`` drawn for the whole source batch from a CPU
    ``torch.Generator`` seeded with the batch's mask seed s[j, 0], restricted to this rank's rows
    (``mask_row``) and to real prompt tokens. The same mask serves old, new and reference log-probs of iteration
    j, and it does not depend on how rows are sharded over ranks or micro-batches.
  * old per-token log-probs: under no_grad at the start of the step, with the current weights (= the weights that
    sampled the batch, checked through ``policy_version``), on exactly the micro-batches the gradient forwards
    use, so the ratio at the first inner iteration is exactly 1 on CPU.
  * reference per-token log-probs: from the learner's frozen reference copy (loaded when
    ``AlgorithmSpec.reference_on(β) == "learner"``: the loss has a KL term and β > 0).

No Ray here. Legend: b rows on this rank, P prompt, L completion, J inner iterations.
"""
from __future__ import annotations

from typing import cast

import torch
from torch.distributed.fsdp import FSDPModule

from common.batch import RolloutBatch
from common.config import RunConfig
from common.denoiser import Denoiser, padding_mask
from common.logprob_tokens import onestep_token_logprob
from learner.losses import LossSpec, diffu_grpo_prompt_mask
from learner.update import MicroFn, check_on_policy


def onestep_prompt_mask(batch: RolloutBatch, j: int, p_mask_prompt: float) -> torch.Tensor:
    """bool [b, P]: the prompt tokens the one-step estimate masks at inner iteration j (True = replaced by MASK)."""
    width = batch.prompt_ids.shape[1]
    if batch.num_rows == 0:  # an empty micro-batch (learner/micro.py)
        return torch.zeros(0, width, dtype=torch.bool, device="cpu")
    source_rows = int(batch.mask_batch_rows[0])
    generator = torch.Generator(device="cpu").manual_seed(int(batch.mask_seeds[0, j, 0]))
    # [source B, P], a pure function of (seed, source B, P)
    full = diffu_grpo_prompt_mask(torch.ones(source_rows, width, dtype=torch.bool, device="cpu"),
                                  p_mask_prompt=p_mask_prompt, generator=generator)
    return full[batch.mask_row] & padding_mask(batch.prompt_len, width, 0)  # [b, P]: real prompt tokens


def token_logp(denoiser: Denoiser, batch: RolloutBatch, j: int, p_mask_prompt: float) -> torch.Tensor:
    """float32 [b, L] one-step per-token log-probs at inner iteration j (differentiable unless under no_grad)."""
    device = denoiser.device
    prompt_mask = onestep_prompt_mask(batch, j, p_mask_prompt)
    return onestep_token_logprob(denoiser, batch.prompt_ids.to(device), batch.completion_ids.to(device),
                                 prompt_mask.to(device), prompt_len=batch.prompt_len)


class TokenPath:
    """The per-token losses (an `UpdatePath`, learner/update.py): targets computed once per step on the micro-batches
    the gradient forwards use, one loss call per (micro, j). wd1 normalises within prompt groups, so its rows are
    split on group boundaries (registry: `group_rows`)."""

    def __init__(self, spec: LossSpec, cfg: RunConfig) -> None:
        if spec.algorithm.logp_kind != "token_onestep":
            raise ValueError(f"TokenPath serves logp_kind 'token_onestep', not {spec.algorithm.logp_kind!r}")
        self.spec, self.cfg = spec, cfg
        self.kwargs = spec.kwargs_from(cfg.algorithm)
        self.group_size = cfg.rollout.group_size if spec.algorithm.group_rows else None
        self.use_ref = spec.algorithm.reference_on(cfg.algorithm.beta) == "learner"

    @torch.no_grad()
    def _targets(self, denoiser: Denoiser, micros: list[RolloutBatch], num_iters: int) -> list[torch.Tensor]:
        """Per micro-batch float32 [b, J, L] on the denoiser's device."""
        p = self.cfg.algorithm.p_mask_prompt
        return [torch.stack([token_logp(denoiser, m, j, p) for j in range(num_iters)], dim=1) for m in micros]

    def prepare(self, policy: Denoiser, reference: Denoiser | None, micros: list[RolloutBatch], *,
                version: int, num_rows: int, scale: float) -> MicroFn:
        """Compute old / reference targets for each of this rank's micro-batches, then return `fn(micro index, j)`
        that runs the forward, the loss and the backward and returns (metrics, teacher gap at j = 0 or None)."""
        num_iters = self.cfg.algorithm.mu
        old: list[torch.Tensor] = []  # filled when the loss needs S_old
        ref: list[torch.Tensor] | None = None
        if self.spec.algorithm.old_on(self.cfg.algorithm.teacher_source) == "learner":  # always, when it has S_old
            check_on_policy(micros, version)
            old = self._targets(policy, micros, num_iters)
        if self.use_ref:
            if reference is None:
                raise RuntimeError(f"algorithm.name={self.spec.algorithm.name} with beta > 0 needs the learner's "
                                   "reference copy")
            ref = self._targets(reference, micros, num_iters)
            # the FSDP root stays gathered after a forward without backward (fully_shard made the net an FSDPModule)
            cast(FSDPModule, reference.net).reshard()

        def run(i: int, j: int) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
            micro, device = micros[i], policy.device
            lp = token_logp(policy, micro, j, self.cfg.algorithm.p_mask_prompt)  # [b, L]
            cmask = micro.completion_mask.to(device)
            extra: dict = {}
            if self.spec.algorithm.needs_old:
                extra.update(old_token_logp=old[i][:, j], ref_token_logp=None if ref is None else ref[i][:, j])
            if self.group_size is not None:
                extra["group_size"] = self.group_size
            loss, metrics = self.spec.fn(token_logp=lp, advantages=micro.advantage.to(device),
                                         completion_mask=cmask, num_rows=num_rows, **self.kwargs, **extra)
            (loss * scale).backward()
            gap = None
            if self.spec.algorithm.needs_old:
                with torch.no_grad():
                    delta = (lp.detach() - old[i][:, j]).abs() * cmask
                    metrics["mean_abs_delta"] = delta.sum() / cmask.sum().clamp_min(1)
                    if j == 0:
                        flat = delta.double().flatten()
                        gap = torch.cat([flat, flat.new_zeros(1)]).amax()  # 0 for an empty micro-batch
            return metrics, gap

        return run
