"""One bidirectional transformer for LLaDA and Dream, in plain PyTorch (nanoGPT / torchtitan style).

Pre-norm blocks: x += Wo SDPA(RoPE(Wq RMSNorm(x)), RoPE(Wk .), Wv .); x += Wdown (silu(Wgate RMSNorm(x)) * Wup .).
RMSNorm and RoPE are computed in float32 and cast back (LLaDA `rope_full_precision`, Qwen2 RMSNorm), so a bf16 model
differs from fp32 only by its matmuls. Attention is non-causal; padding is a boolean key mask and positions count from
each row's first real token (Dream's generation numbers them that way), so a left-padded row gives the same logits as
the same row unpadded. Body and head are separate modules: the head runs on the selected positions only.
Legend: B rows, T sequence, H hidden, Hq/Hkv heads, D head dim, N selected positions, V vocab.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from common.models.args import ModelArgs
from common.models.lora import LoRASpec, bind_row_seeds


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))  # device: the construction context's (meta, then to_empty)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x / sqrt(mean(x^2) + eps) in float32 (F.rms_norm without weight: one fused pass on CPU and GPU)
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        if torch.is_grad_enabled() or self.weight.dtype != x.dtype:
            return self.weight * normed.to(x.dtype)  # official order: cast back, then scale
        # no-grad fast path (sampling): the same product written into the fresh `normed`, one pass less (only when
        # the weight has x's dtype: otherwise the product would promote to another dtype than in-place gives)
        return normed.to(x.dtype).mul_(self.weight)


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """int64 [B, T]: 0 at each row's first real token, counting real tokens (pads get 0; they are never attended)."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp_min(0)


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) float32 [B, 1, T, D/2] of rotate-half RoPE, angle_i = position * theta^(-2i/D); the official
    tables repeat these twice along D (cat(freqs, freqs)), which apply_rope uses for both halves."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    angles = (positions.float()[..., None] * inv_freq)[:, None]  # [B, 1, T, D/2]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin with rotate_half(x) = cat(-x2, x1), in float32, written per half."""
    x32 = x.float()  # [B, h, T, D]
    x1, x2 = x32.chunk(2, dim=-1)
    if not torch.is_grad_enabled():
        # no-grad fast path (sampling): the same ops written straight into the two halves of one contiguous output
        # (what cat returns), no temporaries and no cat
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        first, second = out.chunk(2, dim=-1)
        torch.mul(x1, cos, out=first).addcmul_(x2, sin, value=-1.0)
        torch.mul(x2, cos, out=second).addcmul_(x1, sin)
        return out.to(x.dtype)
    first = torch.addcmul(x1 * cos, x2, sin, value=-1.0)  # x1 cos - x2 sin
    second = torch.addcmul(x2 * cos, x1, sin)  # x2 cos + x1 sin
    return torch.cat([first, second], dim=-1).to(x.dtype)


class Block(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        q_dim, kv_dim = args.n_heads * args.head_dim, args.n_kv_heads * args.head_dim
        self.attn_norm = RMSNorm(args.dim, args.norm_eps)
        self.wq = nn.Linear(args.dim, q_dim, bias=args.qkv_bias)
        self.wk = nn.Linear(args.dim, kv_dim, bias=args.qkv_bias)
        self.wv = nn.Linear(args.dim, kv_dim, bias=args.qkv_bias)
        self.wo = nn.Linear(q_dim, args.dim, bias=False)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)
        self.w_gate = nn.Linear(args.dim, args.ffn_dim, bias=False)
        self.w_up = nn.Linear(args.dim, args.ffn_dim, bias=False)
        self.w_down = nn.Linear(args.ffn_dim, args.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                key_mask: torch.Tensor | None, lora_seeds: torch.Tensor | None = None) -> torch.Tensor:
        # LoRA dropout seeds arrive as an argument so a checkpointed block recomputes the same draws (lora.py)
        bind_row_seeds(self, lora_seeds)
        try:
            return self._forward(x, cos, sin, key_mask)
        finally:
            bind_row_seeds(self, None)

    def _forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 key_mask: torch.Tensor | None) -> torch.Tensor:
        B, T, _ = x.shape
        h = self.attn_norm(x)
        q = self.wq(h).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # [B, Hq, T, D]
        k = self.wk(h).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, T, D]
        v = self.wv(h).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, T, D]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, is_causal=False,
                                           enable_gqa=self.n_kv_heads != self.n_heads)  # [B, Hq, T, D]
        x = x + self.wo(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))
        h = self.ffn_norm(x)
        if torch.is_grad_enabled():  # training: autograd needs the intermediates
            return x + self.w_down(F.silu(self.w_gate(h)) * self.w_up(h))
        # no-grad fast path (sampling): the same numbers in place, into tensors this block just made (x is the sum
        # above, not the caller's input); saves two [B, T, F] and one [B, T, H] allocations and passes per block
        return x.add_(self.w_down(F.silu(self.w_gate(h), inplace=True).mul_(self.w_up(h))))


