"""Token-level one-step baselines: diffu-GRPO (d1) and wd1, on per-token log-probs of the one-step estimate.

The one-step estimate (d1): the whole completion is masked, each prompt token is masked with probability
``p_mask_prompt`` (``diffu_grpo_prompt_mask`` draws which), one forward gives log p(x^n | masked input) for every
completion position n. Those ``[B, L]`` tensors are computed elsewhere; these functions only combine them.
Legend: B rows, L completion length, P prompt length.
"""
from __future__ import annotations

import torch
from torch import Tensor

from common.algorithms import ALGORITHMS
from learner.losses._util import (
    Metrics,
    check_advantages,
    check_rows,
    check_same_shape,
    compute_dtype,
    detached,
    ppo_clip_objective,
    rows_norm,
    zero_like,
)

# The official settings (d1: DiffuGRPOConfig as vendored by the SPG repo, prompt masking p = 0.15 from the paper;
# wd1: github.com/xiaohangt/wd1 rev_grpo_trainer.py, softmax(A) with unit temperature) are the registry's `official`
# (common/algorithms.py).


def diffu_grpo_prompt_mask(
    prompt_len_mask: Tensor, *, p_mask_prompt: float = 0.15, generator: torch.Generator
) -> Tensor:
    """Which prompt tokens the d1 one-step estimate masks: each real prompt token independently w.p. ``p_mask_prompt``.

    Args:
        prompt_len_mask: bool ``[B, P]``, True on real prompt tokens (False on padding, which is never masked).
        p_mask_prompt: masking probability (d1: 0.15).
        generator: the only randomness source (never the global RNG). The uniforms are drawn on the generator's
            device and moved to ``prompt_len_mask``'s device, so a CPU generator gives the same mask on CPU and GPU.

    Returns bool ``[B, P]``: True where the prompt token is replaced by the mask token.
    """
    if prompt_len_mask.dtype != torch.bool or prompt_len_mask.dim() != 2:
        raise ValueError(f"prompt_len_mask must be a 2-D bool tensor, got {prompt_len_mask.dtype} "
                         f"{tuple(prompt_len_mask.shape)}")
    if not 0.0 <= p_mask_prompt <= 1.0:
        raise ValueError(f"p_mask_prompt must be in [0, 1], got {p_mask_prompt}")
    u = torch.rand(prompt_len_mask.shape, generator=generator, device=generator.device, dtype=torch.float64)
    return (u.to(prompt_len_mask.device) < p_mask_prompt) & prompt_len_mask


def diffu_grpo_loss(
    token_logp: Tensor,
    old_token_logp: Tensor | None,
    ref_token_logp: Tensor | None,
    advantages: Tensor,
    completion_mask: Tensor,
    *,
    beta: float,
    clip_eps: float,
    num_rows: int | None = None,
) -> tuple[Tensor, Metrics]:
    """diffu-GRPO, d1 (Zhao et al., arXiv:2504.12216, Sec. 3, "diffu-GRPO"; equation number not checked from here):
    GRPO's per-token PPO-clip with the sequence advantage on the mean-field one-step per-token estimates (whole
    completion masked, prompt masked w.p. 0.15), plus β·k3 KL per token::

        ρ_bn   = exp(logp_bn − old_bn)
        ℓ_bn   = −min(ρ_bn A_b, clip(ρ_bn, 1−ε, 1+ε) A_b) + β·(exp(ref_bn − logp_bn) − (ref_bn − logp_bn) − 1)
        loss   = Σ_b [ Σ_n ℓ_bn·mask_bn / Σ_n mask_bn ] / B

    (per-row mean over completion tokens, then mean over rows — TRL GRPO's aggregation that d1 builds on).

    Args:
        token_logp: ``[B, L]`` differentiable. old_token_logp: ``[B, L]`` or None for on-policy (= token_logp
            detached, as d1 does for μ=1). ref_token_logp: ``[B, L]``, may be None when ``beta == 0``.
        advantages: ``[B]``. completion_mask: ``[B, L]`` (bool or 0/1), the completion tokens that count.
        beta: k3 weight (d1 official 0.04). clip_eps: ε (d1 official 0.2).
        num_rows: global row count for sharded ranks (default: local rows).

    Returns ``(loss, metrics)``; metrics (0-dim, detached, over masked tokens): ``clip_frac``, ``mean_ratio``,
    ``kl`` (mean k3, when ref is given), ``mean_logp`` (mean token log-prob), ``loss_pg``, ``loss_kl``.
    """
    check_rows("token_logp", token_logp, 2)
    for name, t in (("old_token_logp", old_token_logp), ("ref_token_logp", ref_token_logp),
                    ("completion_mask", completion_mask)):
        check_same_shape(name, t, token_logp, "token_logp")
    rows = token_logp.shape[0]
    check_advantages(advantages, rows)
    n = rows_norm(num_rows, rows)
    if beta != 0 and ref_token_logp is None:
        raise ValueError("diffu_grpo_loss: beta > 0 needs ref_token_logp")

    dt = compute_dtype(token_logp)
    lp = token_logp.to(dt)
    old = lp.detach() if old_token_logp is None else old_token_logp.to(dt)
    mask = completion_mask.to(dt)
    tokens = mask.sum(dim=1).clamp_min(1.0)  # [B]; an empty row contributes 0, not NaN
    ratio = torch.exp(lp - old)
    pg_tok, clipped = ppo_clip_objective(ratio, advantages.to(dt).unsqueeze(1), clip_eps, clip_eps)
    loss_pg = ((pg_tok * mask).sum(dim=1) / tokens).sum() / n

    metrics: Metrics = {}
    total = mask.sum().clamp_min(1.0)
    if ref_token_logp is not None:
        d = ref_token_logp.to(dt) - lp
        k3 = torch.exp(d) - d - 1.0  # [B, L], GRPO's k3 estimator of KL(π_θ || π_ref)
        metrics["kl"] = detached((k3 * mask).sum() / total)
        loss_kl = beta * ((k3 * mask).sum(dim=1) / tokens).sum() / n if beta != 0 else zero_like(lp, dt)
    else:
        loss_kl = zero_like(lp, dt)
    loss = loss_pg + loss_kl
    with torch.no_grad():
        metrics["clip_frac"] = (clipped.to(dt) * mask).sum() / total
        metrics["mean_ratio"] = (ratio * mask).sum() / total
        metrics["mean_logp"] = (lp * mask).sum() / total
    metrics["loss_pg"] = detached(loss_pg)
    metrics["loss_kl"] = detached(loss_kl)
    return loss, metrics


