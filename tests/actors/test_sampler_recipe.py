"""The paper recipe's sampler options: Dream's schedule against a one-row reference that follows Dream's
generation_utils.py `_sample` line by line, and the Gumbel precision option (`sampler.gumbel_dtype`)."""
import pytest
import torch

from actors.sampling import sample
from actors.sampling.blocks import gumbel_argmax
from actors.sampling.dream import reveal_counts
from common.config import ConfigError, SamplerConfig, load_config
from common.denoiser import Denoiser
from common.tokenize import encode_prompts


def dream_reference_one_row(den: Denoiser, prompt: torch.Tensor, *, gen_length: int, steps: int, alg: str,
                            eps: float = 1e-3, top_k: int | None = None, draw_mask: bool = False,
                            dtype: torch.dtype = torch.float32) -> tuple[list[int], list[int]]:
    """Greedy Dream `diffusion_generate` (alg_temp 0, top_p 1, T 0) for one row, written as Dream writes it:
    x == mask_id decides what is masked, full-vocab logits at every position, shifted for Dream-style models;
    `top_k` as Dream's top_k_logits (what the official GDSD calls inherit: 50)."""
    P = prompt.shape[0]
    x = torch.cat([prompt, torch.full((gen_length,), den.mask_id)])[None]  # [1, T]
    steps_of = [-1] * gen_length
    timesteps = torch.linspace(1, eps, steps + 1)
    for i in range(steps):
        mask_index = x == den.mask_id
        with torch.no_grad():
            logits = den.model(x, shift=False)  # [1, T, V], unshifted: the reference shifts itself below
        if den.shift:
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        if not draw_mask:
            logits[..., den.mask_id] = float("-inf")  # the project's other rule: a MASK is never drawn
        mask_logits = logits[mask_index].to(dtype)  # Dream: its bf16 logits as they come
        if top_k is not None:  # below the k-th largest -> the dtype's minimum (written with sort, not topk)
            kth = mask_logits.sort(dim=-1, descending=True).values[:, top_k - 1:top_k]
            mask_logits = torch.where(mask_logits < kth, torch.finfo(mask_logits.dtype).min, mask_logits)
        probs = torch.softmax(mask_logits, dim=-1)
        confidence, x0 = probs.max(dim=-1)  # maskgit_plus at T = 0
        if alg == "topk_margin":
            top = torch.sort(probs, dim=-1, descending=True).values
            confidence = top[:, 0] - top[:, 1]
        elif alg == "entropy":
            confidence = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
        t, s = timesteps[i], timesteps[i + 1]
        num_mask_token = mask_index.sum() / mask_index.shape[0]
        number_transfer_tokens = int(num_mask_token * (1 - s / t)) if i < steps - 1 else int(num_mask_token)
        full_confidence = torch.full_like(x, -torch.inf, dtype=confidence.dtype)  # Dream: the logits dtype
        full_confidence[mask_index] = confidence
        if number_transfer_tokens > 0:
            _, transfer_index = torch.topk(full_confidence, number_transfer_tokens)
            x_ = torch.zeros_like(x) + den.mask_id
            x_[mask_index] = x0.clone()
            for j in transfer_index[0].tolist():
                x[0, j] = x_[0, j]
                if x_[0, j] != den.mask_id:  # Dream's rule: a drawn MASK is still masked at the next step
                    steps_of[j - P] = i
    return x[0, P:].tolist(), steps_of


