"""GDSD loss: regress the clamped, length-normalised log-ratio to the scaled advantage (docs/design.md, "Formulas").

Legend of shape comments: B rows, M Monte-Carlo mask draws, L completion length.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


from learner.losses._util import (
    Metrics,
    check_advantages,
    check_gen_len,
    check_rows,
    check_same_shape,
    compute_dtype,
    detached,
    rows_norm,
    zero_like,
)


def gdsd_loss(
    logp: Tensor,
    old_logp: Tensor,
    ref_logp: Tensor | None,
    advantages: Tensor,
    gen_len: int,
    *,
    psi: float,
    beta: float,
    eps: float,
    eps_scope: str = "sequence",
    num_rows: int | None = None,
) -> tuple[Tensor, Metrics]:
    """GDSD (and GDSD-TLC) loss for one inner iteration.

    Exactly the official formula (docs/design.md, "Formulas")::

        Δ    = clamp(S_θ − S_old, log(1−ε), log(1+ε))
        loss = Σ_{b,m} (Δ/L − ψ·A_b)² / B  +  β · Σ_{b,m} ½ (S_θ − S_ref)² / (B · M · L)

    i.e. the length-normalised log-ratio is regressed onto ψA (teacher π_old·exp(ψA), partition function dropped),
    plus the k2 KL estimator to the reference. GDSD-TLC is the same function applied to the 1/t-weighted S
    (``denoise_logprob(..., s_variant="tlc")``); only the registry entry differs.

    ``eps_scope="token"`` (an option, not the official formula; issue 24) clamps the length-normalised log-ratio
    instead: Δ/L = clamp((S_θ − S_old)/L, log(1−ε), log(1+ε)), i.e. the band on the sum is L·[log(1−ε), log(1+ε)],
    the size a per-token clip of ε would allow. The regression target and the KL term are unchanged.

    The clamp is ``torch.clamp``: entries with S_θ − S_old outside [log(1−ε), log(1+ε)] get *zero* gradient from the
    first term (the official ε=4e-4 makes most rows clamped after the first inner step, so ``clamp_frac`` is logged).

    Args:
        logp: S_θ ``[B, M]``, differentiable.
        old_logp: S_old ``[B, M]`` (the teacher; treated as a constant by the caller).
        ref_logp: S_ref ``[B, M]``; may be None when ``beta == 0`` (the term is then skipped entirely).
        advantages: A ``[B]`` (leave-one-out, no std scaling, computed elsewhere).
        gen_len: L, the completion length S is summed over.
        psi: ψ, advantage scale (official 1; GSM8K/MATH 10).
        beta: β, weight of the k2 term (official 1e-3).
        eps: ε in (0, 1), clamp half-width in ratio space (official 4e-4).
        eps_scope: ``"sequence"`` (official: ε bounds S_θ − S_old) or ``"token"`` (ε bounds (S_θ − S_old)/L).
        num_rows: B of the normaliser, default ``logp.shape[0]``. A learner rank holding a shard of the rows passes
            the global row count, so that summing the ranks' losses/gradients gives the full-batch loss/gradient.

    Returns:
        ``(loss, metrics)``: ``loss`` is a 0-dim tensor. ``metrics`` are 0-dim *detached* tensors on the input's
        device (no host sync per call; ``.item()`` them once when logging), computed over this call's rows:
        ``clamp_frac`` (fraction of (row, m) entries where the clamp is active, i.e. S_θ − S_old strictly outside the
        band), ``mean_abs_delta`` (mean |S_θ − S_old| before the clamp), ``k2`` (mean ½(S_θ − S_ref)², present only
        when ``ref_logp`` is given), ``mean_logp`` (mean S_θ), ``loss_reg`` and ``loss_kl`` (the two terms of
        ``loss``, each already normalised as in ``loss``).
    """
    check_rows("logp", logp, 2)
    check_same_shape("old_logp", old_logp, logp, "logp")
    check_same_shape("ref_logp", ref_logp, logp, "logp")
    rows, num_mc = logp.shape
    check_advantages(advantages, rows)
    L = check_gen_len(gen_len)
    n = rows_norm(num_rows, rows)
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    if eps_scope not in ("sequence", "token"):
        raise ValueError(f"eps_scope must be 'sequence' or 'token', got {eps_scope!r}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta != 0 and ref_logp is None:
        raise ValueError("gdsd_loss: beta > 0 needs ref_logp")

    dt = compute_dtype(logp)
    s = logp.to(dt)
    raw = s - old_logp.to(dt)  # [B, M]
    band = L if eps_scope == "token" else 1  # token: a per-token band of ε on the mean, L times it on the sum
    lo, hi = band * math.log1p(-eps), band * math.log1p(eps)
    delta = torch.clamp(raw, lo, hi)  # zero gradient outside [lo, hi]
    target = psi * advantages.to(dt).unsqueeze(1)  # [B, 1], broadcast over the M draws
    loss_reg = (delta / L - target).square().sum() / n

    metrics: Metrics = {}
    if beta != 0:
        if ref_logp is None:
            raise ValueError("gdsd with beta > 0 needs ref_logp (S_ref)")
        k2 = 0.5 * (s - ref_logp.to(dt)).square()  # [B, M]
        loss_kl = beta * k2.sum() / (n * num_mc * L)
        metrics["k2"] = detached(k2.mean())
    else:
        loss_kl = zero_like(s, dt)
        if ref_logp is not None:  # still worth logging; costs no graph
            metrics["k2"] = detached((0.5 * (s - ref_logp.to(dt)).square()).mean())
    loss = loss_reg + loss_kl

    with torch.no_grad():
        metrics["clamp_frac"] = ((raw < lo) | (raw > hi)).to(dt).mean()
        metrics["mean_abs_delta"] = raw.abs().mean()
        metrics["mean_logp"] = s.mean()
    metrics["loss_reg"] = detached(loss_reg)
    metrics["loss_kl"] = detached(loss_kl)
    return loss, metrics
