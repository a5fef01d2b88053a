"""learner/sft.py: the masked-diffusion SFT loss of the warm start, against a slow per-token reference."""
from __future__ import annotations

import pytest
import torch

from common.tasks import make_prompts
from learner.sft import T_MIN, encode_answers, sft_loss

GEN = 40


@pytest.fixture(scope="module")
def pairs():
    items = make_prompts(task="sudoku", prompt_format="compact", split="train", num=3, seed=2)
    return [it.prompt for it in items], [it.answer for it in items]


def test_answers_end_with_eos_and_are_eos_padded(denoiser, pairs):
    _, answers = pairs
    ids = encode_answers(denoiser, answers, GEN)
    assert ids.shape == (3, GEN)
    for row, answer in zip(ids, answers):
        n = len(denoiser.tokenizer(answer, add_special_tokens=False)["input_ids"])
        assert denoiser.tokenizer.decode(row[:n]) == answer
        assert (row[n:] == denoiser.eos_id).all()  # EOS, then EOS padding up to gen_length


def test_an_answer_too_long_is_named(denoiser):
    with pytest.raises(ValueError, match=r"sampler.gen_length=4 is shorter than an SFT answer .*'123456'"):
        encode_answers(denoiser, ["123456"], 4)


def test_an_empty_shard_is_an_error(denoiser):
    with pytest.raises(ValueError, match="learner.num_ranks"):
        sft_loss(denoiser, [], [], gen_length=GEN, chat_template=False, num_rows=2, generator=torch.Generator())


def test_loss_matches_a_per_token_reference(denoiser, pairs):
    prompts, answers = pairs
    assert len({len(p) for p in prompts}) == 1  # equal lengths: a row alone sees exactly what it sees in the batch
    loss, metrics = sft_loss(denoiser, prompts, answers, gen_length=GEN, chat_template=False, num_rows=5,
                             generator=torch.Generator().manual_seed(3))
    # the same draws, in the order the loss makes them: t per row, then one uniform per (row, position)
    g = torch.Generator().manual_seed(3)
    t = (1 - T_MIN) * torch.rand(3, generator=g) + T_MIN
    u = torch.rand(3, GEN, generator=g)
    target = encode_answers(denoiser, answers, GEN)
    total, tokens = 0.0, 0
    with torch.no_grad():
        for b, (prompt, answer) in enumerate(zip(prompts, answers)):
            prompt_ids = torch.tensor([denoiser.tokenizer(prompt, add_special_tokens=False)["input_ids"]])
            noisy = target[b].clone()
            masked = [n for n in range(GEN) if u[b, n] < t[b]]
            noisy[masked] = denoiser.mask_id
            logits = denoiser.logits(torch.cat([prompt_ids, noisy[None]], dim=1))[0, prompt_ids.shape[1]:]  # [L, V]
            for n in masked:  # cross-entropy of each masked token, weighted 1/t
                total += -float(torch.log_softmax(logits[n].double(), dim=-1)[target[b, n]]) / float(t[b])
            tokens += len(masked)
    assert metrics["tokens"] == tokens > 0
    assert float(loss.detach()) == pytest.approx(total / (GEN * 5), rel=1e-5)


def test_loss_has_a_gradient_and_a_seeded_draw(denoiser, pairs):
    prompts, answers = pairs
    kwargs = dict(gen_length=GEN, chat_template=False, num_rows=3)
    a, _ = sft_loss(denoiser, prompts, answers, generator=torch.Generator().manual_seed(1), **kwargs)
    b, _ = sft_loss(denoiser, prompts, answers, generator=torch.Generator().manual_seed(1), **kwargs)
    c, _ = sft_loss(denoiser, prompts, answers, generator=torch.Generator().manual_seed(2), **kwargs)
    assert torch.equal(a, b) and not torch.equal(a, c)
    a.backward()
    grads = [p.grad for p in denoiser.model.parameters() if p.grad is not None]
    assert grads and any(bool(g.abs().sum() > 0) for g in grads)
    denoiser.model.zero_grad(set_to_none=True)
