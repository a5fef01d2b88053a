"""A prepared GPU check at LLaDA-8B shapes (random init, bf16): one command, no Ray, no pydantic.

  python -m benchmarks.gpu_check                # one H200: <= 8 min (rollout ~45 PFLOP, ~1.5-2.5 min at 300-500
                                                # TFLOP/s; naive ~1.5 PFLOP at low utilisation; learner step ~1 PFLOP)
  python -m benchmarks.gpu_check --cpu-small    # the same code on CPU at a toy shape (tests/benchmarks run it)

(a) rollout: our batched sampler (actors/sampler.py: logits only at the current block's masked positions) at batch
    64, gen 256, block 32, 128 steps, temperature 0, vs a naive per-row loop computing full-vocab logits at every
    position every step (the original LLaDA `generate`) on --naive-rows rows, in the same run: tokens/s, ratio, MFU.
(b) learner: one GDSD step with LoRA (official r 128, alpha 64, dropout 0.05, all seven projections) under FSDP2
    (one rank, float32 master weights, bf16 compute: learner/fsdp.py) with activation checkpointing, mu = 1:
    tokens/s, MFU, peak memory.
(c) teacher gap: S(x0) of the same sampled rows as the actor computes it (bf16 weights, no grad, its
    rows_per_forward chunks: actors/teacher.py) and as the learner does (its micro-batches, with grad, checkpointed)
    with the same mask and LoRA dropout seeds; max |S_theta - S_old| against the clamp band [log(1-eps), log(1+eps)],
    eps = 4e-4, and the fraction of rows the first inner iteration would clamp.
One JSON line per part on stdout. MFU = counted FLOPs / (seconds x peak); peak = the dense bf16 spec of the GPU when
known (H100/H200 SXM 989 TFLOP/s) and the GEMM FLOP/s measured in the same run (both reported). FLOPs count the
projections, MLP, attention scores/values and the LM head where it is computed; the learner counts forward + the
input-gradient backward (the base is frozen) + the recomputed forward is not counted (it is overhead, not work).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist

from actors.sampler import sample
from actors.teacher import draw_mask_seeds, teacher_logps
from common.denoiser import Denoiser
from common.logprob import denoise_logprob
from common.masking import consistent_masks
from common.models import DiffusionLM, ModelArgs
from common.models.lora import LoRASpec, apply_lora, row_seeds
from learner.fsdp import shard_model
from learner.losses import get_loss
from learner.losses.gdsd import GDSD_DEFAULTS

SPEC_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12}  # dense bf16 FLOP/s (SXM)


@dataclass(frozen=True)
class Shape:
    dim: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    prompt: int
    gen: int
    block: int
    steps: int
    batch: int  # sampler rows
    naive_rows: int
    learner_rows: int  # rows of the learner step (the first rows of the sampled batch)
    micro_rows: int  # learner micro-batch
    actor_rows: int  # the actor's rows_per_forward for S_old
    lora_r: int = 128
    lora_alpha: float = 64.0
    lora_dropout: float = 0.05


# LLaDA-8B-Instruct config.json: d_model 4096, 32 layers, 32 heads (no GQA), mlp_hidden_size 12288, vocab 126464
LLADA_8B = Shape(dim=4096, layers=32, heads=32, kv_heads=32, ffn=12288, vocab=126464, prompt=128, gen=256, block=32,
                 steps=128, batch=64, naive_rows=2, learner_rows=16, micro_rows=8, actor_rows=4)
CPU_SMALL = Shape(dim=64, layers=2, heads=4, kv_heads=4, ffn=128, vocab=512, prompt=12, gen=16, block=8, steps=8,
                  batch=4, naive_rows=1, learner_rows=4, micro_rows=2, actor_rows=3, lora_r=8, lora_alpha=16.0)


@dataclass
class SamplerSettings:
    """The fields of config.sampler that actors/sampler.py reads (no pydantic here)."""

    gen_length: int
    block_length: int
    steps: int
    temperature: float = 0.0
    top_p: float | None = None
    remasking: str = "low_confidence"
    gumbel_dtype: str = "float64"
    schedule: str = "llada"


def model_args(s: Shape) -> ModelArgs:
    return ModelArgs(family="llada", vocab_size=s.vocab, dim=s.dim, n_layers=s.layers, n_heads=s.heads,
                     n_kv_heads=s.kv_heads, ffn_dim=s.ffn, rope_theta=500000.0, norm_eps=1e-5, qkv_bias=False,
                     tied=False, shift=False, mask_token_id=s.vocab - 1, eos_token_id=s.vocab - 2,
                     pad_token_id=s.vocab - 2)


def body_flops(s: Shape, rows: int, tokens: int) -> float:
    """Forward FLOPs of the blocks over rows x tokens (projections, MLP, attention scores and values)."""
    hd = s.dim // s.heads
    proj = s.dim * (s.heads * hd + 2 * s.kv_heads * hd) + s.heads * hd * s.dim + 3 * s.dim * s.ffn
    attn = 2 * tokens * s.heads * hd  # QK^T and AV per query token
    return 2.0 * s.layers * (proj + attn) * rows * tokens


def head_flops(s: Shape, positions: int) -> float:
    return 2.0 * s.dim * s.vocab * positions


def lora_flops(s: Shape, rows: int, tokens: int) -> float:
    hd = s.dim // s.heads
    ins_outs = [(s.dim, s.heads * hd), (s.dim, s.kv_heads * hd), (s.dim, s.kv_heads * hd), (s.heads * hd, s.dim),
                (s.dim, s.ffn), (s.dim, s.ffn), (s.ffn, s.dim)]
    return 2.0 * s.layers * sum(s.lora_r * (i + o) for i, o in ins_outs) * rows * tokens


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def gemm_peak(device: torch.device, dtype: torch.dtype, n: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    sync(device)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def build_master(s: Shape, device: torch.device, seed: int) -> DiffusionLM:
    """float32 random init (normal 0.02, norms 1) on `device`, rounded to bf16 values: the learner's master copy
    of a bf16 checkpoint, so the actor's bf16 weights are exactly its cast."""
    with torch.device("meta"):
        net = DiffusionLM(model_args(s))
    net = net.to_empty(device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=g)
                p.copy_(p.to(torch.bfloat16).float())
    return net


