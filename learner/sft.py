"""SFT warm start: masked-diffusion cross-entropy on (prompt, answer) pairs (LLaDA's SFT objective).

Each answer is tokenized, followed by EOS and EOS-padded to the sampler's gen_length (so the model learns where to
stop, as the official recipe pads with EOS). Per row t ~ U(eps, 1); each answer token is masked with probability t;
loss = sum over masked tokens of CE / t, divided by L: the 1/t-weighted ELBO. The prompt is never masked.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from common.denoiser import Denoiser, padding_mask
from common.tokenize import encode_prompts
from learner.state import WorkerState

T_MIN = 1e-3  # LLaDA: p_mask = (1 - eps) t + eps


def encode_answers(denoiser: Denoiser, answers: list[str], gen_length: int) -> torch.Tensor:
    """int64 [B, L]: answer tokens, EOS, EOS padding. An answer too long for gen_length raises, naming it."""
    tokenizer = denoiser.tokenizer
    if tokenizer is None:
        raise ValueError("SFT warm start: the model has no tokenizer (model.path holds none)")
    rows = []
    for answer in answers:
        ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [denoiser.eos_id]
        if len(ids) > gen_length:
            raise ValueError(f"sampler.gen_length={gen_length} is shorter than an SFT answer ({len(ids)} tokens "
                             f"with EOS): {answer[:60]!r}")
        rows.append(ids + [denoiser.eos_id] * (gen_length - len(ids)))
    return torch.tensor(rows, dtype=torch.long, device="cpu")


def sft_loss(denoiser: Denoiser, prompts: list[str], answers: list[str], *, gen_length: int, chat_template: bool,
             num_rows: int, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss normalised by `num_rows` global rows, {"tokens": masked tokens scored})."""
    if not prompts:
        raise ValueError("sft batch: every learner rank needs at least one row (batch size < learner.num_ranks)")
    device = denoiser.device
    prompt_ids, prompt_len = encode_prompts(denoiser.tokenizer, prompts, chat_template=chat_template)  # [B, P], [B]
    target = encode_answers(denoiser, answers, gen_length)  # [B, L]
    B, L = target.shape
    t = (1 - T_MIN) * torch.rand(B, generator=generator, device="cpu") + T_MIN  # [B]
    masked = torch.rand(B, L, generator=generator, device="cpu") < t[:, None]  # [B, L]
    inputs = torch.cat([prompt_ids, torch.where(masked, denoiser.mask_id, target)], dim=1).to(device)
    read = torch.cat([torch.zeros_like(prompt_ids, dtype=torch.bool), masked], dim=1).to(device)
    attention = padding_mask(prompt_len, prompt_ids.shape[1], L).to(device)  # [B, P+L]: left pads unseen
    ce = -denoiser.logprob(inputs, read, target[masked].to(device), attention_mask=attention)  # [N] float32
    weight = (1.0 / t)[:, None].expand(B, L)[masked].to(device)  # [N]: 1/t of each token's row
    loss = (ce * weight).sum() / (L * num_rows)
    return loss, {"tokens": float(masked.sum())}


class SFTStep(WorkerState):
    """The SFT warm start's optimizer step (a mixin of LearnerWorker, learner/worker.py: it uses the worker's
    denoiser, generator and `_optimizer_step`); every rank gets the same pairs and takes its shard of them."""

    def sft_step(self, prompts: list[str], answers: list[str]) -> dict[str, float]:
        """One optimizer step of masked-diffusion SFT on (prompt, answer) pairs; every rank gets the same list."""
        shard = slice(self.rank, None, self.world_size)
        loss, metrics = sft_loss(self.denoiser, prompts[shard], answers[shard],
                                 gen_length=self.cfg.sampler.gen_length, chat_template=self.cfg.model.chat_template,
                                 num_rows=len(prompts), generator=self.generator)
        (loss * self.world_size).backward()
        grad_norm = self._optimizer_step()
        values = torch.stack([loss.detach().double(),
                              torch.tensor(metrics["tokens"], dtype=torch.float64, device=self.device)])
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        loss_sum, tokens = values.tolist()  # one device -> host sync
        return {"loss": loss_sum, "tokens": tokens, "grad_norm": float(grad_norm)}