class Body(nn.Module):
    """Embedding, blocks, final norm: input ids [B, T] -> hidden states [B, T, H]."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.embed = nn.Embedding(args.vocab_size, args.dim)
        self.blocks = nn.ModuleList(Block(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.activation_checkpointing = False  # recompute each block in backward (learner.activation_checkpointing)
        self.lora_row_seeds: torch.Tensor | None = None  # set by common.models.lora.lora_dropout

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T = input_ids.shape
        key_mask = None
        if attention_mask is None:
            positions = torch.arange(T, device=input_ids.device).expand(B, T)
        else:
            positions = positions_from_mask(attention_mask)
            # always the masked kernel when a mask is given, even if nothing is padded: a row's numbers must not
            # depend on which rows share its batch (actor S_old vs learner S_theta: docs/design.md, "Numerical traps")
            key_mask = attention_mask[:, None, None, :]  # [B, 1, 1, T]: every query sees only real keys
        cos, sin = rope_tables(positions, self.args.head_dim, self.args.rope_theta)
        x = self.embed(input_ids)  # [B, T, H]
        for block in self.blocks:
            if self.activation_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, cos, sin, key_mask, self.lora_row_seeds, use_reentrant=False)
            else:
                x = block(x, cos, sin, key_mask, self.lora_row_seeds)
        return self.norm(x)


class DiffusionLM(nn.Module):
    """Body + LM head. The forward does both (so the module can be the FSDP2 root: every parameter is gathered by
    its hooks) but applies the head only at `positions`, optionally straight to log p(target) chunk by chunk."""

    lora_spec: LoRASpec  # set by common.models.lora.apply_lora, on a model with adapters only

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.source_dir: str | None = None  # the checkpoint directory it was loaded from (export copies its files)
        self.body = Body(args)
        self.head = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.tied:
            self.head.weight = self.body.embed.weight

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None, *,
                attention_mask: torch.Tensor | None = None, shift: bool | None = None,
                targets: torch.Tensor | None = None, chunk: int = 2048) -> torch.Tensor:
        """Logits [B, T, V] (or [N, V] at bool `positions` [B, T], row-major); with `targets` [N] instead float32
        log p(targets) [N], the head + log_softmax run `chunk` positions at a time (recomputed in backward), so
        neither [N, V] nor [B, T, V] float32 logits are ever held."""
        h = self.body(input_ids, attention_mask)  # [B, T, H]
        if self.args.shift if shift is None else shift:
            h = torch.cat([h[:, :1], h[:, :-1]], dim=1)  # position n is read from hidden n-1 (n=0 reads itself)
        if positions is not None:
            h = h[positions]  # [N, H]; a device->host sync (the count N is data dependent)
        if targets is None:
            return self.head(h)
        parts = []
        for lo in range(0, h.shape[0], chunk):
            h_c, t_c = h[lo:lo + chunk], targets[lo:lo + chunk]
            if torch.is_grad_enabled() and h_c.requires_grad:
                parts.append(checkpoint(self._target_logprob, h_c, t_c, use_reentrant=False))
            else:
                parts.append(self._target_logprob(h_c, t_c))
        # no rows (a rank's empty micro-batch): still through the head, so the zero loss reaches every parameter and
        # the backward runs the same FSDP collectives as on the other ranks
        return torch.cat(parts) if parts else self._target_logprob(h, targets)

    def _target_logprob(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.head(h).float()  # [n, V] float32, one chunk only
        return (logits.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1))  # [n]