def add_lora(net: DiffusionLM, s: Shape, device: torch.device, seed: int) -> None:
    apply_lora(net, LoRASpec(r=s.lora_r, alpha=s.lora_alpha, dropout=s.lora_dropout),
               generator=torch.Generator().manual_seed(seed))
    g = torch.Generator(device=device).manual_seed(seed + 1)
    with torch.no_grad():  # a trained-looking adapter (B = 0 would make S_theta == S_ref and the gap trivial)
        for name, p in net.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(0.0, 1e-3, generator=g)
                p.copy_(p.to(torch.bfloat16).float())


@torch.no_grad()
def naive_generate(net: DiffusionLM, prompt: torch.Tensor, s: Shape) -> torch.Tensor:
    """The original LLaDA loop for one row: full-vocab logits at every position, every step, T = 0."""
    mask_id = s.vocab - 1
    x = torch.cat([prompt, torch.full((s.gen,), mask_id, device=prompt.device)])[None]  # [1, T]
    per_block = s.steps // (s.gen // s.block)
    for b in range(s.gen // s.block):
        lo, hi = s.prompt + b * s.block, s.prompt + (b + 1) * s.block
        counts = [s.block // per_block + (1 if i < s.block % per_block else 0) for i in range(per_block)]
        for k in counts:
            masked = x == mask_id
            logits = net(x)  # [1, T, V]
            logits[..., mask_id] = float("-inf")
            x0 = logits.argmax(-1)
            p = logits.float().softmax(-1).gather(-1, x0[..., None]).squeeze(-1)
            p[:, :lo] = float("-inf")
            p[:, hi:] = float("-inf")
            conf = torch.where(masked, p, float("-inf"))
            idx = conf.topk(k, dim=-1).indices
            x[0, idx[0]] = x0[0, idx[0]]
    return x[0, s.prompt:]


def rollout_part(actor: Denoiser, s: Shape, device: torch.device, peak: dict) -> tuple[dict, torch.Tensor,
                                                                                       torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(1)
    prompts = torch.randint(0, s.vocab - 2, (s.batch, s.prompt), generator=g, device=device)
    cfg = SamplerSettings(gen_length=s.gen, block_length=s.block, steps=s.steps)
    warm = SamplerSettings(gen_length=s.block, block_length=s.block, steps=2)
    sample(actor, prompts[:2], warm)  # kernels, allocator
    sync(device)
    start = time.perf_counter()
    out = sample(actor, prompts, cfg)
    sync(device)
    seconds = time.perf_counter() - start
    naive_start = time.perf_counter()
    naive = torch.stack([naive_generate(actor.net, prompts[i], s) for i in range(s.naive_rows)])
    sync(device)
    naive_seconds = time.perf_counter() - naive_start
    T = s.prompt + s.gen
    per_block = s.steps // (s.gen // s.block)
    counts = [s.block // per_block + (1 if i < s.block % per_block else 0) for i in range(per_block)]
    masked_read = (s.gen // s.block) * sum(s.block - sum(counts[:i]) for i in range(per_block))  # per row
    flops = body_flops(s, out.rows_forwarded, T) + head_flops(s, masked_read * s.batch)
    naive_flops = s.naive_rows * s.steps * (body_flops(s, 1, T) + head_flops(s, T))
    tps, naive_tps = s.batch * s.gen / seconds, s.naive_rows * s.gen / naive_seconds
    record = {"part": "rollout", "rows": s.batch, "gen": s.gen, "block": s.block, "steps": s.steps,
              "seconds": seconds, "tokens_per_s": tps, "forwards": out.forwards,
              "tflops": flops / seconds / 1e12, "naive_rows": s.naive_rows, "naive_seconds": naive_seconds,
              "naive_tokens_per_s": naive_tps, "naive_tflops": naive_flops / naive_seconds / 1e12,
              "speedup": tps / naive_tps,
              "naive_token_agreement": float((naive == out.completion_ids[:s.naive_rows]).float().mean())}
    record.update(mfu(flops / seconds, peak))
    return record, prompts, out.completion_ids


def mfu(achieved: float, peak: dict) -> dict:
    out = {"mfu_measured_gemm": achieved / peak["gemm"]}
    if peak.get("spec"):
        out["mfu_spec"] = achieved / peak["spec"]
    return out


def learner_part(actor: Denoiser, learner: Denoiser, params: list, prompts: torch.Tensor, completions: torch.Tensor,
                 s: Shape, device: torch.device, peak: dict) -> tuple[dict, dict]:
    B, L = s.learner_rows, s.gen
    prompt, completion = prompts[:B], completions[:B]
    seeds = draw_mask_seeds(1, 1, torch.Generator().manual_seed(2))  # [J=1, M=1]
    seed = int(seeds[0, 0])
    start = time.perf_counter()  # the actor's targets: S_old (adapters on, seeded dropout) and S_ref (adapters off)
    old = teacher_logps(actor, prompt, completion, seeds, variant="gdsd", rows_per_forward=s.actor_rows)[:, 0, 0]
    ref = teacher_logps(actor.without_adapters(), prompt, completion, seeds, variant="gdsd",
                        rows_per_forward=s.actor_rows)[:, 0, 0]
    sync(device)
    teacher_seconds = time.perf_counter() - start
    g = torch.Generator().manual_seed(3)
    adv = torch.randn(B, generator=g)
    spec = get_loss("gdsd")
    kwargs = {k: GDSD_DEFAULTS[k] for k in spec.algorithm.loss_kwargs}
    optimizer = torch.optim.AdamW(params, lr=3e-6, betas=(0.9, 0.99), weight_decay=0.01)
    masks = consistent_masks(seed, B, L)  # [B, L]: the actor's masks of the whole batch
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    theta = []
    for lo in range(0, B, s.micro_rows):
        rows = torch.arange(lo, min(B, lo + s.micro_rows))
        logp = denoise_logprob(learner, prompt[rows], completion[rows], masks[rows], variant="gdsd",
                               dropout_seeds=row_seeds(seed, rows))  # [b] float32, with grad
        loss, _ = spec.fn(logp[:, None], old[rows, None].to(device), ref[rows, None].to(device), adv[rows].to(device),
                          L, num_rows=B, **kwargs)
        loss.backward()
        theta.append(logp.detach().cpu())
    grad_norm = torch.nn.utils.clip_grad_norm_(params, 0.2)
    if hasattr(grad_norm, "full_tensor"):
        grad_norm = grad_norm.full_tensor()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sync(device)
    seconds = time.perf_counter() - start
    T = s.prompt + L
    fwd = body_flops(s, 2 * B, T) + head_flops(s, B * L) + lora_flops(s, 2 * B, T)  # the pair: 2B rows
    flops = 2 * fwd  # forward + input-gradient backward (frozen base; adapter weight grads are in lora_flops' noise)
    record = {"part": "learner", "rows": B, "micro_rows": s.micro_rows, "mu": 1, "lora_r": s.lora_r,
              "activation_checkpointing": True, "seconds": seconds, "tokens_per_s": 2 * B * T / seconds,
              "completion_tokens_per_s": B * L / seconds, "tflops": flops / seconds / 1e12,
              "grad_norm": float(grad_norm), "actor_teacher_seconds": teacher_seconds,
              "peak_memory_gib": (torch.cuda.max_memory_allocated() / 2**30) if device.type == "cuda" else None}
    record.update(mfu(flops / seconds, peak))
    s_theta = torch.cat(theta)
    diff = s_theta - old  # the clamp acts on S_theta - S_old itself (learner/losses/gdsd.py), before the 1/L
    eps = GDSD_DEFAULTS["eps"]
    clamped = (diff > math.log1p(eps)) | (diff < math.log1p(-eps))
    teacher = {"part": "teacher_gap", "rows": B, "actor_rows_per_forward": s.actor_rows,
               "learner_micro_rows": s.micro_rows, "dtype": "bfloat16", "gap_max": float(diff.abs().max()),
               "gap_mean": float(diff.abs().mean()), "eps": eps, "band": [math.log1p(-eps), math.log1p(eps)],
               "clamped_fraction": float(clamped.float().mean()), "within_eps": not bool(clamped.any()),
               "s_old_mean": float(old.mean())}
    return record, teacher


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-small", action="store_true", help="CPU, toy shape (the test of this script)")
    parser.add_argument("--naive-rows", type=int, default=None, help="rows of the naive reference (default 2)")
    parser.add_argument("--batch", type=int, default=None, help="sampler rows (default 64; lower if time is short)")
    args = parser.parse_args(argv)
    s = CPU_SMALL if args.cpu_small else LLADA_8B
    overrides = {k: v for k, v in (("naive_rows", args.naive_rows), ("batch", args.batch)) if v}
    s = Shape(**{**asdict(s), **overrides})
    if s.learner_rows > s.batch:
        raise SystemExit(f"gpu_check: --batch {s.batch} is below the learner's {s.learner_rows} rows")
    if not args.cpu_small and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (use --cpu-small on CPU)")
    device = torch.device("cpu") if args.cpu_small else torch.device("cuda", 0)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = {"gemm": gemm_peak(device, torch.bfloat16, 8192 if device.type == "cuda" else 256),
            "spec": next((v for k, v in SPEC_PEAK.items() if k in name), None)}
    records = [{"part": "device", "device": name, "date": datetime.datetime.now(datetime.UTC).isoformat(),
                "torch": torch.__version__, "shape": asdict(s), "gemm_tflops": peak["gemm"] / 1e12,
                "spec_tflops": None if peak["spec"] is None else peak["spec"] / 1e12}]
    print(json.dumps(records[-1]), flush=True)

    # the learner's master (float32, bf16-valued) and the actor's bf16 copy of it: the same weights, as after a push
    master = build_master(s, device, seed=0)
    add_lora(master, s, device, seed=0)
    with torch.device("meta"):
        actor_net = DiffusionLM(model_args(s))
    actor_net = actor_net.to(torch.bfloat16).to_empty(device=device)  # filled from the master below
    apply_lora(actor_net, LoRASpec(r=s.lora_r, alpha=s.lora_alpha, dropout=s.lora_dropout),
               generator=torch.Generator().manual_seed(0))
    actor_net.load_state_dict({k: v.to(torch.bfloat16) for k, v in master.state_dict().items()})
    actor_net.eval()
    mask_id, eos_id = s.vocab - 1, s.vocab - 2
    actor = Denoiser(net=actor_net, tokenizer=None, mask_id=mask_id, eos_id=eos_id, shift=False)

    record, prompts, completions = rollout_part(actor, s, device, peak)
    records.append(record)
    print(json.dumps(record), flush=True)

    if not dist.is_initialized():  # FSDP2 on one rank, as the learner runs (learner/fsdp.py)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.HashStore(), rank=0,
                                world_size=1)
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (1,))
    shard_model(master, mesh, compute_dtype=torch.bfloat16, activation_checkpointing=True)
    master.train()
    learner = Denoiser(net=master, tokenizer=None, mask_id=mask_id, eos_id=eos_id, shift=False)
    params = [p for p in master.parameters() if p.requires_grad]
    learn, teacher = learner_part(actor, learner, params, prompts, completions, s, device, peak)
    for r in (learn, teacher):
        records.append(r)
        print(json.dumps(r), flush=True)
    dist.destroy_process_group()
    return records


if __name__ == "__main__":
    main()
