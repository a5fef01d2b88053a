"""d1's one-step per-token log-probs against a slow reference: full HF forward, logits read by hand."""
import pytest
import torch

from common.denoiser import Denoiser, padding_mask
from common.logprob_tokens import onestep_token_logprob


def slow_onestep(denoiser: Denoiser, prompt: torch.Tensor, completion: torch.Tensor,
                 prompt_mask: torch.Tensor) -> torch.Tensor:
    """One row: [prompt with prompt_mask -> MASK, MASK * L], one full unshifted HF forward, float64 log_softmax."""
    P, L = prompt.shape[0], completion.shape[0]
    x = torch.cat([torch.where(prompt_mask, denoiser.mask_id, prompt), torch.full((L,), denoiser.mask_id)])
    with torch.no_grad():
        logits = denoiser.net(x[None], shift=False)[0].double()  # [T, V]
    out = torch.empty(L, dtype=torch.float64)
    for n in range(L):
        row = P + n - 1 if denoiser.shift and P + n > 0 else P + n  # Dream: position n is predicted at n-1
        out[n] = torch.log_softmax(logits[row], dim=-1)[completion[n]]
    return out


@pytest.mark.parametrize("shift", [False, True])
def test_matches_full_forward_reference(with_shift, shift):
    den = with_shift(shift)
    g = torch.Generator().manual_seed(0)
    B, P, L = 4, 7, 10
    prompt = torch.randint(4, 90, (B, P), generator=g)
    completion = torch.randint(4, 90, (B, L), generator=g)
    prompt_mask = torch.rand(B, P, generator=g) < 0.3
    prompt_mask[0] = False  # nothing masked in the prompt
    prompt_mask[1] = True  # the whole prompt masked
    with torch.no_grad():
        fast = onestep_token_logprob(den, prompt, completion, prompt_mask)
    assert fast.dtype == torch.float32 and fast.shape == (B, L)
    for i in range(B):
        ref = slow_onestep(den, prompt[i], completion[i], prompt_mask[i])
        assert torch.allclose(fast[i].double(), ref, rtol=1e-5, atol=1e-5), (i, fast[i], ref)


def test_prompt_mask_changes_the_estimate_and_rows_are_independent(denoiser):
    g = torch.Generator().manual_seed(1)
    prompt, completion = torch.randint(4, 90, (3, 5), generator=g), torch.randint(4, 90, (3, 6), generator=g)
    none = torch.zeros(3, 5, dtype=torch.bool)
    some = none.clone()
    some[:, 2] = True
    with torch.no_grad():
        a = onestep_token_logprob(denoiser, prompt, completion, none)
        b = onestep_token_logprob(denoiser, prompt, completion, some)
        single = onestep_token_logprob(denoiser, prompt[1:2], completion[1:2], none[1:2])
    assert not torch.equal(a, b)
    assert torch.allclose(single[0], a[1], rtol=1e-6, atol=1e-6)


def test_gradients_flow(denoiser):
    g = torch.Generator().manual_seed(2)
    prompt, completion = torch.randint(4, 90, (2, 4), generator=g), torch.randint(4, 90, (2, 6), generator=g)
    onestep_token_logprob(denoiser, prompt, completion, torch.zeros(2, 4, dtype=torch.bool)).sum().backward()
    grads = [p.grad for p in denoiser.model.parameters() if p.grad is not None]
    assert grads and any(float(gr.abs().sum()) > 0 for gr in grads)
    denoiser.model.zero_grad(set_to_none=True)


def test_padding_mask_of_the_prompt_alone_marks_real_tokens():
    mask = padding_mask(torch.tensor([3, 0, 5]), 5, 0)  # the one-step estimate's real prompt tokens
    assert mask.tolist() == [[False, False, True, True, True], [False] * 5, [True] * 5]