def wd1_loss(
    token_logp: Tensor,
    advantages: Tensor,
    completion_mask: Tensor,
    *,
    group_size: int | None = None,
    psi: float = float(ALGORITHMS["wd1"].official["psi"]),
    num_rows: int | None = None,
) -> tuple[Tensor, Metrics]:
    """wd1 (Tang et al., "wd1: Weighted Policy Optimization for Reasoning in Diffusion Language Models",
    arXiv:2507.08838): ratio-free weighted log-likelihood. Positive weights w⁺ = softmax(ψA) increase the likelihood
    of good completions, negative weights w⁻ = softmax(−ψA) decrease that of bad ones (negative-sample unlearning)::

        S_b    = Σ_n logp_bn · mask_bn                         (one-step estimate, as the official trainer)
        loss_g = −Σ_{b∈g} w⁺_b S_b + Σ_{b∈g} w⁻_b S_b           (softmaxes taken within group g)
        loss   = Σ_g loss_g / (B / G)                           (mean over groups)

    Assumptions (paper equation numbers could not be checked from here; the form is the released
    ``RevDiffuGRPOTrainer.compute_loss``, github.com/xiaohangt/wd1, wd1/trainers/rev_grpo_trainer.py):
      * both softmaxes run over *all* rows of a group (not over the positive / negative subsets separately); the
        official code takes them over its per-device batch, which there is one prompt's group. Here groups are
        ``group_size`` consecutive rows (default: all given rows form one group), so with one group and the default
        ``num_rows`` this is exactly the official sum.
      * ψ is a temperature on the advantages (official code: 1); no reference/KL term, no old policy.

    Args:
        token_logp: ``[B, L]`` differentiable one-step per-token log-probs. advantages: ``[B]``.
        completion_mask: ``[B, L]`` (bool or 0/1). group_size: G (rows per prompt); B must be a multiple of it.
        psi: softmax temperature on A. num_rows: global row count for sharded ranks (groups must not be split).

    Returns ``(loss, metrics)``; metrics (0-dim, detached): ``mean_seq_logp`` (mean S_b), ``w_pos_max`` (largest w⁺,
    i.e. how peaked the positive weights are), ``loss_pos`` and ``loss_neg`` (the two parts of ``loss``).
    """
    check_rows("token_logp", token_logp, 2)
    check_same_shape("completion_mask", completion_mask, token_logp, "token_logp")
    rows = token_logp.shape[0]
    check_advantages(advantages, rows)
    n = rows_norm(num_rows, rows)
    g = rows if group_size is None else int(group_size)
    if g <= 0 or rows % g:
        raise ValueError(f"group_size ({group_size}) must divide the number of rows ({rows})")

    dt = compute_dtype(token_logp)
    seq = (token_logp.to(dt) * completion_mask.to(dt)).sum(dim=1).view(-1, g)  # [B/G, G]
    a = (psi * advantages.to(dt)).view(-1, g)
    w_pos = torch.softmax(a, dim=1)
    w_neg = torch.softmax(-a, dim=1)
    num_groups = n / g
    loss_pos = -(w_pos * seq).sum() / num_groups
    loss_neg = (w_neg * seq).sum() / num_groups
    loss = loss_pos + loss_neg

    metrics: Metrics = {}
    with torch.no_grad():
        metrics["mean_seq_logp"] = seq.mean()
        metrics["w_pos_max"] = w_pos.max()
    metrics["loss_pos"] = detached(loss_pos)
    metrics["loss_neg"] = detached(loss_neg)
    return loss, metrics
