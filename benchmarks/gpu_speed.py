"""Throughput and MFU of benchmarks/gpu_check.py, measured on the real services (PolicyEngine, run_episode,
LearnerWorker) at the full depth (32 layers of LLaDA-8B by default), warm-up outside every timed region.

  rollout_throughput  run_episode's generate stage at T = 1 on left-padded prompts (the configs' sampler: blocks of
                      32, Gumbel noise in the model dtype), after a warm-up call; against the naive reference in the
                      same run: the original LLaDA `generate` loop for one unpadded row, full-vocabulary logits at
                      every position every step, float64 Gumbel noise. Also the teacher stage (S_old and S_ref).
  learner_throughput  one warm-up step (lazy init, AdamW state), then --learner-steps timed steps on the episode's
                      batch (mu = 1: one optimizer step each, over its micro-batches of learner.micro_batch_rows).
MFU = counted FLOPs / (seconds x peak); peak = the GEMM FLOP/s measured in the same run and the dense bf16 spec of
the GPU when known. FLOPs: projections, MLP, attention scores and values, the LM head where it is computed, LoRA;
the learner counts forward + input-gradient backward (frozen base), not the recomputed forward (overhead, not work).
"""
from __future__ import annotations

import time

import torch

from actors.engine import PolicyEngine
from actors.episode import run_episode
from actors.sampling import sample
from actors.sampling.blocks import reveal_schedule
from benchmarks.common import Widths, body_flops, head_flops, lora_flops, naive_generate
from benchmarks.gpu_parts import free_memory, make_prompts, score, start_learner, stop_learner, sync
from common.config import RunConfig
from common.devices import make_generator
from common.tokenize import encode_prompts

SPEC_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12}  # dense bf16 FLOP/s (SXM)


def mfu(flops_per_s: float, peak: dict) -> dict:
    out = {"tflops": flops_per_s / 1e12, "mfu_measured_gemm": flops_per_s / peak["gemm"]}
    if peak.get("spec"):
        out["mfu_spec"] = flops_per_s / peak["spec"]
    return out


