"""Issue 20: the draw and the confidence run position-chunked, so a step never holds a float32 / float64 copy of
the whole [N, V] logits; chunked results equal the unchunked computation (same generator draws, CPU)."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from actors.sampling import sample
from actors.sampling.blocks import draw_blocks
from actors.sampling.draw import DRAW_SHARE, draw_chunk
from actors.sampling.dream import draw_chunked
from common.config import SamplerConfig
from common.tokenize import encode_prompts

CASES = {
    "blocks_low_confidence": dict(gen_length=16, block_length=8, steps=8, remasking="low_confidence"),
    "blocks_random_top_p": dict(gen_length=16, block_length=8, steps=8, remasking="random", top_p=0.9),
    "blocks_model_noise_draw_mask": dict(gen_length=16, block_length=8, steps=8, gumbel_dtype="model",
                                         draw_mask=True),
    "dream_entropy_top_p_top_k": dict(gen_length=16, steps=8, schedule="dream", remasking="entropy", top_p=0.95,
                                      top_k=50),
    "dream_maskgit_plus_draw_mask": dict(gen_length=16, steps=8, schedule="dream", remasking="maskgit_plus",
                                         draw_mask=True),
}


def budget_for(chunk: int, vocab: int) -> float:
    """The sampler.logits_budget_mb whose draw chunk is `chunk` positions."""
    return (chunk * vocab * 8 + 1) * DRAW_SHARE / 2**20


@pytest.mark.parametrize("case", list(CASES))
def test_chunked_sampling_equals_unchunked(denoiser, case):
    vocab = denoiser.net.args.vocab_size
    whole = SamplerConfig(temperature=1.0, logits_budget_mb=4096, **CASES[case])
    small = whole.model_copy(update={"logits_budget_mb": budget_for(3, vocab)})
    assert draw_chunk(small, vocab) == 3 and draw_chunk(whole, vocab) > 3 * 8  # 3 rows x >= 8 positions per step
    ids, _ = encode_prompts(denoiser.tokenizer, ["sudoku 0120000000004300\n", "hi\n", "countdown 1,2,3 -> 6\n"])
    a = sample(denoiser, ids, whole, torch.Generator().manual_seed(5))
    b = sample(denoiser, ids, small, torch.Generator().manual_seed(5))
    assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.reveal_step, b.reveal_step)
    c = sample(denoiser, ids, whole, torch.Generator().manual_seed(6))
    assert not torch.equal(a.completion_ids, c.completion_ids), "the generator must matter in this case"


class LargestFloat(TorchDispatchMode):
    """Records the largest float32 / float64 tensor any op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.dtype in (torch.float32, torch.float64):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("schedule", ["blocks", "dream"])
def test_no_float_copy_of_the_whole_logits(schedule):
    """bf16 logits [N, V]: with chunk 8 no float32 / float64 tensor exceeds 8 x V elements; the same hook sees the
    whole-size copy when the chunk is N (so the check can fail)."""
    N, V = 64, 1000
    logits = torch.randn(N, V, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    extra = {"schedule": "dream", "remasking": "entropy", "top_p": 0.95, "top_k": 50} if schedule == "dream" else {
        "remasking": "low_confidence", "top_p": 0.95}
    cfg = SamplerConfig(gen_length=64, block_length=64, steps=8, temperature=1.0, **extra)
    seen, out = {}, {}
    for chunk in (8, N):
        with LargestFloat() as hook:
            gen = torch.Generator().manual_seed(1)
            if schedule == "dream":
                out[chunk] = draw_chunked(logits.clone(), cfg, gen, torch.float32, chunk)
            else:
                out[chunk] = draw_blocks(logits.clone(), cfg, gen, mask_id=3, noise=torch.float64,
                                         conf_dtype=torch.float32, chunk=chunk)
        seen[chunk] = hook.largest
    assert seen[8] <= 8 * V, seen
    assert seen[N] >= N * V, seen
    assert all(torch.equal(x, y) for x, y in zip(out[8], out[N]))
