"""Denoiser adapter: the native model (common/models/) + tokenizer + mask/EOS ids + the logit shift.

`logits(input_ids, positions, attention_mask=...)` returns logits only where asked: the LM head (often the largest
GEMM of a small model) runs on the selected hidden states only; `logprob(...)` goes straight to float32 log p of given
tokens, chunk by chunk. Padding: `attention_mask` bool [B, T], True = real token (left pads False; None = all real);
positions are counted from each row's first real token, so a padded row equals the same row unpadded. Family,
mask/EOS ids and the shift come from config.json or our config, never from the model's name. No remote code: the
model is ours; transformers only provides the tokenizer and chat template.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, overload

import torch
import transformers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast, Qwen2Tokenizer

from common.models import DiffusionLM, build_model
from common.models.lora import LoRASpec, adapters_disabled, apply_lora, is_adapter

if TYPE_CHECKING:  # a type only: benchmarks/gpu_check.py imports this module where pydantic is absent
    from common.config import ModelConfig

log = logging.getLogger(__name__)
transformers.utils.logging.disable_progress_bar()

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@overload
def padding_mask(prompt_len: torch.Tensor, prompt_width: int, completion_len: int) -> torch.Tensor: ...
@overload
def padding_mask(prompt_len: None, prompt_width: int, completion_len: int) -> None: ...
def padding_mask(prompt_len: torch.Tensor | None, prompt_width: int, completion_len: int) -> torch.Tensor | None:
    """bool [B, P+L]: False on the left padding of each prompt (`prompt_len` [B] real tokens), True elsewhere;
    None when `prompt_len` is None (every token real)."""
    if prompt_len is None:
        return None
    positions = torch.arange(prompt_width + completion_len, device=prompt_len.device)
    return positions[None, :] >= (prompt_width - prompt_len)[:, None]


@dataclass
class Denoiser:
    """A bidirectional denoiser p(x0^n | x_t). Legend: B rows, T = P + L sequence, N selected, V vocab."""

    net: DiffusionLM  # the module to shard / train / sync
    tokenizer: PreTrainedTokenizerBase | None
    mask_id: int
    eos_id: int
    shift: bool  # Dream-style: position n predicted from hidden n-1
    adapters: bool = True  # False: the same net with its LoRA adapters off (the reference policy S_ref)

    @classmethod
    def wrap(cls, model: DiffusionLM, tokenizer: PreTrainedTokenizerBase | None, *, mask_id: int, eos_id: int,
             shift: bool) -> "Denoiser":
        return cls(net=model, tokenizer=tokenizer, mask_id=mask_id, eos_id=eos_id, shift=shift)

    def without_adapters(self) -> "Denoiser":
        """The reference policy of a LoRA model: the same weights (no copy) with the adapters switched off."""
        return dataclasses.replace(self, adapters=False)

    def _scope(self):
        return contextlib.nullcontext() if self.adapters else adapters_disabled(self.net)

    @property
    def model(self) -> DiffusionLM:
        return self.net

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def logits(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None, *,
               attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits predicting the token at each position: [B, T, V], or [N, V] for `positions` (bool [B, T]) in
        row-major order of the selected positions (the order of `positions.nonzero()`)."""
        with self._scope():
            return self.net(input_ids, positions, attention_mask=attention_mask, shift=self.shift)

    def logprob(self, input_ids: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor, *,
                attention_mask: torch.Tensor | None = None, chunk: int = 2048) -> torch.Tensor:
        """float32 [N]: log p(targets | input) at the N `positions` (bool [B, T], row-major), the head and
        log_softmax run `chunk` positions at a time (no [N, V] float32 logits held for backward)."""
        with self._scope():
            return self.net(input_ids, positions, attention_mask=attention_mask, shift=self.shift, targets=targets,
                            chunk=chunk)


def _first_not_none(*values):
    return next((v for v in values if v is not None), None)


@contextlib.contextmanager
def _quiet_transformers():
    level = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.utils.logging.set_verbosity(level)


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """The directory's tokenizer without remote code. Dream ships a custom `DreamTokenizer` class (remote code) that
    is a Qwen2 byte-level BPE: when transformers cannot resolve the class, the files are read as that."""
    try:
        # AutoTokenizer also parses config.json through transformers' config classes, which know neither family:
        # their warnings about it are noise here (the model is not built by transformers)
        with warnings.catch_warnings(), _quiet_transformers():
            warnings.simplefilter("ignore")
            return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except (ValueError, OSError, AttributeError, KeyError, TypeError) as err:
        log.info("model.path %s: AutoTokenizer failed (%s); reading the files as a fast / Qwen2 tokenizer", path, err)
    if (path / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        return Qwen2Tokenizer.from_pretrained(path, local_files_only=True)
    raise FileNotFoundError(f"model.path: {path} has no tokenizer this code can read without remote code "
                            "(tokenizer.json, or vocab.json + merges.txt)")


def load_denoiser(cfg: ModelConfig, path: str | Path | None = None, *, device: str | torch.device,
                  dtype: torch.dtype | None = None, adapter_dtype: torch.dtype | None = None) -> Denoiser:
    """Load a denoiser from a local checkpoint directory (`path` or cfg.path) in the official LLaDA or Dream layout
    onto `device`; never downloads, never runs the directory's code. Weights in `dtype` (default `model.dtype`);
    LoRA adapters (if enabled) in `adapter_dtype` (default: the weights' dtype; the learner keeps them float32)."""
    path = Path(path or cfg.path or "")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model.path: {str(path)!r} is not a local model directory (no config.json)")
    tokenizer = load_tokenizer(path)
    model = build_model(path, family=cfg.family, device=device, dtype=dtype or DTYPES[cfg.dtype])
    args = model.args
    mask_id = _first_not_none(cfg.mask_token_id, args.mask_token_id, tokenizer.mask_token_id)
    eos_id = _first_not_none(cfg.eos_token_id, args.eos_token_id, tokenizer.eos_token_id)
    if mask_id is None:
        raise ValueError(f"model.mask_token_id: {path} defines no mask token; set it in the config")
    if eos_id is None:
        raise ValueError(f"model.eos_token_id: {path} defines no EOS token; set it in the config")
    for key, value in (("mask_token_id", mask_id), ("eos_token_id", eos_id)):
        if not 0 <= int(value) < args.vocab_size:
            raise ValueError(f"model.{key}: {value} is outside the vocabulary of {path} ({args.vocab_size})")
    shift = bool(_first_not_none(cfg.logits_shift, args.shift))
    if cfg.lora.enabled:
        lcfg = cfg.lora
        apply_lora(model, LoRASpec(r=lcfg.r, alpha=lcfg.alpha, dropout=lcfg.dropout,
                                   targets=tuple(lcfg.target_modules)),
                   generator=torch.Generator(device="cpu").manual_seed(lcfg.init_seed))
        if adapter_dtype is not None:  # upcast after init: the values stay those of the weights' dtype (version 0
            for name, p in model.named_parameters():  # agrees bit for bit with the actors' adapters)
                if is_adapter(name):
                    p.data = p.data.to(adapter_dtype)
    return Denoiser(net=model, tokenizer=tokenizer, mask_id=int(mask_id), eos_id=int(eos_id), shift=shift)