def llada_official_one_row(den: Denoiser, prompt: torch.Tensor, cfg: SamplerConfig,
                           dtype: torch.dtype = torch.float32) -> tuple[list[int], list[int], int]:
    """Greedy LLaDA `generate` as GDSD's evaluation and rollouts call it, one row: x == mask_id decides what is
    masked; argmax and softmax over the whole vocabulary, MASK included; confidence -inf from the block's end on;
    topk over the row; a drawn MASK leaves the position masked; the softmax in `dtype` (GDSD's rollouts:
    `F.softmax(logits.to(model.dtype))`, its evaluation: float32 under autocast). Returns (tokens, step that set each
    position to a non-MASK token or -1, MASK draws)."""
    P, L = prompt.shape[0], cfg.gen_length
    x = torch.cat([prompt, torch.full((L,), den.mask_id)])[None]  # [1, T]
    steps_of, mask_draws, step = [-1] * L, 0, 0
    blocks = L // cfg.block_length
    per_block = cfg.steps // blocks
    for b in range(blocks):
        end = P + (b + 1) * cfg.block_length
        n = int((x[0, end - cfg.block_length:end] == den.mask_id).sum())
        counts = [n // per_block + (1 if i < n % per_block else 0) for i in range(per_block)]
        for k in counts:
            mask_index = x == den.mask_id
            with torch.no_grad():
                logits = den.net(x, shift=False)  # [1, T, V]
            if den.shift:
                logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
            x0 = logits.argmax(dim=-1)
            x0_p = logits.to(dtype).softmax(dim=-1).gather(-1, x0[..., None]).squeeze(-1)
            x0_p[:, end:] = float("-inf")
            x0 = torch.where(mask_index, x0, x)
            conf = torch.where(mask_index, x0_p, torch.tensor(float("-inf")))
            if k > 0:
                for j in conf[0].topk(k).indices.tolist():
                    if not mask_index[0, j]:
                        continue
                    x[0, j] = x0[0, j]
                    if x0[0, j] == den.mask_id:
                        mask_draws += 1
                    else:
                        steps_of[j - P] = step
            step += 1
    return x[0, P:].tolist(), steps_of, mask_draws


class MaskFirst(torch.nn.Module):
    """A model that ranks MASK first where told. Completion position 1: MASK's logit = the best other + 3 (a confident
    MASK) while more than half of the row's completion is masked, so it draws MASK, stays masked, and is filled once
    the rest has progressed (in a later block). The last position: flat logits with MASK 0.5 above (the least
    confident position, drawn last, as MASK: the completion ends with it)."""

    def __init__(self, inner: torch.nn.Module, mask_id: int, gen_length: int, layout_shift: bool):
        super().__init__()
        self.inner, self.mask_id, self.L, self.layout_shift = inner, mask_id, gen_length, layout_shift

    def forward(self, input_ids, positions=None, *, attention_mask=None, shift=None):
        # the rule is written on unshifted logits; the shift (Dream layout) comes after, as the native model's
        logits = self.inner(input_ids, None, attention_mask=attention_mask, shift=False).clone()  # [B, T, V]
        T = logits.shape[1]
        others = logits.clone()
        others[..., self.mask_id] = float("-inf")
        # the completion index each unshifted logit will predict (Dream layout: the next one); equal-length prompts
        j = torch.arange(T) - (T - self.L) + int(self.layout_shift)
        many = (input_ids[:, T - self.L:] == self.mask_id).sum(dim=1) > self.L // 2  # [B]
        first = (j == 1)[None] & many[:, None]  # [B, T]
        logits[..., self.mask_id] = torch.where(first, others.max(dim=-1).values + 3, logits[..., self.mask_id])
        last = int((j == self.L - 1).nonzero())
        logits[:, last] = 0.0
        logits[:, last, self.mask_id] = 0.5
        if shift:
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        return logits if positions is None else logits[positions]


@pytest.fixture(scope="module")
def decisive(denoiser):
    """The tiny model with every matrix redrawn N(0, 0.5^2) (seeded): a fresh tiny model gives every masked position
    nearly the same distribution, so confidences tie to 1e-6 and the reveal order is decided by rounding."""
    import copy

    model = copy.deepcopy(denoiser.model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)

    def view(shift: bool) -> Denoiser:
        return Denoiser.wrap(model, denoiser.tokenizer, mask_id=denoiser.mask_id, eos_id=denoiser.eos_id, shift=shift)

    return view


def test_dream_reveal_counts_follow_the_timesteps():
    # Dream, L = 256, 64 steps: int(m (1 - s/t)) per step, the rest at the last step
    counts = reveal_counts(256, 64)
    assert sum(counts) == 256 and len(counts) == 64
    assert counts[0] == 3 and counts[-1] == 5 and set(counts[1:-1]) == {4}
    assert reveal_counts(10, 20).count(0) > 0 and sum(reveal_counts(10, 20)) == 10


@pytest.mark.parametrize("alg", ["entropy", "maskgit_plus", "topk_margin"])
@pytest.mark.parametrize("shift", [True, False])
@pytest.mark.parametrize("gen_length,steps", [(16, 8), (12, 5), (6, 9)])
def test_dream_greedy_matches_one_row_reference(decisive, alg, shift, gen_length, steps):
    den = decisive(shift)
    cfg = SamplerConfig(gen_length=gen_length, steps=steps, temperature=0.0, remasking=alg, schedule="dream",
                        block_length=7)  # block_length is unused by the dream schedule
    prompts = ["sudoku 0120000000004300\n", "countdown 1,2,3 -> 6\n"]  # equal-length rows: pads are not ours here
    ids, _ = encode_prompts(den.tokenizer, prompts)
    out = sample(den, ids, cfg)
    for row in range(len(prompts)):
        tokens, steps_of = dream_reference_one_row(den, ids[row], gen_length=gen_length, steps=steps, alg=alg)
        assert out.completion_ids[row].tolist() == tokens
        assert out.reveal_step[row].tolist() == steps_of


@pytest.mark.parametrize("alg", ["entropy", "maskgit_plus"])
def test_dream_top_k_matches_one_row_reference(decisive, alg):
    """sampler.top_k filters before the softmax that orders the reveals (Dream's sample_tokens); k = 3 on the tiny
    vocabulary changes the entropy order, so the test fails if the filter is skipped or misplaced."""
    den = decisive(True)
    prompts = ["sudoku 0120000000004300\n", "countdown 1,2,3 -> 6\n"]
    ids, _ = encode_prompts(den.tokenizer, prompts)
    changed = 0
    for top_k in (3, 50):
        cfg = SamplerConfig(gen_length=16, steps=8, temperature=0.0, remasking=alg, schedule="dream", top_k=top_k)
        out = sample(den, ids, cfg)
        plain = sample(den, ids, cfg.model_copy(update={"top_k": None}))
        changed += int(not torch.equal(out.reveal_step, plain.reveal_step))
        for row in range(len(prompts)):
            tokens, steps_of = dream_reference_one_row(den, ids[row], gen_length=16, steps=8, alg=alg, top_k=top_k)
            assert out.completion_ids[row].tolist() == tokens
            assert out.reveal_step[row].tolist() == steps_of
    if alg == "entropy":
        assert changed, "top_k = 3 must change the entropy reveal order on this model"


def test_top_k_is_refused_on_the_block_schedule():
    with pytest.raises(ConfigError, match="top_k"):
        load_config(None, ["sampler.top_k=50"])
    assert load_config(None, ["sampler.top_k=50", "sampler.schedule=dream"]).sampler.top_k == 50


def test_dream_sampling_with_temperature_and_top_p(denoiser):
    cfg = SamplerConfig(gen_length=24, steps=12, temperature=1.0, top_p=0.95, remasking="entropy", schedule="dream")
    ids, _ = encode_prompts(denoiser.tokenizer, ["hi\n"] * 3)
    a = sample(denoiser, ids, cfg, torch.Generator().manual_seed(3))
    b = sample(denoiser, ids, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a.completion_ids, b.completion_ids), "seeded: a pure function of the generator"
    assert (a.reveal_step >= 0).all() and (a.completion_ids != denoiser.mask_id).all()
    assert torch.equal(a.reveal_step.sort(dim=1).values[0],
                       torch.tensor([i for i, k in enumerate(reveal_counts(24, 12)) for _ in range(k)],
                                    dtype=torch.int32))


def test_dream_rejects_random_alg(denoiser):
    cfg = SamplerConfig(gen_length=8, steps=4, temperature=0.0, remasking="random", schedule="dream")
    ids, _ = encode_prompts(denoiser.tokenizer, ["hi\n"])
    with pytest.raises(ValueError, match="not a Dream alg"):
        sample(denoiser, ids, cfg)


def test_dream_schedule_ignores_block_divisibility():
    assert SamplerConfig(gen_length=10, steps=7, block_length=4, schedule="dream").steps == 7
    with pytest.raises(ConfigError, match="block_length"):
        load_config(None, ["sampler.gen_length=10", "sampler.block_length=4"])


def test_low_precision_gumbel_noise_sharpens_sampling():
    """Official GDSD rollouts draw Gumbel noise in the model dtype (bf16); LLaDA's generate.py uses float64. On a
    V = 8192 toy, float64 noise samples the top token at its exact probability, bf16 noise far more often."""
    V, draws = 8192, 2000
    logits = torch.randn(V, generator=torch.Generator().manual_seed(0)) * 1.5
    exact = float(logits.double().softmax(-1).max())
    top = int(logits.argmax())
    freq = {}
    for dtype in (torch.float64, torch.bfloat16):
        gen = torch.Generator().manual_seed(1)
        hits = sum(int((gumbel_argmax(logits.expand(500, V), 1.0, gen, dtype) == top).sum())
                   for _ in range(draws // 500))
        freq[dtype] = hits / draws
    se = (exact * (1 - exact) / draws) ** 0.5
    assert abs(freq[torch.float64] - exact) < 4 * se, (freq, exact)
    assert freq[torch.bfloat16] > 2.5 * exact, (freq, exact)  # measured: 0.067 vs exact 0.018


def test_gumbel_dtype_model_uses_the_weights_dtype(denoiser):
    from actors.sampling.draw import noise_dtype

    assert noise_dtype(denoiser, SamplerConfig(gumbel_dtype="float64")) == torch.float64
    assert noise_dtype(denoiser, SamplerConfig(gumbel_dtype="model")) == next(denoiser.model.parameters()).dtype


def mask_first(den: Denoiser, gen_length: int) -> Denoiser:
    return Denoiser.wrap(MaskFirst(den.net, den.mask_id, gen_length, den.shift), den.tokenizer, mask_id=den.mask_id,
                         eos_id=den.eos_id, shift=den.shift)


PROMPTS = ["sudoku 0120000000004300\n", "countdown 1,2,3 -> 60\n"]  # equal length: no pads


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("ranks_mask_first", [False, True])
def test_blocks_draw_mask_match_the_official_loop(decisive, shift, ranks_mask_first):
    """sampler.draw_mask: LLaDA's loop as GDSD calls it, MASK in the vocabulary; on the MaskFirst model MASK is drawn,
    stays masked and is filled in a later block; the last position ends as MASK."""
    den = decisive(shift)
    den = mask_first(den, 16) if ranks_mask_first else den
    cfg = SamplerConfig(gen_length=16, steps=8, block_length=8, temperature=0.0, remasking="low_confidence",
                        draw_mask=True)
    ids, _ = encode_prompts(den.tokenizer, PROMPTS)
    out = sample(den, ids, cfg)
    draws = late = 0
    for row in range(len(PROMPTS)):
        tokens, steps_of, mask_draws = llada_official_one_row(den, ids[row], cfg)
        draws += mask_draws
        assert out.completion_ids[row].tolist() == tokens
        assert out.reveal_step[row].tolist() == steps_of
        late += sum(steps_of[j] >= 4 for j in range(8))  # block 0 positions filled during block 1
        if ranks_mask_first:
            assert tokens[-1] == den.mask_id and steps_of[-1] == -1
    assert (draws > 0) == ranks_mask_first and (late > 0) == ranks_mask_first
    excluded = sample(den, ids, cfg.model_copy(update={"draw_mask": False}))
    assert (excluded.completion_ids != den.mask_id).all() and (excluded.reveal_step >= 0).all()


@pytest.mark.parametrize("alg", ["entropy", "maskgit_plus"])
@pytest.mark.parametrize("ranks_mask_first", [False, True])
def test_dream_draw_mask_matches_one_row_reference(decisive, alg, ranks_mask_first):
    den = decisive(True)
    den = mask_first(den, 16) if ranks_mask_first else den
    cfg = SamplerConfig(gen_length=16, steps=8, temperature=0.0, remasking=alg, schedule="dream", draw_mask=True,
                        top_k=50)
    ids, _ = encode_prompts(den.tokenizer, PROMPTS)
    out = sample(den, ids, cfg)
    for row in range(len(PROMPTS)):
        tokens, steps_of = dream_reference_one_row(den, ids[row], gen_length=16, steps=8, alg=alg, top_k=50,
                                                   draw_mask=True)
        assert out.completion_ids[row].tolist() == tokens
        assert out.reveal_step[row].tolist() == steps_of
        if ranks_mask_first:
            assert tokens[-1] == den.mask_id and steps_of[-1] == -1


@pytest.fixture(scope="module")
def fresh_bf16(denoiser):
    """The fresh tiny model in bfloat16 (as the paper's checkpoints run): its confidences are near-ties, where the
    softmax precision decides the order."""
    import copy

    den = denoiser
    model = copy.deepcopy(den.net).to(torch.bfloat16)

    def view(shift: bool) -> Denoiser:
        return Denoiser.wrap(model, den.tokenizer, mask_id=den.mask_id, eos_id=den.eos_id, shift=shift)

    return view


def test_confidence_dtype_model_matches_the_official_rollout_loops(fresh_bf16):
    """sampler.confidence_dtype: model = GDSD's LLaDA rollouts (softmax(logits.to(bf16))) and Dream's sample_tokens
    on its bf16 logits; float32 = the softmax in float32. Each against its one-row reference; the two precisions
    must give different reveals somewhere, or the option would do nothing."""
    ids, _ = encode_prompts(fresh_bf16(False).tokenizer, PROMPTS)
    differ = 0
    for shift, schedule in ((False, "blocks"), (True, "dream")):
        den = fresh_bf16(shift)
        outs = {}
        for name, dtype in (("float32", torch.float32), ("model", torch.bfloat16)):
            extra = {"block_length": 8} if schedule == "blocks" else {"remasking": "entropy", "top_k": 50}
            cfg = SamplerConfig(gen_length=16, steps=8, temperature=0.0, schedule=schedule, draw_mask=True,
                                confidence_dtype=name, **extra)
            out = outs[name] = sample(den, ids, cfg)
            for row in range(len(PROMPTS)):
                if schedule == "blocks":
                    tokens, steps_of, _ = llada_official_one_row(den, ids[row], cfg, dtype)
                else:
                    tokens, steps_of = dream_reference_one_row(den, ids[row], gen_length=16, steps=8, alg="entropy",
                                                               top_k=50, draw_mask=True, dtype=dtype)
                assert out.completion_ids[row].tolist() == tokens, (schedule, name)
                assert out.reveal_step[row].tolist() == steps_of, (schedule, name)
        differ += int(not torch.equal(outs["float32"].reveal_step, outs["model"].reveal_step))
    assert differ, "bf16 and float32 confidences gave the same reveals on both schedules"
