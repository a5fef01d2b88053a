"""GDSD loss and the loss registry: hand-computed values, gradients, the clamp, shard normalisation, and a property
test on a one-position categorical "denoiser" (exact expectation instead of samples)."""
from __future__ import annotations

import inspect
import math
from types import SimpleNamespace

import pytest
import torch

from learner.losses import LOSSES, gdsd_loss, get_loss

F64 = torch.float64

# A tiny batch: B=2 rows, M=2 draws, L=4. Entries (0,1) and (1,1) lie outside the ε=0.1 band, (0,0) and (1,0) inside.
LOGP = [[-10.0, -12.0], [-8.0, -9.5]]
OLD = [[-10.05, -11.5], [-8.02, -9.3]]
REF = [[-10.5, -12.0], [-7.0, -9.0]]
ADV = [1.0, -2.0]
L, PSI, BETA, EPS = 4, 0.5, 0.1, 0.1


def _t(x: list, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(x, dtype=F64, requires_grad=requires_grad)


def _reference_gdsd(logp, old, ref, adv, gen_len, psi, beta, eps) -> tuple[float, float]:
    """The docs/design.md formula with plain floats: (regression term, k2 term)."""
    lo, hi = math.log(1 - eps), math.log(1 + eps)
    rows, mc = len(logp), len(logp[0])
    reg = kl = 0.0
    for b in range(rows):
        for m in range(mc):
            delta = min(max(logp[b][m] - old[b][m], lo), hi)
            reg += (delta / gen_len - psi * adv[b]) ** 2
            kl += 0.5 * (logp[b][m] - ref[b][m]) ** 2
    return reg / rows, beta * kl / (rows * mc * gen_len)


def test_gdsd_matches_hand_computed_formula() -> None:
    loss, metrics = gdsd_loss(_t(LOGP), _t(OLD), _t(REF), _t(ADV), L, psi=PSI, beta=BETA, eps=EPS)
    reg, kl = _reference_gdsd(LOGP, OLD, REF, ADV, L, PSI, BETA, EPS)
    assert loss.item() == pytest.approx(reg + kl, rel=1e-12)
    assert metrics["loss_reg"].item() == pytest.approx(reg, rel=1e-12)
    assert metrics["loss_kl"].item() == pytest.approx(kl, rel=1e-12)
    assert metrics["clamp_frac"].item() == 0.5  # two of four entries outside [log 0.9, log 1.1]
    raw = [LOGP[b][m] - OLD[b][m] for b in range(2) for m in range(2)]
    assert metrics["mean_abs_delta"].item() == pytest.approx(sum(map(abs, raw)) / 4, rel=1e-12)
    k2 = [0.5 * (LOGP[b][m] - REF[b][m]) ** 2 for b in range(2) for m in range(2)]
    assert metrics["k2"].item() == pytest.approx(sum(k2) / 4, rel=1e-12)
    assert metrics["mean_logp"].item() == pytest.approx(-39.5 / 4, rel=1e-12)
    # Numbers written out once, so a change of the reference helper cannot hide a change of the formula.
    lo = math.log(0.9)
    by_hand = ((0.05 / 4 - 0.5) ** 2 + (lo / 4 - 0.5) ** 2 + (0.02 / 4 + 1) ** 2 + (lo / 4 + 1) ** 2) / 2
    assert reg == pytest.approx(by_hand, rel=1e-12)


def test_gdsd_metrics_are_detached_scalars() -> None:
    _, metrics = gdsd_loss(_t(LOGP, True), _t(OLD), _t(REF), _t(ADV), L, psi=PSI, beta=BETA, eps=EPS)
    assert set(metrics) == {"clamp_frac", "mean_abs_delta", "k2", "mean_logp", "loss_reg", "loss_kl"}
    for name, value in metrics.items():
        assert isinstance(value, torch.Tensor) and value.dim() == 0 and not value.requires_grad, name


def test_gdsd_clamped_entries_get_no_gradient_from_the_regression_term() -> None:
    logp = _t(LOGP, True)
    gdsd_loss(logp, _t(OLD), None, _t(ADV), L, psi=PSI, beta=0.0, eps=EPS)[0].backward()
    grad = logp.grad.tolist()
    assert grad[0][1] == 0.0 and grad[1][1] == 0.0  # clamped
    for b, m in ((0, 0), (1, 0)):  # inside the band: d/dS (Δ/L − ψA)²/B = 2(Δ/L − ψA)/(L·B)
        delta = LOGP[b][m] - OLD[b][m]
        assert grad[b][m] == pytest.approx(2 * (delta / L - PSI * ADV[b]) / (L * 2), rel=1e-10)
    # With β > 0 a clamped entry still feels the k2 term: β (S − S_ref) / (B M L).
    logp = _t(LOGP, True)
    gdsd_loss(logp, _t(OLD), _t(REF), _t(ADV), L, psi=PSI, beta=BETA, eps=EPS)[0].backward()
    assert logp.grad[1, 1].item() == pytest.approx(BETA * (LOGP[1][1] - REF[1][1]) / (2 * 2 * L), rel=1e-10)


def test_gdsd_clamp_frac_counts_both_sides_and_not_the_boundary() -> None:
    eps = 0.2
    lo, hi = math.log1p(-eps), math.log1p(eps)
    # Exactly on the boundary the clamp is the identity (not "active"); 4 of 8 entries are strictly outside.
    raw = [[lo - 1e-3, lo + 1e-3, lo, hi], [hi + 1e-3, 5.0, -5.0, 0.01]]
    logp = torch.zeros(2, 4, dtype=F64)
    _, metrics = gdsd_loss(logp, -_t(raw), None, torch.zeros(2, dtype=F64), 8, psi=1.0, beta=0.0, eps=eps)
    assert metrics["clamp_frac"].item() == pytest.approx(4 / 8)


def test_gdsd_beta_zero_skips_reference() -> None:
    loss, metrics = gdsd_loss(_t(LOGP), _t(OLD), None, _t(ADV), L, psi=PSI, beta=0.0, eps=EPS)
    assert "k2" not in metrics and metrics["loss_kl"].item() == 0.0
    assert loss.item() == pytest.approx(_reference_gdsd(LOGP, OLD, REF, ADV, L, PSI, 0.0, EPS)[0], rel=1e-12)
    with pytest.raises(ValueError, match="ref_logp"):
        gdsd_loss(_t(LOGP), _t(OLD), None, _t(ADV), L, psi=PSI, beta=BETA, eps=EPS)


def test_gdsd_rejects_bad_shapes_and_eps() -> None:
    with pytest.raises(ValueError, match="advantages"):
        gdsd_loss(_t(LOGP), _t(OLD), None, _t([1.0]), L, psi=1.0, beta=0.0, eps=0.1)
    with pytest.raises(ValueError, match="old_logp"):
        gdsd_loss(_t(LOGP), _t(OLD)[:, :1], None, _t(ADV), L, psi=1.0, beta=0.0, eps=0.1)
    with pytest.raises(ValueError, match="eps"):
        gdsd_loss(_t(LOGP), _t(OLD), None, _t(ADV), L, psi=1.0, beta=0.0, eps=1.0)


def _reference_token_scope(logp, old, adv, gen_len, psi, eps) -> tuple[float, float, list[float]]:
    """eps_scope=token, written the other way round: the per-token mean log-ratio r = (S_θ − S_old)/L is clipped to
    [log(1−ε), log(1+ε)] and regressed onto ψA. Returns (regression term, clamp fraction, d reg / d S_θ)."""
    lo, hi = math.log(1 - eps), math.log(1 + eps)
    rows, mc = len(logp), len(logp[0])
    reg, clamped, grads = 0.0, 0, []
    for b in range(rows):
        for m in range(mc):
            r = (logp[b][m] - old[b][m]) / gen_len
            inside = lo <= r <= hi
            clamped += not inside
            reg += (min(max(r, lo), hi) - psi * adv[b]) ** 2
            grads.append(2 * (r - psi * adv[b]) / gen_len / rows if inside else 0.0)
    return reg / rows, clamped / (rows * mc), grads


@pytest.mark.parametrize("gen_len, eps", [(4, 0.1), (4, 0.01), (32, 4e-4), (1, 0.1)])
def test_gdsd_token_scope_matches_a_per_token_clip(gen_len, eps) -> None:
    logp = _t(LOGP, True)
    loss, metrics = gdsd_loss(logp, _t(OLD), None, _t(ADV), gen_len, psi=PSI, beta=0.0, eps=eps, eps_scope="token")
    reg, frac, grads = _reference_token_scope(LOGP, OLD, ADV, gen_len, PSI, eps)
    assert loss.item() == pytest.approx(reg, rel=1e-12)
    assert metrics["clamp_frac"].item() == pytest.approx(frac)
    loss.backward()
    assert logp.grad.flatten().tolist() == pytest.approx(grads, rel=1e-12, abs=1e-15)
    if gen_len == 1:  # one token: the two scopes are the same formula
        same, _ = gdsd_loss(_t(LOGP), _t(OLD), None, _t(ADV), 1, psi=PSI, beta=0.0, eps=eps)
        assert same.item() == loss.item()


def test_gdsd_token_scope_opens_the_band_by_the_length() -> None:
    # |S_θ − S_old| = 0.05 over L = 4 tokens: outside a sequence band of ε = 0.02, inside the token band (0.0125/token)
    logp, old = _t([[-10.05]]), _t([[-10.0]])
    kw = dict(psi=1.0, beta=0.0, eps=0.02)
    _, seq = gdsd_loss(logp, old, None, _t([1.0]), 4, **kw)
    _, tok = gdsd_loss(logp, old, None, _t([1.0]), 4, eps_scope="token", **kw)
    assert seq["clamp_frac"].item() == 1.0 and tok["clamp_frac"].item() == 0.0
    with pytest.raises(ValueError, match="eps_scope"):
        gdsd_loss(logp, old, None, _t([1.0]), 4, eps_scope="row", **kw)


def test_gdsd_gradcheck_float64() -> None:
    g = torch.Generator().manual_seed(1)
    rows, mc, gen_len, eps = 4, 3, 5, 0.1
    old = -10 - torch.rand(rows, mc, generator=g, dtype=F64)
    # Log-ratios well inside (|x| < 0.05) or well outside (|x| > 0.3) the band [−0.105, 0.095]: no kink nearby.
    inside = (torch.rand(rows, mc, generator=g, dtype=F64) - 0.5) * 0.1
    outside = torch.sign(inside) * (0.3 + torch.rand(rows, mc, generator=g, dtype=F64))
    raw = torch.where(torch.arange(mc) % 2 == 0, inside, outside)
    logp = (old + raw).requires_grad_(True)
    ref = old + torch.randn(rows, mc, generator=g, dtype=F64)
    adv = torch.randn(rows, generator=g, dtype=F64)

    def f(x: torch.Tensor) -> torch.Tensor:
        return gdsd_loss(x, old, ref, adv, gen_len, psi=2.0, beta=0.5, eps=eps, num_rows=6)[0]

    assert torch.autograd.gradcheck(f, (logp,), eps=1e-7, atol=1e-9)


def test_gdsd_num_rows_shards_sum_to_full_batch() -> None:
    g = torch.Generator().manual_seed(2)
    rows, mc = 6, 2
    old = -20 - torch.rand(rows, mc, generator=g, dtype=F64)
    raw = (torch.rand(rows, mc, generator=g, dtype=F64) - 0.5) * 0.6  # a mix of clamped and unclamped entries
    ref = old + torch.randn(rows, mc, generator=g, dtype=F64)
    adv = torch.randn(rows, generator=g, dtype=F64)
    kw = dict(psi=1.5, beta=0.3, eps=0.1)

    full_in = (old + raw).requires_grad_(True)
    full, _ = gdsd_loss(full_in, old, ref, adv, 7, **kw)
    full.backward()
    half_in = (old + raw).requires_grad_(True)
    parts = [gdsd_loss(half_in[s], old[s], ref[s], adv[s], 7, num_rows=rows, **kw)[0]
             for s in (slice(0, 3), slice(3, 6))]
    total = parts[0] + parts[1]
    total.backward()
    assert total.item() == pytest.approx(full.item(), rel=1e-12)
    torch.testing.assert_close(half_in.grad, full_in.grad, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="num_rows"):
        gdsd_loss(full_in, old, ref, adv, 7, num_rows=3, **kw)


# ---------------------------------------------------------------------------------------------------------------
# Property test: one masked position, K tokens, policy π_θ = softmax(θ), S_θ(x) = log π_θ(x), L = 1, M = 1.
#
# We keep π_old FIXED and minimise the exact expectation E_{x~π_old}[(Δ(x) − ψA(x))²] by plain gradient descent
# (ε large enough that the clamp never acts, β = 0). Keeping π_old fixed gives a stationary target to converge to;
# refreshing π_old every outer step would move the target each step (that is the training loop — mirror descent on
# the reward — whose fixed point is the argmax of r, not π_old·exp(ψA)/Z).
#
# What is mathematically true: write d(x) = log π_θ(x) − log π_old(x). Every softmax policy satisfies the
# normalisation E_old[e^d] = 1, while the teacher target d = ψA does not (E_old[e^{ψA}] = Z ≥ 1 by Jensen, since
# E_old[A] = 0). GDSD drops the partition function, so its minimiser is the constrained least-squares point: the
# Lagrange condition 2π_old(d − ψA) + λ π_old e^d = 0 gives  (ψA(x) − d(x)) / e^{d(x)} = κ, the same constant for
# every x. Linearising around d = 0 shows d = ψA − log Z + O(ψ²A²): the policy lands close to the tilted target
# π_old·exp(ψA)/Z but not on it, with a KL residual of fourth order in ψA (so residual / initial KL is O(ψ²)).
# ---------------------------------------------------------------------------------------------------------------
def _categorical_gdsd(psi: float, steps: int = 600, lr: float = 1.0):
    g = torch.Generator().manual_seed(0)
    theta_old = torch.randn(5, generator=g, dtype=F64)
    reward = torch.tensor([1.0, 0.0, 0.5, 0.0, 0.2], dtype=F64)
    logp_old = torch.log_softmax(theta_old, 0)
    p_old = logp_old.exp()
    adv = reward - (p_old * reward).sum()  # A(x) = r(x) − E_old[r]
    target = p_old * torch.exp(psi * adv)
    target = target / target.sum()

    def kl_to_target(theta: torch.Tensor) -> float:
        logq = torch.log_softmax(theta, 0)
        return float((target * (target.log() - logq)).sum())

    def expected_loss(theta: torch.Tensor) -> tuple[torch.Tensor, float]:
        logp = torch.log_softmax(theta, 0)
        total, clamped = torch.zeros((), dtype=F64), 0.0
        for x in range(5):  # exact expectation over x ~ π_old, weight π_old(x)
            loss, m = gdsd_loss(logp[x].view(1, 1), logp_old[x].view(1, 1), None, adv[x].view(1), 1,
                                psi=psi, beta=0.0, eps=0.9)
            total = total + p_old[x] * loss
            clamped += m["clamp_frac"].item()
        return total, clamped

    theta = theta_old.clone().requires_grad_(True)
    kl0 = kl_to_target(theta.detach())
    first_grad = None
    for _ in range(steps):
        loss, clamped = expected_loss(theta)
        assert clamped == 0.0  # the test is about the ε-free objective
        (grad,) = torch.autograd.grad(loss, theta)
        if first_grad is None:
            first_grad = grad
        with torch.no_grad():
            theta -= lr * grad
    return SimpleNamespace(theta=theta.detach(), logp_old=logp_old, p_old=p_old, adv=adv, kl0=kl0,
                           kl_end=kl_to_target(theta.detach()), first_grad=first_grad, grad_end=grad)


def test_property_categorical_gdsd_moves_policy_to_tilted_target() -> None:
    run = _categorical_gdsd(psi=1.0)
    # At θ = θ_old the GDSD gradient is exactly the policy gradient −2ψ·π_old(x)·A(x) on the logits.
    torch.testing.assert_close(run.first_grad, -2 * 1.0 * run.p_old * run.adv, rtol=1e-10, atol=1e-12)
    assert run.grad_end.abs().max() < 1e-10  # converged
    assert run.kl0 > 0.05  # a target genuinely away from π_old ...
    assert run.kl_end < 0.01 * run.kl0 and run.kl_end < 1e-3  # ... that the policy moved (almost) onto
    # The exact fixed point: (ψA − d)/e^d is one constant κ for all x (the dropped normalisation), κ ≠ 0.
    d = torch.log_softmax(run.theta, 0) - run.logp_old
    kappa = (1.0 * run.adv - d) / d.exp()
    assert float(kappa.max() - kappa.min()) < 1e-9
    assert float(kappa.mean()) > 1e-3 and run.kl_end > 1e-6  # hence close to, but not exactly, the tilted target


def test_property_residual_is_higher_order_in_psi() -> None:
    big, small = _categorical_gdsd(psi=1.0), _categorical_gdsd(psi=0.5)
    # Initial KL scales like ψ², the residual like ψ⁴: halving ψ divides the relative residual by about 4.
    assert small.kl_end / small.kl0 < 0.4 * (big.kl_end / big.kl0)


# ------------------------------------------------------------------------------------------------ registry ----
def test_registry_contents() -> None:
    assert list(LOSSES) == ["gdsd", "gdsd_tlc", "espo", "diffu_grpo", "spg", "wd1"]
    kinds = {name: spec.algorithm.logp_kind for name, spec in LOSSES.items()}
    assert kinds == {"gdsd": "gdsd", "gdsd_tlc": "tlc", "espo": "tlc", "diffu_grpo": "token_onestep",
                     "spg": "tlc+eubo", "wd1": "token_onestep"}
    assert {name: spec.algorithm.s_variant for name, spec in LOSSES.items()} == {
        "gdsd": "gdsd", "gdsd_tlc": "tlc", "espo": "tlc", "diffu_grpo": None, "spg": "tlc", "wd1": None}
    assert LOSSES["gdsd"].fn is LOSSES["gdsd_tlc"].fn is gdsd_loss
    assert [n for n, s in LOSSES.items() if s.algorithm.needs_ref] == ["gdsd", "gdsd_tlc", "espo", "diffu_grpo"]
    assert [n for n, s in LOSSES.items() if not s.algorithm.needs_old] == ["spg", "wd1"]
    for name, spec in LOSSES.items():
        assert spec.algorithm.name == name
        params = inspect.signature(spec.fn).parameters
        for kw in spec.algorithm.loss_kwargs:  # every config field the learner passes is a keyword of the loss
            assert params[kw].kind is inspect.Parameter.KEYWORD_ONLY, (name, kw)


def test_registry_reads_config_fields() -> None:
    cfg = SimpleNamespace(name="gdsd", beta=1e-3, eps=4e-4, eps_scope="token", psi=10.0, clip_eps=0.2, mu=8, num_mc=1)
    assert get_loss("gdsd_tlc").kwargs_from(cfg) == {"psi": 10.0, "beta": 1e-3, "eps": 4e-4, "eps_scope": "token"}
    assert get_loss("espo").kwargs_from(cfg) == {"beta": 1e-3, "clip_eps": 0.2}
    assert get_loss("wd1").kwargs_from(cfg) == {"psi": 10.0}  # wd1's softmax(+-psi A) temperature


def test_get_loss_unknown_name() -> None:
    with pytest.raises(ValueError) as err:
        get_loss("ppo")
    assert str(err.value) == ("algorithm.name: unknown algorithm 'ppo'; "
                              "choose one of [gdsd, gdsd_tlc, espo, diffu_grpo, spg, wd1]")
