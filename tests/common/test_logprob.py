"""S(x0) against a slow reference: one full forward per scored position, logits read straight from the HF model."""
import math

import pytest
import torch

from common.denoiser import Denoiser
from common.logprob import denoise_logprob
from common.masking import consistent_masks


def slow_logprob(denoiser: Denoiser, prompt: torch.Tensor, completion: torch.Tensor, mask: torch.Tensor,
                 variant: str) -> float:
    """One row; each position n scored by its own forward of the HF model on x_t (n masked) or x~_t (n visible)."""
    P, L = prompt.shape[0], completion.shape[0]
    t = int(mask.sum()) / (L + 1)
    total_masked = total_rest = 0.0
    for n in range(L):
        in_m = bool(mask[n])
        hide = mask if in_m else ~mask  # x_t hides M; its complement hides the rest
        x = torch.cat([prompt, torch.where(hide, denoiser.mask_id, completion)])
        with torch.no_grad():
            logits = denoiser.net(x[None], shift=False)[0].double()  # [T, V] full, unshifted
        row = P + n - 1 if denoiser.shift and P + n > 0 else P + n  # Dream: position n is predicted at n-1
        lp = float(torch.log_softmax(logits[row], dim=-1)[completion[n]])
        if in_m:
            total_masked += lp
        else:
            total_rest += lp
    if variant == "gdsd":
        return 0.5 * (total_masked + total_rest)
    w_m = 0.0 if t == 0 else total_masked / t
    t_rest = L / (L + 1) - t
    w_r = 0.0 if t_rest <= 0 else total_rest / t_rest
    return 0.5 * (w_m + w_r)


@pytest.mark.parametrize("variant", ["gdsd", "tlc"])
@pytest.mark.parametrize("shift", [False, True])
def test_matches_position_by_position_reference(with_shift, variant, shift):
    den = with_shift(shift)
    g = torch.Generator().manual_seed(0)
    B, P, L = 5, 6, 12
    prompt = torch.randint(4, 90, (B, P), generator=g)
    completion = torch.randint(4, 90, (B, L), generator=g)
    masks = consistent_masks(7, B, L)
    masks[0] = False  # level 0: every position scored in x~_t (t = 0 edge)
    masks[1] = True  # level L: the complement is empty (t = L/(L+1) edge)
    with torch.no_grad():
        fast = denoise_logprob(den, prompt, completion, masks, s_variant=variant)
    assert fast.dtype == torch.float32 and fast.shape == (B,)
    for i in range(B):
        ref = slow_logprob(den, prompt[i], completion[i], masks[i], variant)
        assert math.isclose(float(fast[i]), ref, rel_tol=2e-5, abs_tol=2e-4), (i, float(fast[i]), ref)


def test_tlc_weights(denoiser):
    """TLC reweights the two sums of the gdsd form by 1/t and 1/(L/(L+1) - t)."""
    g = torch.Generator().manual_seed(1)
    prompt, completion = torch.randint(4, 90, (3, 4), generator=g), torch.randint(4, 90, (3, 9), generator=g)
    full = torch.ones(3, 9, dtype=torch.bool)
    with torch.no_grad():
        s_full_gdsd = denoise_logprob(denoiser, prompt, completion, full, "gdsd")
        s_full_tlc = denoise_logprob(denoiser, prompt, completion, full, "tlc")
    t = 9 / 10
    assert torch.allclose(s_full_tlc, s_full_gdsd / t, rtol=1e-6)


def test_gradients_flow(denoiser):
    g = torch.Generator().manual_seed(2)
    prompt, completion = torch.randint(4, 90, (2, 4), generator=g), torch.randint(4, 90, (2, 6), generator=g)
    s = denoise_logprob(denoiser, prompt, completion, consistent_masks(0, 2, 6)).sum()
    s.backward()
    grads = [p.grad for p in denoiser.model.parameters() if p.grad is not None]
    assert grads and any(float(gr.abs().sum()) > 0 for gr in grads)
    denoiser.model.zero_grad(set_to_none=True)
