"""What several benchmarks share, in one place: the native model's widths and FLOP counts, the GEMM peak measured in the
same run, the CPU a record was measured on, and the naive reference sampler (the original LLaDA `generate` loop) the
batched sampler is timed against. The seeded random init of a model lives with the tiny model (common/tiny.py
`random_init_`).

FLOPs are real multiply-adds x 2 only: projections, the gated MLP, attention scores and values, the LM head where it
is computed, LoRA; no embedding lookups, norms or softmax.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from common.models.args import ModelArgs


@dataclass(frozen=True)
class Widths:
    dim: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    family: str = "llada"  # the checkpoint layout (common/families.py); dream: q/k/v bias, shifted logits
    rope_theta: float = 500000.0
    norm_eps: float = 1e-5


def model_args(w: Widths, layers: int, *, mask_id: int, eos_id: int, pad_id: int) -> ModelArgs:
    """A model of `w.family`'s layout at widths `w` (untied head; dream: q/k/v bias and shifted logits)."""
    dream = w.family == "dream"
    return ModelArgs(family=w.family, vocab_size=w.vocab, dim=w.dim, n_layers=layers, n_heads=w.heads,
                     n_kv_heads=w.kv_heads, ffn_dim=w.ffn, rope_theta=w.rope_theta, norm_eps=w.norm_eps,
                     qkv_bias=dream, tied=False, shift=dream, mask_token_id=mask_id, eos_token_id=eos_id,
                     pad_token_id=pad_id)


# ---- FLOP counts (forward; a learner's backward is counted by the caller) --------------------------------------
def body_flops(w: Widths, layers: int, rows: int, tokens: int) -> float:
    """Forward FLOPs of the blocks over rows x tokens (projections, MLP, attention scores and values)."""
    hd = w.dim // w.heads
    proj = w.dim * (w.heads * hd + 2 * w.kv_heads * hd) + w.heads * hd * w.dim + 3 * w.dim * w.ffn
    attn = 2 * tokens * w.heads * hd  # QK^T and AV per query token
    return 2.0 * layers * (proj + attn) * rows * tokens


def head_flops(w: Widths, positions: int) -> float:
    """The LM head at `positions` read positions."""
    return 2.0 * w.dim * w.vocab * positions


def lora_flops(w: Widths, layers: int, r: int, targets: list[str], rows: int, tokens: int) -> float:
    """Rank-`r` adapters (A then B) on the `targets` projections over rows x tokens."""
    hd = w.dim // w.heads
    shapes = {"wq": (w.dim, w.heads * hd), "wk": (w.dim, w.kv_heads * hd), "wv": (w.dim, w.kv_heads * hd),
              "wo": (w.heads * hd, w.dim), "w_gate": (w.dim, w.ffn), "w_up": (w.dim, w.ffn), "w_down": (w.ffn, w.dim)}
    return 2.0 * layers * sum(r * sum(shapes[t]) for t in targets) * rows * tokens


# ---- the achievable peak of this device, measured in the same run -----------------------------------------------
def gemm_peak(dtype: torch.dtype, *, device: torch.device | str = "cpu", n: int = 2048, repeats: int = 5,
              threads: int | None = None) -> float:
    """Best FLOP/s of an n x n x n matmul in `dtype` on `device` over `repeats` timed calls after one warm-up; on the
    CPU at `threads` torch threads (None: the current setting), restored afterwards."""
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=generator, device=device).to(dtype)
    b = torch.randn(n, n, generator=generator, device=device).to(dtype)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.mm(a, b)
        _sync(device)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            _sync(device)  # an accelerator matmul returns before it ran: time the work, not the launch
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return 2 * n**3 / best


def _sync(device: torch.device) -> None:
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


# ---- the naive reference sampler ---------------------------------------------------------------------------------
@torch.no_grad()
def naive_generate(logits_fn, prompt: torch.Tensor, *, mask_id: int, gen: int, block: int, steps: int,
                   temperature: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """The original LLaDA `generate` loop for one unpadded row, written independently of actors/sampling:
    full-vocabulary logits at every position every step (`logits_fn`: ids [1, T] -> [1, T, V]), MASK never drawn,
    Gumbel-max over all positions with the noise in float64 (T = 0: argmax), low-confidence reveal inside the current
    block, the block's masked count split evenly over its steps (remainder to the first). Returns the completion [L]."""
    P = prompt.shape[0]
    x = torch.cat([prompt, torch.full((gen,), mask_id, device=prompt.device)])[None]  # [1, T]
    per_block = steps // (gen // block)
    counts = [block // per_block + (1 if i < block % per_block else 0) for i in range(per_block)]
    for b in range(gen // block):
        lo, hi = P + b * block, P + (b + 1) * block
        for k in counts:
            masked = x == mask_id
            logits = logits_fn(x)  # [1, T, V]
            logits[..., mask_id] = float("-inf")
            if temperature == 0:
                x0 = logits.argmax(-1)
            else:
                u = torch.rand(logits.shape, generator=generator, dtype=torch.float64, device=logits.device)
                x0 = (logits.double().exp() / (-u.log()) ** temperature).argmax(-1)
            p = logits.float().softmax(-1).gather(-1, x0[..., None]).squeeze(-1)  # [1, T] confidence p(x0)
            p[:, :lo] = float("-inf")
            p[:, hi:] = float("-inf")
            idx = torch.where(masked, p, float("-inf")).topk(k, dim=-1).indices
            x[0, idx[0]] = x0[0, idx[0]]
    return x[0, P:]
