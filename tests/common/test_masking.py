import json
import subprocess
import sys

import pytest
import torch

from common.logprob import pair_inputs
from common.masking import consistent_masks, mask_fraction, mask_levels


def reference_levels(k: int, num_rows: int, gen_len: int) -> list[int]:
    """docs/design.md, "Formulas": m_i = round(k + i(L+1)/B) mod (L+1), written with Python's own round (half to
    even)."""
    return [round(k + i * (gen_len + 1) / num_rows) % (gen_len + 1) for i in range(num_rows)]


@pytest.mark.parametrize("num_rows,gen_len", [(1, 8), (6, 10), (12, 256), (7, 3), (64, 31)])
def test_levels_are_stratified_and_positions_match_levels(num_rows, gen_len):
    for seed in range(20):
        levels = mask_levels(seed, num_rows, gen_len)
        k = int(torch.randint(0, gen_len + 1, (1,), generator=torch.Generator().manual_seed(seed)))
        assert levels.tolist() == reference_levels(k, num_rows, gen_len)
        masks = consistent_masks(seed, num_rows, gen_len)
        assert masks.shape == (num_rows, gen_len) and masks.dtype == torch.bool
        assert masks.sum(dim=1).tolist() == levels.tolist()
        assert torch.allclose(mask_fraction(masks), levels.float() / (gen_len + 1))


def test_levels_cover_range_evenly():
    # B = L + 1 rows: every level 0..L appears exactly once whatever k is
    for seed in range(10):
        assert sorted(mask_levels(seed, 33, 32).tolist()) == list(range(33))


def test_masks_deterministic_and_seed_dependent():
    assert torch.equal(consistent_masks(5, 8, 64), consistent_masks(5, 8, 64))
    assert not torch.equal(consistent_masks(5, 8, 64), consistent_masks(6, 8, 64))


def test_positions_uniform():
    # each completion position is masked with the same frequency across seeds (chi-square-free coarse check)
    counts = torch.zeros(16)
    for seed in range(2000):
        counts += consistent_masks(seed, 1, 16)[0].float()
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()


def test_pair_covers_each_completion_position_once_and_keeps_prompt():
    prompt = torch.arange(10, 15).repeat(4, 1)  # [4, 5]
    completion = torch.arange(20, 28).repeat(4, 1)  # [4, 8]
    masks = consistent_masks(1, 4, 8)
    inputs, read = pair_inputs(prompt, completion, masks, mask_id=99)
    assert torch.equal(inputs[:, :5], prompt.repeat(2, 1))  # the prompt is never masked
    assert not read[:, :5].any()
    x_t, x_c = inputs[:4, 5:], inputs[4:, 5:]
    masked_t, masked_c = x_t == 99, x_c == 99
    assert torch.equal(masked_t, masks) and torch.equal(masked_c, ~masks)
    assert torch.equal(masked_t.int() + masked_c.int(), torch.ones(4, 8, dtype=torch.int))  # union, exactly once


def test_same_masks_in_another_process():
    code = ("import torch; from common.masking import consistent_masks;"
            "print(consistent_masks(1234, 12, 256).int().flatten().tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == consistent_masks(1234, 12, 256).int().flatten().tolist()
