"""The GDSD-vs-ESPO derivation of docs/results.md ("The mechanism: derivation check"), checked on the real losses and
the real optimizer against formulas written out here:

* at the first inner iteration (S_theta = S_old) both gradients are -c * A_b * dS_b/dtheta with c_GDSD = 2 psi/(B L)
  per mc draw (a SUM over the M draws) and c_ESPO = 1/(B L M) (a MEAN over the draws): ratio 2 psi M;
* the k2 terms: the same form, so relative to the policy term GDSD weighs k2 by beta/(2 psi M), ESPO by beta;
* later iterations: GDSD's clamp zeroes a draw's gradient whenever |Delta| leaves the band, whatever the sign of A;
  PPO's clip only when the ratio moved past the band in the advantage's direction;
* AdamW removes a constant gradient scale, the grad-norm clip (applied before it) does not.
"""
from __future__ import annotations

import math

import pytest
import torch

from common.config import LearnerConfig
from learner.losses import gdsd_loss
from learner.losses.elbo_baselines import espo_loss
from learner.optim import build_optimizer, clip_grad_norm

F64 = torch.float64
B, M, L = 5, 3, 16


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logp = -20.0 - 5.0 * torch.rand(B, M, generator=g, dtype=F64)  # [B, M]
    ref = logp + 0.3 * torch.randn(B, M, generator=g, dtype=F64)
    adv = torch.randn(B, generator=g, dtype=F64)
    return logp, ref, adv


def _grad(fn, logp: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    x = logp.clone().requires_grad_(True)
    loss, _ = fn(x, *args, **kwargs)
    loss.backward()
    return x.grad


@pytest.mark.parametrize("psi", [1.0, 10.0])
def test_first_iteration_gradients_differ_by_two_psi_m(psi):
    logp, _, adv = _batch(0)
    g_gdsd = _grad(gdsd_loss, logp, logp.clone(), None, adv, L, psi=psi, beta=0.0, eps=4e-4)  # [B, M]
    g_espo = _grad(espo_loss, logp, logp.clone(), None, adv, L, beta=0.0, clip_eps=0.2)
    expected_gdsd = (-2.0 * psi / (B * L) * adv).unsqueeze(1).expand(B, M)  # d loss / d S_bm
    expected_espo = (-1.0 / (B * L * M) * adv).unsqueeze(1).expand(B, M)
    torch.testing.assert_close(g_gdsd, expected_gdsd)
    torch.testing.assert_close(g_espo, expected_espo)
    torch.testing.assert_close(g_gdsd, 2 * psi * M * g_espo)


def test_k2_weight_relative_to_the_policy_term():
    logp, ref, adv = _batch(1)
    beta = 1e-3
    # the k2 gradient alone: the policy terms vanish with A = 0 at S = S_old
    zero = torch.zeros_like(adv)
    k2_gdsd = _grad(gdsd_loss, logp, logp.clone(), ref, zero, L, psi=1.0, beta=beta, eps=4e-4)
    k2_espo = _grad(espo_loss, logp, logp.clone(), ref, zero, L, beta=beta, clip_eps=0.2)
    torch.testing.assert_close(k2_gdsd, beta * (logp - ref) / (B * M * L))
    # ESPO's k2 acts on the mean draw: d/dS_bm of 1/2 (mean_m S - mean_m S_ref)^2 = (mean difference) / M
    torch.testing.assert_close(k2_espo, (beta * (logp - ref).mean(1, keepdim=True) / (B * L * M)).expand(B, M))


def test_clamp_is_symmetric_and_ignores_the_advantage_sign_ppo_clip_is_not():
    eps_g, eps_p = 4e-4, 0.2
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=F64)
    old = torch.full((4, 1), -30.0, dtype=F64)
    # GDSD: moved up by 1e-3 (outside +-4e-4) in rows 0,1, down by 1e-3 in rows 2,3: all four draws clamped
    moved = old + torch.tensor([[1e-3], [1e-3], [-1e-3], [-1e-3]], dtype=F64)
    g = _grad(gdsd_loss, moved, old, None, adv, L, psi=1.0, beta=0.0, eps=eps_g)
    assert torch.all(g == 0)
    # inside the band the gradient is the regression residual 2 (Delta/L - psi A)/(B L), ~ the first iteration's
    inside = old + torch.tensor([[1e-4], [-1e-4], [3e-4], [-3e-4]], dtype=F64)
    g = _grad(gdsd_loss, inside, old, None, adv, L, psi=1.0, beta=0.0, eps=eps_g)
    delta = (inside - old).squeeze(1)
    torch.testing.assert_close(g.squeeze(1), 2 * (delta / L - adv) / (4 * L))
    # PPO: ratio exp(dS/L) beyond 1 + 0.2 (up) or below 0.8 (down), per token
    up, down = L * math.log(1.3), L * math.log(0.7)
    moved = old + torch.tensor([[up], [up], [down], [down]], dtype=F64)
    g = _grad(espo_loss, moved, old, None, adv, L, beta=0.0, clip_eps=eps_p).squeeze(1)
    # row 0 (A>0, moved up) and row 3 (A<0, moved down) are clipped: zero; rows 1 and 2 moved against their advantage
    # and keep -A rho / (B L)
    rho = torch.exp((moved - old).squeeze(1) / L)
    expected = torch.where(torch.tensor([False, True, True, False]), -adv * rho / (4 * L), torch.zeros(4, dtype=F64))
    torch.testing.assert_close(g, expected)


def _adam_trajectory(scale: float, grad_clip: float, steps: int = 6) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    w = torch.nn.Parameter(torch.randn(8, generator=gen))
    grads = [torch.randn(8, generator=gen) for _ in range(steps)]
    opt, sched = build_optimizer([w], LearnerConfig(lr=1e-2, grad_clip=grad_clip))
    for g in grads:
        w.grad = scale * g
        clip_grad_norm([w], grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return w.detach().clone()


def test_adam_removes_a_constant_scale_but_not_through_the_grad_clip():
    # no effective clip: the 2 psi factor is invisible to AdamW (up to its eps = 1e-8)
    torch.testing.assert_close(_adam_trajectory(1.0, 1e9), _adam_trajectory(2.0, 1e9), rtol=1e-5, atol=1e-6)
    # an active clip rescales each step by max_norm/||g||, which varies between steps: trajectories differ
    # (scale 1: every ||g|| ~ 2.8 is clipped to 0.5; scale 0.1: ||g|| ~ 0.28, never clipped)
    a, b = _adam_trajectory(1.0, 0.5), _adam_trajectory(0.1, 0.5)
    assert (a - b).abs().max() > 1e-3
