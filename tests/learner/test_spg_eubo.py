"""SPG's ELBO / EUBO estimators and loss against slow references written here from the official code
(facebookresearch/SPG, spg/spg_trainer.py: `_get_per_seq_logps` with logp_estimation eubo / mix, `compute_loss`):
python floats and loops, p^beta in the probability domain as the official code, one full forward per masked
sequence of the tiny model."""
from __future__ import annotations

import math

import pytest
import torch

from common.batch import RolloutBatch
from common.masking import consistent_masks
from learner.losses import spg_elbo_draws, spg_eubo, spg_loss
from learner.spg_update import sandwich_terms


# ------------------------------------------------------------------------------------- slow references ----
def slow_elbo_draw(logp: list[float], masked: list[bool]) -> float:
    """One row, one draw: L * mean of log p over the masked tokens (official: a zero denominator gives 0)."""
    picked = [lp for lp, m in zip(logp, masked) if m]
    return len(logp) * sum(picked) / len(picked) if picked else 0.0


def slow_eubo(logp: list[list[float]], masked: list[list[bool]], beta: float) -> float:
    """One row, D draws x L positions: the official per-token-mean EUBO times L (the completion length)."""
    D, L = len(logp), len(logp[0])
    t = [sum(masked[d]) / L for d in range(D)]  # empirical t of each draw
    total, count = 0.0, 0
    for n in range(L):
        avg = sum(math.exp(logp[d][n]) ** beta / t[d] for d in range(D) if masked[d][n]) / D  # unmasked draws add 0
        if avg > 0:  # official loss_mask: positions some draw masks
            total += math.log(avg)
            count += 1
    return L * (total / count if count else 0.0) / beta


def slow_loss(logp, masked, adv: list[float], beta: float, mix: float) -> float:
    """Official compute_loss: bound = ELBO if A > 0 else mix * EUBO + (1 - mix) * ELBO (per-token means), loss =
    sum_b -A_b * bound_b * len_b / sum_b len_b, len_b = L."""
    B, L = len(adv), len(logp[0][0])
    total = 0.0
    for b in range(B):
        elbo = sum(slow_elbo_draw(logp[b][d], masked[b][d]) for d in range(len(logp[b]))) / len(logp[b]) / L
        eubo = slow_eubo(logp[b], masked[b], beta) / L
        bound = elbo if adv[b] > 0 else mix * eubo + (1 - mix) * elbo
        total += -adv[b] * bound * L
    return total / (B * L)


