"""Rollout throughput: the batched block-only-LM-head sampler vs the naive LLaDA loop, same model, same prompts.

  python -m benchmarks.rollout [--rows 32] [--naive-rows 2] [--dtypes float32,bfloat16] [--gen 128 --steps 64]

Model: the native model LLaDA-8B runs on (common/models/, LLaDA layout), small: hidden 512, 8 layers, FFN 1536,
vocab 32000; prompt 64, gen 128, block 32, steps 64 (official eval: gen_len / 2), temperature 0. The naive reference
runs one row at a time (the first --naive-rows rows) and computes full-vocab logits at every position every step, as
the original LLaDA `generate` does; both must produce the same tokens on those rows. Achieved FLOP/s counts real FLOPs only (no embedding lookups; the LM head only where computed) and
is divided by this machine's GEMM FLOP/s for the dtype, measured in the same run. One JSON line per dtype.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from actors.sampling import sample
from common.config import SamplerConfig
from common.denoiser import DTYPES, Denoiser
from common.models import DiffusionLM, ModelArgs

HIDDEN, LAYERS, FFN, VOCAB, HEADS = 512, 8, 1536, 32000, 8
PROMPT, GEN, BLOCK, STEPS = 64, 128, 32, 64
MASK_ID = VOCAB - 1


def gemm_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of an n x n x n matmul in `dtype`."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).to(dtype), torch.randn(n, n, generator=g).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def body_flops(tokens_per_row: int, rows: int) -> float:
    """Transformer FLOPs of one forward over rows x tokens (projections, MLP, attention scores and values)."""
    per_token = LAYERS * 2 * (4 * HIDDEN * HIDDEN + 3 * HIDDEN * FFN + 2 * tokens_per_row * HIDDEN)
    return per_token * tokens_per_row * rows


def head_flops(positions: int) -> float:
    return 2 * HIDDEN * VOCAB * positions


def make_denoiser(dtype: torch.dtype) -> Denoiser:
    args = ModelArgs(family="llada", vocab_size=VOCAB, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, n_kv_heads=HEADS,
                     ffn_dim=FFN, rope_theta=500000.0, norm_eps=1e-5, qkv_bias=False, tied=False, shift=False,
                     mask_token_id=MASK_ID, eos_token_id=0, pad_token_id=0)
    model = DiffusionLM(args)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.endswith("norm.weight"):
                param.normal_(0.0, 0.02, generator=generator)
    return Denoiser.wrap(model.to(dtype).eval(), None, mask_id=MASK_ID, eos_id=0, shift=False)


@torch.no_grad()
def naive_generate(den: Denoiser, prompt: torch.Tensor, cfg: SamplerConfig) -> torch.Tensor:
    """The original LLaDA loop for one row: full-vocab logits at every position, every step. T = 0."""
    gen = cfg.gen_length
    x = torch.cat([prompt, torch.full((gen,), MASK_ID)])[None]  # [1, T]
    per_block = cfg.steps // (gen // BLOCK)
    for b in range(gen // BLOCK):
        lo, hi = PROMPT + b * BLOCK, PROMPT + (b + 1) * BLOCK
        counts = [BLOCK // per_block + (1 if i < BLOCK % per_block else 0) for i in range(per_block)]
        for k in counts:
            masked = x == MASK_ID
            logits = den.net(x)  # [1, T, V]
            logits[..., MASK_ID] = float("-inf")
            x0 = logits.argmax(-1)
            p = logits.float().softmax(-1).gather(-1, x0[..., None]).squeeze(-1)
            p[:, hi:] = float("-inf")
            p[:, :lo] = float("-inf")
            conf = torch.where(masked, p, float("-inf"))
            idx = conf.topk(k, dim=1).indices
            x[0, idx[0]] = x0[0, idx[0]]
    return x[0, PROMPT:]


def run(dtype_name: str, rows: int, naive_rows: int, *, gen: int = GEN, steps: int = STEPS) -> dict:
    dtype = DTYPES[dtype_name]
    den = make_denoiser(dtype)
    cfg = SamplerConfig(gen_length=gen, steps=steps, block_length=BLOCK, temperature=0.0)
    prompts = torch.randint(0, VOCAB - 1, (rows, PROMPT), generator=torch.Generator().manual_seed(1))
    T = PROMPT + gen
    sample(den, prompts[:1], SamplerConfig(gen_length=BLOCK, steps=2, block_length=BLOCK, temperature=0))  # warm-up

    start = time.perf_counter()
    out = sample(den, prompts, cfg)
    batched_s = time.perf_counter() - start
    # head positions: every masked position of the current block, each step (block masked count goes 32, 30, ...)
    per_step = BLOCK // (steps // (gen // BLOCK))  # tokens revealed per step
    head_positions = rows * sum(BLOCK - per_step * i for i in range(steps // (gen // BLOCK))) * (gen // BLOCK)
    batched_flops = steps * body_flops(T, rows) + head_flops(head_positions)

    start = time.perf_counter()
    naive = torch.stack([naive_generate(den, prompts[i], cfg) for i in range(naive_rows)])
    naive_s = time.perf_counter() - start
    naive_flops = naive_rows * steps * (body_flops(T, 1) + head_flops(T))

    peak = gemm_peak(dtype)
    return {
        "bench": "rollout", "dtype": dtype_name, "rows": rows, "prompt": PROMPT, "gen": gen, "block": BLOCK,
        "steps": steps, "threads": torch.get_num_threads(), "naive_rows": naive_rows,
        "load_avg_1min": os.getloadavg()[0],  # a shared box: other processes take cores from both loops
        "tokens_identical": bool(torch.equal(out.completion_ids[:naive_rows], naive)),
        "rows_differing": int((out.completion_ids[:naive_rows] != naive).any(dim=1).sum()),
        "batched_tokens_per_s": rows * gen / batched_s, "naive_tokens_per_s": naive_rows * gen / naive_s,
        "ratio": (rows * gen / batched_s) / (naive_rows * gen / naive_s), "gemm_peak_gflops": peak / 1e9,
        "batched_gflops": batched_flops / batched_s / 1e9, "batched_frac_of_peak": batched_flops / batched_s / peak,
        "naive_gflops": naive_flops / naive_s / 1e9, "naive_frac_of_peak": naive_flops / naive_s / peak,
        "_tokens": out.completion_ids,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--naive-rows", type=int, default=2, help="rows run through the naive loop (slow)")
    parser.add_argument("--gen", type=int, default=GEN, help="completion length (a multiple of 32)")
    parser.add_argument("--steps", type=int, default=STEPS, help="denoising steps (a multiple of gen / 32)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    args = parser.parse_args()
    tokens = {}
    for dtype_name in args.dtypes.split(","):
        result = run(dtype_name, args.rows, min(args.naive_rows, args.rows), gen=args.gen, steps=args.steps)
        tokens[dtype_name] = result.pop("_tokens")
        print(json.dumps(result), flush=True)
    if len(tokens) == 2:
        a, b = tokens.values()
        print(json.dumps({"bench": "rollout_dtype_agreement", "rows": args.rows,
                          "rows_differing_fp32_vs_bf16": int((a != b).any(dim=1).sum()),
                          "token_agreement": float((a == b).float().mean())}), flush=True)


if __name__ == "__main__":
    main()
