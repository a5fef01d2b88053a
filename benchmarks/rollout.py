"""Rollout throughput: the batched block-only-LM-head sampler vs the naive LLaDA loop, same model, same prompts.

  python -m benchmarks.rollout [--rows 32] [--naive-rows 2] [--dtypes float32,bfloat16] [--gen 128 --steps 64]

Model: the native model LLaDA-8B runs on (common/models/, LLaDA layout), small: hidden 512, 8 layers, FFN 1536,
vocab 32000; prompt 64, gen 128, block 32, steps 64 (official eval: gen_len / 2), temperature 0. The naive reference
runs one row at a time (the first --naive-rows rows) and computes full-vocab logits at every position every step, as
the original LLaDA `generate` does (benchmarks/common.py `naive_generate`); both must produce the same tokens on those
rows. Achieved FLOP/s counts real FLOPs only (no embedding lookups; the LM head only where computed) and is divided by
this machine's GEMM FLOP/s for the dtype, measured in the same run. One JSON line per dtype.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from actors.sampling import sample
from benchmarks.common import Widths, body_flops, gemm_peak, head_flops, model_args, naive_generate
from common.config import SamplerConfig
from common.denoiser import DTYPES, Denoiser
from common.models import DiffusionLM
from common.tiny import random_init_

WIDTHS, LAYERS = Widths(dim=512, heads=8, kv_heads=8, ffn=1536, vocab=32000), 8
PROMPT, GEN, BLOCK, STEPS = 64, 128, 32, 64
MASK_ID = WIDTHS.vocab - 1


def make_denoiser(dtype: torch.dtype) -> Denoiser:
    args = model_args(WIDTHS, LAYERS, mask_id=MASK_ID, eos_id=0, pad_id=0)
    model = random_init_(DiffusionLM(args), torch.Generator().manual_seed(0))
    return Denoiser.wrap(model.to(dtype).eval(), None, mask_id=MASK_ID, eos_id=0, shift=False)


def run(dtype_name: str, rows: int, naive_rows: int, *, gen: int = GEN, steps: int = STEPS) -> dict:
    dtype = DTYPES[dtype_name]
    den = make_denoiser(dtype)
    cfg = SamplerConfig(gen_length=gen, steps=steps, block_length=BLOCK, temperature=0.0)
    prompts = torch.randint(0, MASK_ID, (rows, PROMPT), generator=torch.Generator().manual_seed(1))
    T = PROMPT + gen
    sample(den, prompts[:1], SamplerConfig(gen_length=BLOCK, steps=2, block_length=BLOCK, temperature=0))  # warm-up

    start = time.perf_counter()
    out = sample(den, prompts, cfg)
    batched_s = time.perf_counter() - start
    # head positions: every masked position of the current block, each step (block masked count goes 32, 30, ...)
    per_step = BLOCK // (steps // (gen // BLOCK))  # tokens revealed per step
    head_positions = rows * sum(BLOCK - per_step * i for i in range(steps // (gen // BLOCK))) * (gen // BLOCK)
    batched_flops = steps * body_flops(WIDTHS, LAYERS, rows, T) + head_flops(WIDTHS, head_positions)

    start = time.perf_counter()
    naive = torch.stack([naive_generate(den.logits, prompts[i], mask_id=MASK_ID, gen=gen, block=BLOCK, steps=steps)
                         for i in range(naive_rows)])
    naive_s = time.perf_counter() - start
    naive_flops = naive_rows * steps * (body_flops(WIDTHS, LAYERS, 1, T) + head_flops(WIDTHS, T))

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