def masked_reads(gen: int, block: int, steps: int) -> int:
    """Positions whose logits the batched sampler computes per row: the masked ones of the current block."""
    per_block = steps // (gen // block)
    counts = reveal_schedule(block, per_block)
    return (gen // block) * sum(block - sum(counts[:i]) for i in range(per_block) if counts[i])


def rollout_throughput(cfg: RunConfig, path, device: torch.device, w: Widths, layers: int, *, naive_rows: int,
                       prompt_len: int, peak: dict, seed: int = 1) -> tuple[dict, object]:
    """Returns (record, the episode's RolloutBatch for the learner part)."""
    s = cfg.sampler
    start = time.perf_counter()
    engine = PolicyEngine(cfg, str(path), device=device)
    load_seconds = time.perf_counter() - start
    prompts = make_prompts(cfg.rollout.prompts_per_step, prompt_len, seed)
    generator = make_generator(device, seed)
    # warm-up outside the timed region: kernels, allocator, the padded-mask SDPA path
    ids, lengths = encode_prompts(engine.policy.tokenizer, [p.prompt for p in prompts[:2]])
    sample(engine.policy, ids.to(device), s.model_copy(update={"gen_length": s.block_length, "steps": 2}),
           generator, prompt_len=lengths)
    sync(device)
    batch, summary = run_episode(prompts, cfg=cfg, policy=engine.policy, reference=engine.reference, score_fn=score,
                                 group_size=cfg.rollout.group_size, group_offset=0, version=0, sample_rng=generator,
                                 seed_rng=make_generator("cpu", seed + 1))
    B, P, L = batch.num_rows, batch.prompt_ids.shape[1], s.gen_length
    T = P + L
    seconds, teacher_seconds = summary.generate_seconds, summary.teacher_seconds
    active_steps = sum(1 for k in reveal_schedule(s.block_length, s.steps // (L // s.block_length)) if k) * (
        L // s.block_length)
    flops = body_flops(w, layers, B * active_steps, T) + head_flops(w, B * masked_reads(L, s.block_length, s.steps))
    lcfg = cfg.model.lora
    lora = lambda rows: lora_flops(w, layers, lcfg.r, list(lcfg.target_modules), rows, T)  # noqa: E731
    flops += lora(B * active_steps)
    # the actor's teacher stage: S_old (adapters on) and S_ref (off) for every (j, m), each a pair of B-row forwards
    draws = cfg.algorithm.mu * cfg.algorithm.num_mc
    teacher_flops = draws * (2 * (body_flops(w, layers, 2 * B, T) + head_flops(w, B * L)) + lora(2 * B))
    # the naive reference: one unpadded row at a time (each prompt's real tokens only)
    naive_start = time.perf_counter()
    for i in range(naive_rows):
        real = batch.prompt_ids[i, P - int(batch.prompt_len[i]):].to(device)
        naive_generate(engine.policy.logits, real, mask_id=engine.policy.mask_id, gen=L, block=s.block_length,
                       steps=s.steps, temperature=1.0, generator=generator)
    sync(device)
    naive_seconds = time.perf_counter() - naive_start
    naive_T = [int(batch.prompt_len[i]) + L for i in range(naive_rows)]
    naive_flops = sum(s.steps * (body_flops(w, layers, 1, t) + head_flops(w, t) + lora_flops(
        w, layers, lcfg.r, list(lcfg.target_modules), 1, t)) for t in naive_T)
    tps, naive_tps = B * L / seconds, naive_rows * L / naive_seconds
    revealed = bool((batch.completion_ids != engine.policy.mask_id).all())
    record = {
        "pass": revealed, "all_revealed": revealed, "layers": layers, "rows": B, "prompt_width": P,
        "prompt_lengths": [int(batch.prompt_len.min()), int(batch.prompt_len.max())], "gen": L, "block": s.block_length,
        "steps": s.steps, "temperature": s.temperature, "gumbel_dtype": s.gumbel_dtype, "forwards": summary.forwards,
        "load_seconds": load_seconds, "seconds": seconds, "tokens_per_s": tps, **mfu(flops / seconds, peak),
        "naive_rows": naive_rows, "naive_seconds": naive_seconds, "naive_tokens_per_s": naive_tps,
        "naive_tflops": naive_flops / naive_seconds / 1e12, "speedup": tps / naive_tps,
        "teacher_seconds": teacher_seconds, "teacher_tflops": teacher_flops / teacher_seconds / 1e12}
    del engine
    free_memory(device)
    return record, batch


def learner_throughput(cfg: RunConfig, path, device: torch.device, w: Widths, layers: int, batch, *, steps: int,
                       peak: dict) -> dict:
    worker = None
    try:
        start = time.perf_counter()
        worker, _ = start_learner(cfg, path)
        setup_seconds = time.perf_counter() - start
        table = batch.to_arrow()
        start = time.perf_counter()
        warm = worker.train_step(table)  # lazy init, AdamW state: outside the timed region
        sync(device)
        warm_seconds = time.perf_counter() - start
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        timed = [worker.train_step(table) for _ in range(steps)]
        sync(device)
        seconds = (time.perf_counter() - start) / steps
    finally:
        stop_learner(worker)
    B, L = batch.num_rows, batch.completion_ids.shape[1]
    T = batch.prompt_ids.shape[1] + L
    lcfg = cfg.model.lora
    fwd = (body_flops(w, layers, 2 * B, T) + head_flops(w, B * L)
           + lora_flops(w, layers, lcfg.r, list(lcfg.target_modules), 2 * B, T))  # the pair: 2B rows
    flops = 2 * fwd * cfg.algorithm.mu * cfg.algorithm.num_mc  # forward + input-gradient backward
    record = {"pass": all(g > 0 for st in timed for g in st["grad_norm"]), "layers": layers, "rows": B,
              "micro_batch_rows": cfg.learner.micro_batch_rows, "micro_batches": warm["micro_batches"],
              "mu": cfg.algorithm.mu, "lora_r": lcfg.r, "activation_checkpointing":
              cfg.learner.activation_checkpointing, "setup_seconds": setup_seconds, "warmup_seconds": warm_seconds,
              "timed_steps": steps, "seconds_per_step": seconds, "tokens_per_s": 2 * B * T / seconds,
              "completion_tokens_per_s": B * L / seconds, **mfu(flops / seconds, peak),
              "teacher_gap_max_v0": warm.get("teacher_gap_max"), "clamp_frac_first_v0": warm["clamp_frac"][0]}
    if device.type == "cuda":
        record["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    free_memory(device)
    return record
