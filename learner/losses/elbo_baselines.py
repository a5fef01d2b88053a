"""Sequence-level ELBO baselines: ESPO (ratio of ELBOs, PPO-clip) and SPG (sandwiched ELBO/EUBO policy gradient).

Legend of shape comments: B rows, M Monte-Carlo mask draws, L completion length. All S values are at "sum scale"
(a sum over the L completion positions, like ``denoise_logprob``), never per-token means.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from common.algorithms import ALGORITHMS

from learner.losses._util import (
    Metrics,
    check_advantages,
    check_gen_len,
    check_rows,
    check_same_shape,
    compute_dtype,
    detached,
    ppo_clip_objective,
    rows_norm,
    zero_like,
)

# The official settings of each loss (ESPO: github.com/ML-GSAI/ESPO recipes/train.yaml; SPG w/ Mixture:
# github.com/facebookresearch/SPG slurm_scripts/spg_mix) are the registry's `official` (common/algorithms.py).


def espo_loss(
    logp: Tensor,
    old_logp: Tensor | None,
    ref_logp: Tensor | None,
    advantages: Tensor,
    gen_len: int,
    *,
    beta: float,
    clip_eps: float,
    clip_eps_high: float | None = None,
    num_rows: int | None = None,
) -> tuple[Tensor, Metrics]:
    """ESPO: sequence-level PPO-clip on the ELBO ratio, plus β·k2 to the reference.

    Ou et al., "Principled RL for Diffusion LLMs Emerges from a Sequence-Level Perspective", arXiv:2512.03759
    (ICLR 2026), Sec. 2/3 of the paper's method ("sequence-level importance ratio with per-token normalization",
    "k2 KL estimator"); implemented as in the official ``ESPOTrainer.compute_loss``::

        S      = mean_m S[:, m]                      (the official code averages the MC ELBOs before the ratio)
        ρ      = exp((S_θ − S_old) / L)
        loss   = −Σ_b min(ρ_b A_b, clip(ρ_b, 1−ε_lo, 1+ε_hi) A_b) / B  +  β · Σ_b ½ (S_θ − S_ref)² / (B · L)

    S is the ELBO: in this project ``denoise_logprob(..., s_variant="tlc")``, which is the same coupled, 1/t-weighted
    estimator as ESPO's ``_get_elbo(reduce_var=True)``.

    Args:
        logp, old_logp, ref_logp: S_θ, S_old, S_ref ``[B, M]``. ``old_logp=None`` means on-policy (S_old = S_θ
            detached, as the official code does for μ=1); ``ref_logp`` may be None when ``beta == 0``.
        advantages: ``[B]`` sequence-level advantages.
        gen_len: L.
        beta: k2 weight (official recipe 0.01). clip_eps: ε_lo (official 0.2); clip_eps_high: ε_hi (default ε_lo).
        num_rows: global row count for sharded ranks (default: local rows).

    Returns ``(loss, metrics)``; metrics are 0-dim detached tensors: ``clip_frac`` (rows where the clip decides),
    ``mean_ratio``, ``mean_abs_delta`` (|S_θ − S_old|), ``k2`` (mean ½(S_θ − S_ref)², when ref is given),
    ``mean_logp``, ``loss_pg``, ``loss_kl``.
    """
    check_rows("logp", logp, 2)
    check_same_shape("old_logp", old_logp, logp, "logp")
    check_same_shape("ref_logp", ref_logp, logp, "logp")
    rows = logp.shape[0]
    check_advantages(advantages, rows)
    L = check_gen_len(gen_len)
    n = rows_norm(num_rows, rows)
    if beta != 0 and ref_logp is None:
        raise ValueError("espo_loss: beta > 0 needs ref_logp")
    eps_hi = clip_eps if clip_eps_high is None else clip_eps_high

    dt = compute_dtype(logp)
    s = logp.to(dt).mean(dim=1)  # [B]
    s_old = s.detach() if old_logp is None else old_logp.to(dt).mean(dim=1)
    adv = advantages.to(dt)
    log_ratio = (s - s_old) / L
    ratio = torch.exp(log_ratio)
    per_row, clipped = ppo_clip_objective(ratio, adv, clip_eps, eps_hi)
    loss_pg = per_row.sum() / n

    metrics: Metrics = {}
    if ref_logp is not None:
        k2 = 0.5 * (s - ref_logp.to(dt).mean(dim=1)).square()  # [B]
        metrics["k2"] = detached(k2.mean())
        loss_kl = beta * k2.sum() / (n * L) if beta != 0 else zero_like(s, dt)
    else:
        loss_kl = zero_like(s, dt)
    loss = loss_pg + loss_kl
    with torch.no_grad():
        metrics["clip_frac"] = clipped.to(dt).mean()
        metrics["mean_ratio"] = ratio.mean()
        metrics["mean_abs_delta"] = (s - s_old).abs().mean()
        metrics["mean_logp"] = s.mean()
    metrics["loss_pg"] = detached(loss_pg)
    metrics["loss_kl"] = detached(loss_kl)
    return loss, metrics


def _check_draws(token_logp: Tensor, masked: Tensor) -> None:
    check_rows("token_logp", token_logp, 3)
    if masked.shape != token_logp.shape or masked.dtype != torch.bool:
        raise ValueError(f"masked must be bool with shape {tuple(token_logp.shape)} like token_logp, got "
                         f"{masked.dtype} {tuple(masked.shape)}")


def spg_elbo_draws(token_logp: Tensor, masked: Tensor) -> Tensor:
    """SPG's ELBO per draw, at sum scale: ``L · Σ_{n∈M_d} log p_{d,n} / |M_d|`` ``[B, D]`` (0 for an empty draw).

    The official ``SPGTrainer._get_per_seq_logps`` takes, per draw d, the mean log-prob over the masked completion
    tokens (a zero denominator is clamped, so an empty draw gives 0) and ``compute_loss`` multiplies the row's bound
    by its completion length; with every row scored over all L positions that is ``L · mean``, i.e.
    ``Σ_{n∈M_d} log p / t_d`` with the empirical ``t_d = |M_d| / L``. (This project's ``tlc`` S uses
    ``t = |M| / (L+1)``: on the same forwards it is (L+1)/L times the mean of these draws.)

    Args:
        token_logp: ``[B, D, L]`` log p(x0^n | x_t^(d)), read where ``masked``.
        masked: bool ``[B, D, L]``, the completion positions draw d masks.
    """
    _check_draws(token_logp, masked)
    L = token_logp.shape[2]
    dt = compute_dtype(token_logp)
    n = masked.sum(dim=2)  # [B, D]
    total = torch.where(masked, token_logp.to(dt), 0.0).sum(dim=2)  # [B, D]
    return L * total / n.clamp_min(1).to(dt)


def spg_eubo(token_logp: Tensor, masked: Tensor, *, beta: float) -> Tensor:
    """SPG's evidence upper bound (EUBO) per row, at sum scale, ``[B]``: the Rényi-type bound of Wang et al.,
    arXiv:2510.09541, Sec. 3, as the official ``SPGTrainer._get_per_seq_logps`` (``logp_estimation`` ``eubo`` /
    ``mix``) estimates it from D mask draws::

        t_d   = |M_d| / L                                          (empirical mask fraction of draw d)
        a_n   = (1/D) Σ_d 1[n ∈ M_d] · p_{d,n}^β / t_d               (mean over all D draws, unmasked ones add 0)
        K     = {n : a_n > 0}                                       (positions some draw masks)
        EUBO  = L · (1/|K|) Σ_{n∈K} log a_n / β                     (0 when K is empty)

    The official code returns the per-token mean ``Σ_K log a_n / |K| / β`` and ``compute_loss`` multiplies it by the
    completion length (here L: every row is scored over all L positions). ``a_n`` is computed in log space
    (logsumexp of ``β log p − log t_d``): the same value wherever the official float32 ``p^β`` does not underflow;
    where it would (log p < −87/β), the official code drops the position from K, this keeps its exact term.

    Args:
        token_logp: ``[B, D, L]`` log p(x0^n | x_t^(d)), read where ``masked`` (differentiable).
        masked: bool ``[B, D, L]``, the completion positions draw d masks.
        beta: the EUBO's β > 0 (official: 1.0 Sudoku, 1.5 Countdown / GSM8K / MATH; 2.0 in the EUBO-only
            Countdown run).
    """
    _check_draws(token_logp, masked)
    if not beta > 0:
        raise ValueError(f"eubo beta must be positive, got {beta}")
    _, D, L = token_logp.shape
    dt = compute_dtype(token_logp)
    n = masked.sum(dim=2, keepdim=True)  # [B, D, 1]
    log_t = torch.where(n > 0, torch.log(n.to(dt) / L), 0.0)  # an empty draw masks nothing: its t is never read
    terms = torch.where(masked, beta * token_logp.to(dt) - log_t, float("-inf"))  # [B, D, L]
    covered = masked.any(dim=1)  # [B, L]: K
    # a position no draw masks would be a logsumexp of -inf only (NaN gradient): give it finite terms, then drop it
    terms = torch.where(covered.unsqueeze(1), terms, 0.0)
    log_a = torch.logsumexp(terms, dim=1) - math.log(D)  # [B, L]
    per_token = torch.where(covered, log_a, 0.0).sum(dim=1) / covered.sum(dim=1).clamp_min(1).to(dt)
    return L * per_token / beta


def spg_loss(
    elbo: Tensor,
    eubo: Tensor | None,
    advantages: Tensor,
    gen_len: int,
    *,
    mix_weight: float = float(ALGORITHMS["spg"].official["mix_weight"]),
    num_rows: int | None = None,
) -> tuple[Tensor, Metrics]:
    """SPG (Sandwiched Policy Gradient), Wang et al., arXiv:2510.09541, Sec. 3 "Sandwiched Policy Gradient with
    Evidence Bounds": rows with positive advantage *maximise a lower bound* (ELBO) of log π(x), rows with
    non-positive advantage *minimise an upper bound* (EUBO), so that the surrogate J = Σ A·bound is a lower bound of
    the true policy objective Σ A·log π from both sides. The "w/ Mixture" variant uses ω·EUBO + (1−ω)·ELBO for the
    negative rows (ω = ``mix_weight``; ω=1 is "SPG w/ EUBO", ω=0 degenerates to the ELBO baseline).

    Implemented as the official ``SPGTrainer.compute_loss`` (github.com/facebookresearch/SPG, spg/spg_trainer.py),
    which is an on-policy REINFORCE-style loss without ratio, clip or KL term (the official code raises for β ≠ 0)::

        bound_b = ELBO_b                                if A_b > 0
                  ω·EUBO_b + (1−ω)·ELBO_b               otherwise
        loss    = −Σ_b A_b · bound_b / Σ_b len_b

    Assumptions (equation numbers of the paper could not be checked from here; the form follows the released code):
      * The official per-row bounds are per-masked-token means multiplied back by the row's completion length, i.e.
        sum-scale bounds, and the normaliser is Σ_b len_b. Under this project's fixed-L contract (every row is scored
        over all L positions, EOS padding included) Σ_b len_b = B·L, so ``loss = −Σ_b A_b·bound_b / (B·L)``.
      * ``elbo`` holds sum-scale ELBO draws (the learner passes ``spg_elbo_draws``); ``eubo`` is ``spg_eubo`` of
        the same draws.
      * Rows with A = 0 contribute nothing either way (the official mask is ``A > 0``).

    Args:
        elbo: ``[B, D]`` ELBO draws (averaged over D, as the official code averages its ``num_t`` draws).
        eubo: ``[B]`` EUBO per row; may be None only when ``mix_weight == 0``.
        advantages: ``[B]``. gen_len: L. mix_weight: ω in [0, 1] (official mixture runs: 0.5).
        num_rows: global row count for sharded ranks (default: local rows).

    Returns ``(loss, metrics)``; metrics (0-dim, detached): ``pos_frac`` (rows using the lower bound),
    ``mean_elbo``, ``mean_eubo`` (when given), ``loss_pg``.
    """
    check_rows("elbo", elbo, 2)
    rows = elbo.shape[0]
    check_advantages(advantages, rows)
    L = check_gen_len(gen_len)
    n = rows_norm(num_rows, rows)
    if not 0.0 <= mix_weight <= 1.0:
        raise ValueError(f"mix_weight must be in [0, 1], got {mix_weight}")
    if eubo is None and mix_weight != 0:
        raise ValueError("spg_loss: mix_weight > 0 needs eubo")
    if eubo is not None and eubo.shape != (rows,):
        raise ValueError(f"eubo must have shape ({rows},), got {tuple(eubo.shape)}")

    dt = compute_dtype(elbo)
    lower = elbo.to(dt).mean(dim=1)  # [B]
    adv = advantages.to(dt)
    upper = lower if eubo is None else mix_weight * eubo.to(dt) + (1.0 - mix_weight) * lower
    pos = adv > 0
    bound = torch.where(pos, lower, upper)
    loss = -(adv * bound).sum() / (n * L)

    metrics: Metrics = {}
    with torch.no_grad():
        metrics["pos_frac"] = pos.to(dt).mean()
        metrics["mean_elbo"] = lower.mean()
        if eubo is not None:
            metrics["mean_eubo"] = eubo.to(dt).mean()
    metrics["loss_pg"] = detached(loss)
    return loss, metrics