def edge_draws(rows: int, draws: int, L: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 log-probs in (-6, 0) and masks [rows >= 4, draws, L] with every edge: an empty draw, a full draw, a
    one-token draw, a position no draw masks (row 0), a row whose draws mask nothing."""
    g = torch.Generator().manual_seed(seed)
    logp = -6 * torch.rand(rows, draws, L, generator=g, dtype=torch.float64)
    masked = torch.rand(rows, draws, L, generator=g) < torch.rand(rows, draws, 1, generator=g)
    masked[0, :, 1] = False  # never masked: not in K
    masked[1, 0] = True  # full draw (t = 1)
    if draws > 1:
        masked[1, 1] = False  # empty draw (t = 0): adds 0 to every a_n, still counted in the mean
    masked[2, -1] = False
    masked[2, -1, 3] = True  # one-token draw (t = 1/L)
    masked[3] = False  # nothing masked at all: EUBO 0, ELBO 0
    return logp, masked


# ------------------------------------------------------------------------------------- pure functions ----
@pytest.mark.parametrize("beta", [0.5, 1.0, 1.5, 2.0])
@pytest.mark.parametrize("draws", [1, 2, 3, 4])
def test_eubo_and_elbo_match_slow_reference(beta: float, draws: int) -> None:
    logp, masked = edge_draws(5, draws, 7, seed=draws)
    eubo, elbo = spg_eubo(logp, masked, beta=beta), spg_elbo_draws(logp, masked)
    assert eubo.shape == (5,) and elbo.shape == (5, draws) and eubo.dtype == torch.float64
    for b in range(5):
        lp, mk = logp[b].tolist(), masked[b].tolist()
        assert eubo[b].item() == pytest.approx(slow_eubo(lp, mk, beta), rel=1e-12, abs=1e-12), b
        for d in range(draws):
            assert elbo[b, d].item() == pytest.approx(slow_elbo_draw(lp[d], mk[d]), rel=1e-12, abs=1e-12), (b, d)
    assert eubo[3].item() == 0.0 and not elbo[3].any()  # the row with nothing masked


@pytest.mark.parametrize("beta,draws,mix", [(1.0, 2, 0.5), (1.5, 2, 0.5), (2.0, 4, 1.0), (1.5, 1, 0.25)])
def test_loss_matches_official_compute_loss(beta: float, draws: int, mix: float) -> None:
    logp, masked = edge_draws(6, draws, 5, seed=10 + draws)
    adv = torch.tensor([0.7, -0.4, 0.0, -1.1, 0.3, -0.2], dtype=torch.float64)
    loss, metrics = spg_loss(spg_elbo_draws(logp, masked), spg_eubo(logp, masked, beta=beta), adv, 5,
                             mix_weight=mix)
    ref = slow_loss(logp.tolist(), masked.tolist(), adv.tolist(), beta, mix)
    assert loss.item() == pytest.approx(ref, rel=1e-12, abs=1e-14)
    assert metrics["pos_frac"].item() == pytest.approx(2 / 6)


def test_eubo_reduces_to_closed_forms() -> None:
    """D = 1: EUBO = L * (mean_K log p - log t / beta); a pair of complementary draws with equal p everywhere:
    a_n = p^beta / (2 t_d(n)) per position."""
    logp = torch.full((1, 1, 4), -0.5, dtype=torch.float64)
    masked = torch.tensor([[[True, True, False, False]]])
    assert spg_eubo(logp, masked, beta=2.0).item() == pytest.approx(4 * (-0.5 - math.log(0.5) / 2.0), rel=1e-12)
    pair = torch.stack([masked[0, 0], ~masked[0, 0]])[None]  # [1, 2, 4]
    lp = torch.full((1, 2, 4), -1.0, dtype=torch.float64)
    want = 4 * (1.0 * -1.0 - math.log(0.5) - math.log(2)) / 1.0
    assert spg_eubo(lp, pair, beta=1.0).item() == pytest.approx(want, rel=1e-12)


def test_eubo_gradients_finite_with_edge_draws() -> None:
    logp, masked = edge_draws(5, 3, 6, seed=3)
    logp.requires_grad_(True)
    spg_eubo(logp, masked, beta=1.5).sum().backward()
    assert torch.isfinite(logp.grad).all()
    assert not logp.grad[~masked].any()  # only masked positions carry the bound
    assert torch.autograd.gradcheck(lambda x: spg_eubo(x, masked, beta=1.5), (logp.detach().requires_grad_(True),))


def test_eubo_log_space_keeps_tokens_the_float32_power_would_drop() -> None:
    """log p = -200 with beta = 1.5: p^beta underflows float32 (the official code then drops the token from K);
    the log-space value stays exact."""
    logp = torch.tensor([[[-200.0, -1.0]]], dtype=torch.float32)
    masked = torch.ones(1, 1, 2, dtype=torch.bool)
    assert spg_eubo(logp, masked, beta=1.5).item() == pytest.approx(2 * (-201 / 2), rel=1e-6)


def test_eubo_rejects_bad_input() -> None:
    logp, masked = edge_draws(4, 2, 5, seed=0)
    with pytest.raises(ValueError, match="beta"):
        spg_eubo(logp, masked, beta=0.0)
    with pytest.raises(ValueError, match="masked must be bool"):
        spg_eubo(logp, masked.double(), beta=1.0)
    with pytest.raises(ValueError, match="token_logp must be 3-D"):
        spg_elbo_draws(logp[0], masked[0])


# ------------------------------------------------------------------------------------- on the tiny model ----
def tiny_batch(B: int, P: int, L: int, num_mc: int, seed: int) -> RolloutBatch:
    """A RolloutBatch of random tokens (the learner's input contract), masks seeded per draw as the actors do."""
    g = torch.Generator().manual_seed(seed)
    seeds = torch.randint(0, 2 ** 31, (1, 2, num_mc), generator=g).expand(B, -1, -1).contiguous()
    nan = torch.full((B, 2, num_mc), float("nan"))
    return RolloutBatch(
        prompt_ids=torch.randint(4, 90, (B, P), generator=g), prompt_len=torch.full((B,), P),
        completion_ids=torch.randint(4, 90, (B, L), generator=g), completion_mask=torch.ones(B, L, dtype=torch.bool),
        reveal_step=torch.zeros(B, L, dtype=torch.int32), group_id=torch.zeros(B, dtype=torch.int64),
        reward=torch.zeros(B), advantage=torch.zeros(B), mask_seeds=seeds, mask_row=torch.arange(B),
        mask_batch_rows=torch.full((B,), B), old_logp=nan, ref_logp=nan.clone(),
        policy_version=torch.zeros(B, dtype=torch.int64), prompt_uid=[""] * B, task=["sudoku"] * B, text=[""] * B)


def slow_token_logp(den, prompt: torch.Tensor, completion: torch.Tensor, hide: torch.Tensor) -> list[float]:
    """One full forward of the model on the prompt + completion with `hide` masked; log p at every position (read
    only where hidden), logits straight from the network, unshifted, in float64."""
    x = torch.cat([prompt, torch.where(hide, den.mask_id, completion)])
    with torch.no_grad():
        logits = den.net(x[None], shift=False)[0].double()
    P = prompt.shape[0]
    rows = [P + n - 1 if den.shift and P + n > 0 else P + n for n in range(completion.shape[0])]
    return [float(torch.log_softmax(logits[r], dim=-1)[completion[n]]) for n, r in enumerate(rows)]


@pytest.mark.parametrize("beta,num_mc,shift", [(1.0, 1, False), (1.5, 2, False), (2.0, 1, True)])
def test_sandwich_terms_on_tiny_model_match_slow_reference(with_shift, beta: float, num_mc: int, shift: bool) -> None:
    """B = L + 1 rows: the stratified mask levels cover every t = 0..L (the edge draws: an empty x_t with a full
    complement, and the reverse)."""
    den = with_shift(shift)
    B, P, L = 6, 4, 5
    batch = tiny_batch(B, P, L, num_mc, seed=int(beta * 10) + num_mc)
    j = 1
    with torch.no_grad():
        elbo, eubo = sandwich_terms(den, batch, j, beta=beta)
    assert elbo.shape == (B, 2 * num_mc) and eubo.shape == (B,)
    levels = set()
    for b in range(B):
        logp, masked = [], []
        for m in range(num_mc):
            mask = consistent_masks(int(batch.mask_seeds[0, j, m]), B, L)[b]
            levels.add(int(mask.sum()))
            for hide in (mask, ~mask):  # x_t, then its complement
                logp.append(slow_token_logp(den, batch.prompt_ids[b], batch.completion_ids[b], hide))
                masked.append(hide.tolist())
        for d in range(2 * num_mc):
            assert elbo[b, d].item() == pytest.approx(slow_elbo_draw(logp[d], masked[d]), rel=2e-5, abs=2e-4), (b, d)
        assert eubo[b].item() == pytest.approx(slow_eubo(logp, masked, beta), rel=2e-5, abs=2e-4), b
    assert {0, L} <= levels  # both edge draws were checked


def test_sandwich_terms_gradients_reach_the_model(denoiser) -> None:
    batch = tiny_batch(4, 3, 6, 1, seed=5)
    batch.advantage = torch.tensor([0.5, -0.5, 1.0, -1.0])
    elbo, eubo = sandwich_terms(denoiser, batch, 0, beta=1.5)
    loss, _ = spg_loss(elbo, eubo, batch.advantage, 6, mix_weight=0.5)
    loss.backward()
    grads = [p.grad for p in denoiser.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads) and any(gr.abs().sum() > 0 for gr in grads)
    denoiser.model.zero_grad(set_to_none=True)
