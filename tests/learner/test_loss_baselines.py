"""ESPO, diffu-GRPO (d1), SPG and wd1 losses: hand-computed values, gradients, shard normalisation, prompt masks."""
from __future__ import annotations

import math

import pytest
import torch

from learner.losses import diffu_grpo_loss, diffu_grpo_prompt_mask, espo_loss, gdsd_loss, spg_loss, wd1_loss

F64 = torch.float64


def _t(x: list, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(x, dtype=F64, requires_grad=requires_grad)


def _ppo(ratio: float, adv: float, eps: float) -> float:
    return -min(ratio * adv, min(max(ratio, 1 - eps), 1 + eps) * adv)


# ------------------------------------------------------------------------------------------------------ ESPO ----
# B=2, M=2 (averaged before the ratio), L=4. Row 0: S − S_old = 1.0, ρ = e^{0.25} > 1.2 with A > 0 -> clipped.
# Row 1: S − S_old = −0.1, ρ = e^{−0.025}, inside the clip range.
E_LOGP, E_OLD, E_REF = [[-9.4, -9.8], [-8.0, -8.2]], [[-10.6, -10.6], [-8.0, -8.0]], [[-9.0, -9.0], [-8.5, -8.5]]
E_ADV = [1.0, -0.5]


def test_espo_matches_hand_computed_formula() -> None:
    loss, m = espo_loss(_t(E_LOGP), _t(E_OLD), _t(E_REF), _t(E_ADV), 4, beta=0.1, clip_eps=0.2)
    s, s_old, s_ref = [-9.6, -8.1], [-10.6, -8.0], [-9.0, -8.5]
    ratios = [math.exp((s[b] - s_old[b]) / 4) for b in range(2)]
    pg = sum(_ppo(ratios[b], E_ADV[b], 0.2) for b in range(2)) / 2
    assert pg == pytest.approx(-(1.2 - 0.5 * math.exp(-0.025)) / 2, rel=1e-12)
    kl = 0.1 * sum(0.5 * (s[b] - s_ref[b]) ** 2 for b in range(2)) / (2 * 4)
    assert loss.item() == pytest.approx(pg + kl, rel=1e-12)
    assert m["loss_pg"].item() == pytest.approx(pg, rel=1e-12)
    assert m["loss_kl"].item() == pytest.approx(kl, rel=1e-12)
    assert m["clip_frac"].item() == 0.5
    assert m["mean_ratio"].item() == pytest.approx(sum(ratios) / 2, rel=1e-12)
    assert m["k2"].item() == pytest.approx((0.5 * 0.36 + 0.5 * 0.16) / 2, rel=1e-12)


def test_espo_clipped_row_gets_only_kl_gradient() -> None:
    logp = _t(E_LOGP, True)
    espo_loss(logp, _t(E_OLD), _t(E_REF), _t(E_ADV), 4, beta=0.1, clip_eps=0.2)[0].backward()
    # Row 0 is clipped: only β (S − S_ref)/(B L), shared over the M=2 draws that S averages.
    assert logp.grad[0].tolist() == pytest.approx([0.1 * (-0.6) / 8 / 2] * 2, rel=1e-10)
    # Row 1: −A ρ / (B L) / M from the ratio term, plus the KL part.
    rho = math.exp(-0.025)
    expected = 0.5 * rho / (2 * 4) / 2 + 0.1 * 0.4 / 8 / 2
    assert logp.grad[1].tolist() == pytest.approx([expected] * 2, rel=1e-10)


def test_espo_on_policy_and_asymmetric_clip() -> None:
    # old_logp=None: ρ = 1 and the loss is −mean(A), the gradient the REINFORCE one −A/(B L M).
    logp = _t(E_LOGP, True)
    loss, m = espo_loss(logp, None, None, _t(E_ADV), 4, beta=0.0, clip_eps=0.2)
    loss.backward()
    assert loss.item() == pytest.approx(-0.25, rel=1e-12) and m["mean_ratio"].item() == 1.0
    torch.testing.assert_close(logp.grad, _t([[-1 / 16] * 2, [0.5 / 16] * 2]), rtol=1e-12, atol=0)
    # ε_hi = 0.3 lets row 0 (ρ = e^{0.25} = 1.284) through.
    loss, m = espo_loss(_t(E_LOGP), _t(E_OLD), None, _t(E_ADV), 4, beta=0.0, clip_eps=0.2, clip_eps_high=0.3)
    assert m["clip_frac"].item() == 0.0
    assert loss.item() == pytest.approx(-(math.exp(0.25) - 0.5 * math.exp(-0.025)) / 2, rel=1e-12)


def test_espo_gradcheck_float64() -> None:
    g = torch.Generator().manual_seed(3)
    old = -30 - torch.rand(5, 2, generator=g, dtype=F64)
    # Per-token log-ratios in ±0.1 (inside) or around ±0.5 (clipped either way), away from log(1 ± 0.2).
    shift = torch.tensor([0.1, -0.1, 0.5, -0.5, 0.02], dtype=F64).unsqueeze(1) * 6
    logp = (old + shift + 0.01 * torch.randn(5, 2, generator=g, dtype=F64)).requires_grad_(True)
    ref = old + torch.randn(5, 2, generator=g, dtype=F64)
    adv = torch.tensor([1.0, -1.0, 0.7, -0.4, 0.3], dtype=F64)
    assert torch.autograd.gradcheck(
        lambda x: espo_loss(x, old, ref, adv, 6, beta=0.2, clip_eps=0.2, num_rows=8)[0], (logp,), eps=1e-7)


# ------------------------------------------------------------------------------------------------ diffu-GRPO ----
D_LOGP = [[-1.0, -2.0, -3.0], [-0.5, -1.5, -0.1]]
D_OLD = [[-1.1, -2.0, -5.0], [-0.2, -1.5, -0.4]]
D_REF = [[-1.2, -1.8, -3.0], [-0.5, -1.0, -0.3]]
D_MASK = [[1, 1, 0], [1, 1, 1]]
D_ADV = [0.8, -1.2]


def test_diffu_grpo_matches_hand_computed_formula() -> None:
    loss, m = diffu_grpo_loss(_t(D_LOGP), _t(D_OLD), _t(D_REF), _t(D_ADV), torch.tensor(D_MASK, dtype=torch.bool),
                              beta=0.05, clip_eps=0.2)
    pg = kl = 0.0
    kls, ratios, clipped = [], [], 0
    for b in range(2):
        n = sum(D_MASK[b])
        row_pg = row_kl = 0.0
        for i in range(3):
            if not D_MASK[b][i]:
                continue
            rho = math.exp(D_LOGP[b][i] - D_OLD[b][i])
            d = D_REF[b][i] - D_LOGP[b][i]
            k3 = math.exp(d) - d - 1
            row_pg += _ppo(rho, D_ADV[b], 0.2)
            row_kl += k3
            kls.append(k3)
            ratios.append(rho)
            clipped += (rho > 1.2 and D_ADV[b] > 0) or (rho < 0.8 and D_ADV[b] < 0)
        pg += row_pg / n / 2
        kl += 0.05 * row_kl / n / 2
    assert clipped == 1  # token (1, 0): ρ = e^{−0.3} < 0.8 with A < 0
    assert loss.item() == pytest.approx(pg + kl, rel=1e-12)
    assert m["loss_pg"].item() == pytest.approx(pg, rel=1e-12)
    assert m["loss_kl"].item() == pytest.approx(kl, rel=1e-12)
    assert m["kl"].item() == pytest.approx(sum(kls) / 5, rel=1e-12)
    assert m["clip_frac"].item() == pytest.approx(1 / 5, rel=1e-12)
    assert m["mean_ratio"].item() == pytest.approx(sum(ratios) / 5, rel=1e-12)


def test_diffu_grpo_masked_tokens_and_clipped_tokens_get_no_pg_gradient() -> None:
    logp = _t(D_LOGP, True)
    diffu_grpo_loss(logp, _t(D_OLD), None, _t(D_ADV), _t(D_MASK), beta=0.0, clip_eps=0.2)[0].backward()
    assert logp.grad[0, 2].item() == 0.0  # outside the completion mask
    assert logp.grad[1, 0].item() == 0.0  # clipped
    # Unclipped token (0, 0): −A ρ / (tokens in row · B).
    assert logp.grad[0, 0].item() == pytest.approx(-0.8 * math.exp(0.1) / 2 / 2, rel=1e-10)


def test_diffu_grpo_gradcheck_float64() -> None:
    g = torch.Generator().manual_seed(4)
    old = -torch.rand(3, 5, generator=g, dtype=F64) * 3
    shift = torch.tensor([0.05, -0.05, 0.5, -0.5, 0.0], dtype=F64)  # inside / beyond log(1 ± 0.2)
    logp = (old + shift + 0.01 * torch.randn(3, 5, generator=g, dtype=F64)).requires_grad_(True)
    ref = old + 0.3 * torch.randn(3, 5, generator=g, dtype=F64)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    adv = torch.tensor([1.0, -0.5, 0.2], dtype=F64)
    assert torch.autograd.gradcheck(
        lambda x: diffu_grpo_loss(x, old, ref, adv, mask, beta=0.3, clip_eps=0.2)[0], (logp,), eps=1e-7)


def test_diffu_grpo_prompt_mask_uses_only_the_generator() -> None:
    prompt = torch.ones(200, 200, dtype=torch.bool)
    prompt[:, :50] = False  # left padding is never masked
    first = diffu_grpo_prompt_mask(prompt, p_mask_prompt=0.15, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(123)  # the global RNG must not matter
    second = diffu_grpo_prompt_mask(prompt, p_mask_prompt=0.15, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, second) and first.dtype == torch.bool
    assert not first[:, :50].any()
    frac = first[:, 50:].double().mean().item()
    assert abs(frac - 0.15) < 0.01  # 30 000 draws: 5+ standard deviations
    other = diffu_grpo_prompt_mask(prompt, p_mask_prompt=0.15, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(first, other)
    gen = torch.Generator().manual_seed(0)
    assert not diffu_grpo_prompt_mask(prompt, p_mask_prompt=0.0, generator=gen).any()
    assert torch.equal(diffu_grpo_prompt_mask(prompt, p_mask_prompt=1.0, generator=gen), prompt)


# ------------------------------------------------------------------------------------------------------- SPG ----
def test_spg_matches_hand_computed_formula() -> None:
    elbo = _t([[-10.0, -10.0], [-12.5, -11.5], [-9.0, -9.0]])  # means −10, −12, −9
    eubo, adv = _t([-8.0, -11.0, -7.0]), _t([1.0, -0.5, 0.0])
    loss, m = spg_loss(elbo, eubo, adv, 4, mix_weight=0.5)
    # Row 0 (A>0) uses the ELBO −10; row 1 (A<0) 0.5·(−11) + 0.5·(−12) = −11.5; row 2 has A = 0.
    assert loss.item() == pytest.approx(-(1.0 * -10.0 + -0.5 * -11.5) / (3 * 4), rel=1e-12)
    assert m["pos_frac"].item() == pytest.approx(1 / 3)
    assert m["mean_elbo"].item() == pytest.approx(-31 / 3) and m["mean_eubo"].item() == pytest.approx(-26 / 3)
    # ω = 1: pure EUBO for negative rows; ω = 0: ELBO everywhere (eubo may be None).
    assert spg_loss(elbo, eubo, adv, 4, mix_weight=1.0)[0].item() == pytest.approx(-(-10.0 + 5.5) / 12, rel=1e-12)
    assert spg_loss(elbo, None, adv, 4, mix_weight=0.0)[0].item() == pytest.approx(-(-10.0 + 6.0) / 12, rel=1e-12)
    with pytest.raises(ValueError, match="eubo"):
        spg_loss(elbo, None, adv, 4, mix_weight=0.5)


def test_spg_gradient_directions() -> None:
    elbo, eubo = _t([[-10.0], [-12.0]], True), _t([-8.0, -11.0], True)
    spg_loss(elbo, eubo, _t([2.0, -1.0]), 5, mix_weight=0.25)[0].backward()
    # Positive row pushes its ELBO up (negative gradient), negative row pushes both bounds down.
    torch.testing.assert_close(elbo.grad, _t([[-2.0 / 10], [0.75 / 10]]), rtol=1e-12, atol=0)
    assert eubo.grad.tolist() == pytest.approx([0.0, 0.25 / 10], rel=1e-12)
    assert torch.autograd.gradcheck(lambda a, b: spg_loss(a, b, _t([2.0, -1.0]), 5, mix_weight=0.25)[0],
                                     (elbo.detach().requires_grad_(True), eubo.detach().requires_grad_(True)))


# ------------------------------------------------------------------------------------------------------- wd1 ----
def test_wd1_matches_hand_computed_formula() -> None:
    logp = [[-1.0, -2.0], [-0.5, -0.7], [-3.0, -1.0], [-0.2, -0.4]]
    mask = [[1, 1], [1, 0], [1, 1], [0, 1]]
    adv = [0.5, -0.5, 1.0, -1.0]  # two groups of G = 2
    loss, m = wd1_loss(_t(logp), _t(adv), _t(mask), group_size=2, psi=2.0)
    seq = [sum(lp * k for lp, k in zip(logp[b], mask[b])) for b in range(4)]  # [−3, −0.5, −4, −0.4]
    expected_pos = expected_neg = 0.0
    for grp in ((0, 1), (2, 3)):
        zp = sum(math.exp(2.0 * adv[b]) for b in grp)
        zn = sum(math.exp(-2.0 * adv[b]) for b in grp)
        expected_pos -= sum(math.exp(2.0 * adv[b]) / zp * seq[b] for b in grp)
        expected_neg += sum(math.exp(-2.0 * adv[b]) / zn * seq[b] for b in grp)
    assert loss.item() == pytest.approx((expected_pos + expected_neg) / 2, rel=1e-12)
    assert m["loss_pos"].item() == pytest.approx(expected_pos / 2, rel=1e-12)
    assert m["w_pos_max"].item() == pytest.approx(math.exp(2) / (math.exp(2) + math.exp(-2)), rel=1e-12)
    # One group over all rows and ψ = 1 is the official sum  −Σ softmax(A)·S + Σ softmax(−A)·S.
    zp, zn = sum(math.exp(a) for a in adv), sum(math.exp(-a) for a in adv)
    official = sum((math.exp(-a) / zn - math.exp(a) / zp) * s for a, s in zip(adv, seq))
    assert wd1_loss(_t(logp), _t(adv), _t(mask))[0].item() == pytest.approx(official, rel=1e-12)


def test_wd1_gradcheck_and_group_check() -> None:
    g = torch.Generator().manual_seed(5)
    logp = (-torch.rand(4, 3, generator=g, dtype=F64)).requires_grad_(True)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [0, 1, 1]], dtype=torch.bool)
    adv = torch.randn(4, generator=g, dtype=F64)
    assert torch.autograd.gradcheck(lambda x: wd1_loss(x, adv, mask, group_size=2, psi=1.5)[0], (logp,))
    with pytest.raises(ValueError, match="group_size"):
        wd1_loss(logp, adv, mask, group_size=3)


# ------------------------------------------------------------------------------------ shard normalisation ----
def _halves_equal_full(call, *tensors: torch.Tensor, rows: int, split: int) -> None:
    full_in = tensors[0].clone().requires_grad_(True)
    full = call(full_in, *tensors[1:], None)
    full.backward()
    half_in = tensors[0].clone().requires_grad_(True)
    total = sum(call(half_in[s], *(t[s] for t in tensors[1:]), rows)
                for s in (slice(0, split), slice(split, rows)))
    total.backward()
    assert total.item() == pytest.approx(full.item(), rel=1e-12)
    torch.testing.assert_close(half_in.grad, full_in.grad, rtol=1e-12, atol=1e-15)


def test_num_rows_shards_sum_to_full_batch() -> None:
    g = torch.Generator().manual_seed(6)
    rows, mc, gen_len = 6, 2, 5
    old = -20 - torch.rand(rows, mc, generator=g, dtype=F64)
    logp = old + torch.randn(rows, mc, generator=g, dtype=F64)
    ref = old + torch.randn(rows, mc, generator=g, dtype=F64)
    adv = torch.randn(rows, generator=g, dtype=F64)
    _halves_equal_full(lambda x, o, r, a, n: espo_loss(x, o, r, a, gen_len, beta=0.1, clip_eps=0.2, num_rows=n)[0],
                       logp, old, ref, adv, rows=rows, split=2)
    eubo = logp[:, 0] + 1.0
    _halves_equal_full(lambda x, e, a, n: spg_loss(x, e, a, gen_len, mix_weight=0.5, num_rows=n)[0],
                       logp, eubo, adv, rows=rows, split=4)
    tok_old = -torch.rand(rows, gen_len, generator=g, dtype=F64)
    tok = tok_old + 0.3 * torch.randn(rows, gen_len, generator=g, dtype=F64)
    tok_ref = tok_old + 0.3 * torch.randn(rows, gen_len, generator=g, dtype=F64)
    mask = torch.rand(rows, gen_len, generator=g, dtype=F64) < 0.8
    _halves_equal_full(
        lambda x, o, r, a, k, n: diffu_grpo_loss(x, o, r, a, k, beta=0.1, clip_eps=0.2, num_rows=n)[0],
        tok, tok_old, tok_ref, adv, mask, rows=rows, split=3)
    _halves_equal_full(lambda x, a, k, n: wd1_loss(x, a, k, group_size=2, num_rows=n)[0],
                       tok, adv, mask, rows=rows, split=4)


# ---------------------------------------------------------------------------------------------------- devices ----
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_float32_on_device_matches_float64_cpu(device: str) -> None:
    """Same numbers in float32 on every available device as in float64 on CPU; metrics stay on the device."""
    g = torch.Generator().manual_seed(9)
    rows, mc, gen_len = 4, 2, 6
    old = -10 - torch.rand(rows, mc, generator=g, dtype=F64)
    logp = old + 0.2 * torch.randn(rows, mc, generator=g, dtype=F64)
    ref = old + torch.randn(rows, mc, generator=g, dtype=F64)
    adv = torch.randn(rows, generator=g, dtype=F64)
    tok = -torch.rand(rows, gen_len, generator=g, dtype=F64)
    tok_old = tok + 0.1 * torch.randn(rows, gen_len, generator=g, dtype=F64)
    mask = torch.rand(rows, gen_len, generator=g, dtype=F64) < 0.8
    calls = {
        "gdsd": lambda c: gdsd_loss(c(logp), c(old), c(ref), c(adv), gen_len, psi=1.0, beta=0.1, eps=0.1),
        "espo": lambda c: espo_loss(c(logp), c(old), c(ref), c(adv), gen_len, beta=0.1, clip_eps=0.2),
        "diffu_grpo": lambda c: diffu_grpo_loss(c(tok), c(tok_old), c(tok_old), c(adv), c(mask),
                                                beta=0.1, clip_eps=0.2),
        "spg": lambda c: spg_loss(c(logp), c(logp[:, 0] + 1), c(adv), gen_len),
        "wd1": lambda c: wd1_loss(c(tok), c(adv), c(mask), group_size=2),
    }
    for name, call in calls.items():
        want, _ = call(lambda t: t)
        got, metrics = call(lambda t: t.to(device=device, dtype=torch.float32) if t.is_floating_point()
                            else t.to(device))
        assert got.device.type == device and got.dtype == torch.float32, name
        assert got.item() == pytest.approx(want.item(), rel=1e-4, abs=1e-6), name
        assert all(v.device.type == device for v in metrics.values()), name
    prompt = torch.rand(8, 16, generator=g) < 0.9
    on_cpu = diffu_grpo_prompt_mask(prompt, generator=torch.Generator().manual_seed(1))
    on_dev = diffu_grpo_prompt_mask(prompt.to(device), generator=torch.Generator().manual_seed(1))
    assert on_dev.device.type == device and torch.equal(on_dev.cpu(), on_cpu)
