"""The batched sampler against a simple one-row LLaDA-style loop (full-vocab logits at every position, every step)."""
import pytest
import torch

from actors.sampling import sample
from actors.sampling.blocks import reveal_schedule
from common.config import SamplerConfig
from common.denoiser import Denoiser
from common.tokenize import encode_prompts


def reference_one_row(den: Denoiser, prompt: torch.Tensor, cfg: SamplerConfig) -> tuple[list[int], list[int]]:
    """Greedy (T=0) LLaDA generate for one row, written plainly: returns (tokens, reveal step per position)."""
    P, L = prompt.shape[0], cfg.gen_length
    x = torch.cat([prompt, torch.full((L,), den.mask_id)])
    hidden = [True] * L
    steps_of = [-1] * L
    blocks = L // cfg.block_length
    per_block = cfg.steps // blocks
    step = 0
    for b in range(blocks):
        n = cfg.block_length
        counts = [n // per_block + (1 if i < n % per_block else 0) for i in range(per_block)]
        for k in counts:
            with torch.no_grad():
                logits = den.net(x[None], shift=False)[0]  # [T, V] every position, full vocab
            if den.shift:
                logits = torch.cat([logits[:1], logits[:-1]])
            logits[:, den.mask_id] = float("-inf")
            probs = logits.float().softmax(-1)
            conf = torch.full((P + L,), float("-inf"))
            cand = {}
            for pos in range(b * cfg.block_length, (b + 1) * cfg.block_length):
                if hidden[pos]:
                    tok = int(logits[P + pos].argmax())
                    cand[pos] = tok
                    if cfg.remasking == "low_confidence":
                        conf[P + pos] = probs[P + pos, tok]
                    else:
                        p = probs[P + pos]
                        conf[P + pos] = (p * torch.log(p + 1e-10)).sum()
            if k:
                for idx in conf[None].topk(k, dim=1).indices[0].tolist():
                    x[idx] = cand[idx - P]
                    hidden[idx - P] = False
                    steps_of[idx - P] = step
            step += 1
    return x[P:].tolist(), steps_of


def test_reveal_schedule_sums():
    for n, s in [(32, 8), (32, 5), (7, 7), (3, 8), (256, 64)]:
        sched = reveal_schedule(n, s)
        assert sum(sched) == n and len(sched) == s
        assert max(sched) - min(sched) <= 1 and sched == sorted(sched, reverse=True)


@pytest.mark.parametrize("remasking,shift", [("low_confidence", False), ("entropy", True)])
@pytest.mark.parametrize("gen_length,steps,block_length", [(16, 8, 8), (12, 12, 4), (8, 3, 8)])
def test_greedy_matches_one_row_reference(with_shift, remasking, shift, gen_length, steps, block_length):
    den = with_shift(shift)
    cfg = SamplerConfig(gen_length=gen_length, steps=steps, block_length=block_length, temperature=0.0,
                        remasking=remasking)
    prompts = ["sudoku 0120000000004300\n", "countdown 1,2,3 -> 6\n", "hi\n"]  # different lengths: left padding
    ids, _ = encode_prompts(den.tokenizer, prompts)
    out = sample(den, ids, cfg)
    for row in range(len(prompts)):
        tokens, steps_of = reference_one_row(den, ids[row], cfg)
        assert out.completion_ids[row].tolist() == tokens
        assert out.reveal_step[row].tolist() == steps_of


def test_blocks_in_order_nothing_remasked(denoiser):
    cfg = SamplerConfig(gen_length=32, steps=16, block_length=8, temperature=1.0)
    ids, _ = encode_prompts(denoiser.tokenizer, ["sudoku 0120000000004300\n"] * 4)
    out = sample(denoiser, ids, cfg, torch.Generator().manual_seed(0))
    steps = out.reveal_step  # [B, L]
    assert (steps >= 0).all(), "every position revealed exactly once, none left masked"
    assert (out.completion_ids != denoiser.mask_id).all()
    per_block = steps.view(4, 4, 8)  # [B, blocks, block_length]
    assert (per_block[:, :-1].amax(dim=2) < per_block[:, 1:].amin(dim=2)).all(), "blocks revealed left to right"
    for row in steps:  # 4 steps per block, 2 tokens each: the schedule, one reveal per position
        assert torch.bincount(row.long(), minlength=16).tolist() == [2] * 16
    assert out.forwards == 16


def test_sampling_is_seeded(denoiser):
    cfg = SamplerConfig(gen_length=16, steps=8, block_length=16, temperature=1.0)
    ids, _ = encode_prompts(denoiser.tokenizer, ["hi\n"] * 3)
    a = sample(denoiser, ids, cfg, torch.Generator().manual_seed(3)).completion_ids
    b = sample(denoiser, ids, cfg, torch.Generator().manual_seed(3)).completion_ids
    c = sample(denoiser, ids, cfg, torch.Generator().manual_seed(4)).completion_ids
    assert torch.equal(a, b) and not torch.equal(a, c)


def nucleus_reference(probs: list[float], top_p: float, keep_boundary: bool) -> list[bool]:
    """Slow reference: walk the tokens from the most likely, keep each one while the mass before it is below top_p
    (keep_boundary: at most top_p, Dream's top_p_logits); the top token always stays."""
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    kept, before = [False] * len(probs), 0.0
    for rank, i in enumerate(order):
        if rank == 0 or (before <= top_p if keep_boundary else before < top_p):
            kept[i] = True
        before += probs[i]
    return kept


@pytest.mark.parametrize("keep_boundary", [False, True])
def test_top_p_keeps_nucleus(keep_boundary):
    from actors.sampling.draw import top_p_filter
    probs = [0.5, 0.3, 0.15, 0.05]
    logits = torch.log(torch.tensor([probs], dtype=torch.float64))
    for top_p in (0.7, 0.01, 0.9, 0.99):
        kept = torch.isfinite(top_p_filter(logits, top_p, keep_boundary=keep_boundary, fill=float("-inf")))
        assert kept.tolist() == [nucleus_reference(probs, top_p, keep_boundary)], top_p
    assert torch.isfinite(top_p_filter(logits, 0.7, keep_boundary=keep_boundary,
                                       fill=float("-inf"))).tolist() == [[True, True, False, False]]


def test_top_p_boundary_per_family():
    """At an exact tie (mass before a token == top_p) the block schedule drops the token (smallest set of mass >=
    top_p; LLaDA's generate has no nucleus filter) and Dream's keeps it (`cumsum > top_p`, as Dream's top_p_logits),
    which also fills with the dtype's minimum instead of -inf."""
    from actors.sampling.draw import top_p_filter
    logits = torch.zeros(1, 4)  # four tokens of probability 0.25 exactly
    blocks = top_p_filter(logits, 0.5, keep_boundary=False, fill=float("-inf"))
    dream = top_p_filter(logits, 0.5, keep_boundary=True, fill=torch.finfo(torch.float32).min)
    assert int(torch.isfinite(blocks).sum()) == 2 == sum(nucleus_reference([0.25] * 4, 0.5, False))
    assert int((dream > torch.finfo(torch.float32).min).sum()) == 3 == sum(nucleus_reference([0.25] * 4, 0.5, True))
