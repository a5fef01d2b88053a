"""Denoiser adapter: one interface over LLaDA-style (unshifted), Dream-style (shifted) and the tiny built-in model.

`logits(input_ids, positions)` returns logits only where asked: the LM head (often the largest GEMM of a small
model) runs on the selected hidden states only. Mask/EOS ids and the shift come from config or the model config,
never from the model's name.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from common.config import ModelConfig

log = logging.getLogger(__name__)
transformers.utils.logging.disable_progress_bar()

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class SelectiveLogits(nn.Module):
    """Wraps an HF model: body forward, then the LM head only at the selected positions.

    Being one module whose forward does both, it can be the FSDP2 root: every parameter (embeddings, final norm,
    head, tied or not) is gathered by the root's hooks, which calling `model.get_decoder()` directly would skip.
    """

    def __init__(self, model: nn.Module, *, shift: bool) -> None:
        super().__init__()
        self.model, self.shift = model, shift
        self.split_head = (getattr(model, "get_decoder", lambda: None)() is not None
                           and model.get_output_embeddings() is not None and self._split_matches_full())
        if not self.split_head:
            log.warning("model %s: cannot run the LM head on selected positions only; using full logits",
                        type(model).__name__)

    def _split_matches_full(self) -> bool:
        """Body + head must reproduce the model's own logits (a model may scale or soft-cap after its head)."""
        ids = torch.zeros((1, 4), dtype=torch.long, device=next(self.model.parameters()).device)
        with torch.no_grad():
            full = self.model(input_ids=ids).logits
            split = self.model.get_output_embeddings()(self.model.get_decoder()(input_ids=ids).last_hidden_state)
        return torch.allclose(full.float(), split.float(), rtol=1e-3, atol=1e-3)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        if not self.split_head:
            full = self.model(input_ids=input_ids).logits  # [B, T, V]
            if self.shift:
                full = torch.cat([full[:, :1], full[:, :-1]], dim=1)
            return full if positions is None else full[positions]
        # no attention mask ever: LLaDA turns any mask containing a 0 into a causal mask
        h = self.model.get_decoder()(input_ids=input_ids).last_hidden_state  # [B, T, H]
        if self.shift:
            h = torch.cat([h[:, :1], h[:, :-1]], dim=1)  # position n is read from hidden n-1 (n=0 reads itself)
        if positions is not None:
            h = h[positions]  # [N, H]; a device->host sync (the count N is data dependent)
        return self.model.get_output_embeddings()(h)


@dataclass
class Denoiser:
    """A bidirectional denoiser p(x0^n | x_t). Legend: B rows, T = P + L sequence, H hidden, V vocab, N selected."""

    net: SelectiveLogits  # the module to shard / train; net.model is the HF model
    tokenizer: PreTrainedTokenizerBase | None
    mask_id: int
    eos_id: int

    @classmethod
    def wrap(cls, model: nn.Module, tokenizer: PreTrainedTokenizerBase | None, *, mask_id: int, eos_id: int,
             shift: bool) -> "Denoiser":
        return cls(net=SelectiveLogits(model, shift=shift), tokenizer=tokenizer, mask_id=mask_id, eos_id=eos_id)

    @property
    def model(self) -> nn.Module:
        return self.net.model

    @property
    def shift(self) -> bool:
        return self.net.shift

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def logits(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Logits predicting the token at each position: [B, T, V], or [N, V] for `positions` (bool [B, T]) in
        row-major order of the selected positions (the order of `positions.nonzero()`)."""
        return self.net(input_ids, positions)


def _first_not_none(*values):
    return next((v for v in values if v is not None), None)


def load_denoiser(cfg: ModelConfig, path: str | Path | None = None, *, device: str | torch.device = "cpu") -> Denoiser:
    """Load a denoiser from a local HF directory (`path` or cfg.path); never downloads from a hub."""
    path = Path(path or cfg.path or "")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model.path: {str(path)!r} is not a local HF model directory (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=cfg.trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, trust_remote_code=cfg.trust_remote_code,
                                                 dtype=DTYPES[cfg.dtype]).to(device)
    model.eval()
    mconf = model.config
    mask_id = _first_not_none(cfg.mask_token_id, getattr(mconf, "mask_token_id", None), tokenizer.mask_token_id)
    eos_id = _first_not_none(cfg.eos_token_id, tokenizer.eos_token_id, getattr(mconf, "eos_token_id", None))
    if mask_id is None:
        raise ValueError(f"model.mask_token_id: {path} defines no mask token; set it in the config")
    if eos_id is None:
        raise ValueError(f"model.eos_token_id: {path} defines no EOS token; set it in the config")
    if isinstance(eos_id, list):
        eos_id = eos_id[0]
    shift = bool(_first_not_none(cfg.logits_shift, getattr(mconf, "logits_shift", None), False))
    return Denoiser.wrap(model, tokenizer, mask_id=int(mask_id), eos_id=int(eos_id), shift=shift)
