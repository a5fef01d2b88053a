"""Prompt encoding (left-padded, as the sampler and S(x0) expect) and completion decoding (cut at the first EOS)."""
from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str], *, chat_template: bool = False,
                   pad_id: int | None = None, systems: list[str] | None = None,
                   prefills: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids int64 [B, P] left-padded, lengths int64 [B]). The lengths are what the denoiser's padding mask is built
    from (common.denoiser.padding_mask): pads are masked out of attention and positions start at the first real
    token. `systems`: a system message per prompt (chat template only; "" = none); `prefills`: text appended after
    the template (the start of the reply, e.g. the official evaluation's "<reasoning>")."""
    if chat_template:
        systems = systems or [""] * len(prompts)
        prompts = [tokenizer.apply_chat_template(([{"role": "system", "content": s}] if s else [])
                                                 + [{"role": "user", "content": p}], add_generation_prompt=True,
                                                 tokenize=False) for p, s in zip(prompts, systems)]
    elif systems and any(systems):
        raise ValueError("a prompt with a system message needs model.chat_template=true")
    if prefills:
        prompts = [p + f for p, f in zip(prompts, prefills)]
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    pad = tokenizer.pad_token_id if pad_id is None else pad_id
    if pad is None:
        pad = tokenizer.eos_token_id
    width = max(len(e) for e in encoded)
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], dtype=torch.long, device="cpu")
    return ids, torch.tensor([len(e) for e in encoded], dtype=torch.long, device="cpu")


def completion_mask(completion_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """bool [B, L]: positions up to and including the first EOS (all positions when a row has no EOS)."""
    is_eos = completion_ids == eos_id
    after_first = (is_eos.cumsum(dim=1) - is_eos.long()) > 0  # strictly after the first EOS
    return ~after_first


def decode_completions(tokenizer: PreTrainedTokenizerBase, completion_ids: torch.Tensor, eos_id: int) -> list[str]:
    """Text of each completion before its first EOS."""
    keep = completion_mask(completion_ids, eos_id) & (completion_ids != eos_id)
    return [tokenizer.decode(row[m].tolist(), skip_special_tokens=False) for row, m in zip(completion_ids, keep)]
