"""Seeded consistent masks (docs/design.md, "Formulas": consistent masks).

For inner iteration j and Monte-Carlo draw m one seed s[j, m] is drawn per rollout batch; rows sharing it get
stratified mask levels: k ~ U{0..L}, row i masks m_i = round(k + i(L+1)/B) mod (L+1) completion positions, chosen
uniformly. The mask is a pure function of (seed, num_rows, gen_len): drawn from a CPU torch.Generator, so actor and
learner, CPU or GPU, rebuild exactly the same one. The prompt is never masked (masks cover completion positions only).
"""
from __future__ import annotations

import torch


def _levels(generator: torch.Generator, num_rows: int, gen_len: int) -> torch.Tensor:
    k = torch.randint(0, gen_len + 1, (1,), generator=generator, dtype=torch.int64, device="cpu").double()
    rows = torch.arange(num_rows, dtype=torch.float64, device="cpu")
    # torch.round rounds half to even (as Python's round); float64 keeps i(L+1)/B exact enough for any real L, B
    return torch.round(k + rows * (gen_len + 1) / num_rows).long() % (gen_len + 1)


def mask_levels(seed: int, num_rows: int, gen_len: int) -> torch.Tensor:
    """m_i, the number of masked completion positions of each row: int64 [num_rows] in 0..gen_len."""
    return _levels(torch.Generator(device="cpu").manual_seed(seed), num_rows, gen_len)


def consistent_masks(seed: int, num_rows: int, gen_len: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """bool [num_rows, gen_len]: True = masked in x_t. Its complement (~mask) is x~_t, the antithetic partner."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    levels = _levels(generator, num_rows, gen_len)  # [B]
    scores = torch.rand(num_rows, gen_len, generator=generator, dtype=torch.float64, device="cpu")  # [B, L]
    ranks = scores.argsort(dim=1).argsort(dim=1)  # a uniform random permutation of 0..L-1 per row
    return (ranks < levels[:, None]).to(device)


def mask_fraction(masks: torch.Tensor) -> torch.Tensor:
    """t_i = m_i / (L + 1), float32 [B]."""
    return masks.sum(dim=1).float() / (masks.shape[1] + 1)
