"""Learner throughput: a GDSD train_step (mu=1, mu=8) on 1 and 2 FSDP2 ranks (gloo, CPU), and the weight push.

  python -m benchmarks.learner [--quick]

Setup: a local Ray instance; the tiny built-in denoiser (native model, LLaDA layout; hidden 256, 4 layers, FFN 768,
char vocab); one RolloutActor samples 4 sudoku prompts x group 6 = 24 rows once up front (gen 64, block 32, steps 16,
mu=8 mask seeds, S_old and S_ref), the rows get random non-zero advantages (so the loss has gradients) and the same
batch ref feeds every case. Each rank gets `learner.cpus_per_rank=1` and one torch thread; this box has 2 cores, so 2
ranks use both of them (the 1-rank case leaves one idle).

Per case (ranks, mu), one JSON line: wall time of `LearnerGroup.train_step` (median over the timed steps after one
warm-up step), rows/s = batch rows / step time, tokens/s = completion tokens (rows x L) / step time (the unit the
rollout benchmark reports, so the two compare directly), and network tokens/s = mu x 2 x rows x (P + L) / step time.

FLOP counting (real FLOPs only, no embedding lookups, norms or softmax): one inner iteration j with one mc draw m is
one forward of the body over 2B rows (x_t and its complement) x (P + L) tokens -- per token and layer
2 (4 H^2 + 3 H F) for the q/k/v/o projections and the gated MLP plus 4 (P + L) H for attention scores and values --
and the LM head 2 H V only at the B x L read positions. Forward + backward = 3 x forward. Achieved FLOP/s is divided
by the fp32 GEMM FLOP/s measured in this run (best 2048^3 matmul, at 1 thread and at all threads): `frac_of_peak`
compares with ranks x the 1-thread GEMM (the cores the case uses), `frac_of_machine` with the all-threads GEMM.

References measured in the same run: the same step in one process without FSDP or collectives (the same loss code,
`learner.update.loss_on_micro_batch`, 1 thread, as a Ray task so it runs at the ranks' priority), and for the weight
push (`export_weights` + every actor's `set_weights`) a plain torch `copy_` of the same bytes into preallocated
tensors. The GEMM runs in the driver (nice 0; Ray workers run at nice 15): on a shared box it is the best case.
"""
from __future__ import annotations

from common import cluster

cluster.local_env()  # before anything imports ray (common/cluster.py)
# ruff: noqa: E402

import argparse
import json
import os
import statistics
import tempfile
import time

import ray
import torch

from actors.advantages import leave_one_out
from actors.rollout import RemoteRolloutActor
from common.batch import RolloutBatch
from common.config import RunConfig, TinyModelConfig, load_config
from common.denoiser import load_denoiser
from common.tasks import make_prompts
from common.tiny import make_tiny_model
from rewards.service.pool import RemoteRewardPool
from learner.group import LearnerGroup
from learner.losses import get_loss
from learner.optim import build_optimizer, clip_grad_norm
from learner.update import loss_on_micro_batch
from benchmarks.common import Widths, body_flops, gemm_peak, head_flops

FULL = dict(hidden=256, layers=4, ffn=768, heads=4, gen=64, block=32, steps=16, prompts=4, group=6, timed=3)
QUICK = dict(hidden=64, layers=2, ffn=128, heads=4, gen=32, block=16, steps=8, prompts=2, group=6, timed=2)
MU_MAX = 8  # the actor draws seeds for mu=8; a mu=1 step reads only j=0 of the same batch


def step_flops(p: dict, *, rows: int, prompt: int, vocab: int, mu: int, num_mc: int) -> float:
    """Real FLOPs of one train_step (see the module docstring)."""
    w = Widths(dim=p["hidden"], heads=p["heads"], kv_heads=p["heads"], ffn=p["ffn"], vocab=vocab)
    T, L = prompt + p["gen"], p["gen"]
    forward = body_flops(w, p["layers"], 2 * rows, T) + head_flops(w, rows * L)  # x_t and its complement: 2 rows
    return 3 * forward * mu * num_mc


def with_advantages(table, group: int, seed: int) -> RolloutBatch:
    """Random rewards -> the actors' leave-one-out advantages (as tests/learner/rollouts.py): an untrained model
    scores 0 everywhere, which would make every advantage 0 and the GDSD term gradient-free."""
    batch = RolloutBatch.from_arrow(table)
    batch.reward = torch.rand(batch.num_rows, generator=torch.Generator().manual_seed(seed))
    batch.advantage = leave_one_out(batch.reward, group)
    return batch


def with_ranks_mu(cfg: RunConfig, ranks: int, mu: int) -> RunConfig:
    return cfg.model_copy(update={"learner": cfg.learner.model_copy(update={"num_ranks": ranks}),
                                  "algorithm": cfg.algorithm.model_copy(update={"mu": mu})})


@ray.remote(num_cpus=1)
def local_step_seconds(cfg: RunConfig, model_path: str, table, mu: int, timed: int) -> float:
    """Reference: the same step (loss code, AdamW, clip) in one process, 1 thread, no FSDP, no collectives. A Ray task
    rather than the driver: Ray workers run at nice 15, the driver at 0, and on a shared box that alone skews a
    comparison."""
    torch.set_num_threads(1)
    batch = RolloutBatch.from_arrow(table)
    den = load_denoiser(cfg.model, model_path, device="cpu")
    den.model.train()
    params = [p for p in den.net.parameters() if p.requires_grad]
    optimizer, scheduler = build_optimizer(params, cfg.learner)
    spec = get_loss(cfg.algorithm.name)
    kwargs = spec.kwargs_from(cfg.algorithm)

    def step(iters: int) -> float:
        start = time.perf_counter()
        for j in range(iters):
            loss_on_micro_batch(den, batch, j, spec=spec, loss_kwargs=kwargs, num_rows=batch.num_rows, scale=1.0)
            clip_grad_norm(params, cfg.learner.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    step(1)  # warm-up (allocator, first-call paths)
    return statistics.median(step(mu) for _ in range(timed if mu == 1 else 1))


def time_steps(group: LearnerGroup, refs: list, n: int) -> tuple[list[float], list[float], dict]:
    """(driver wall seconds, worker-reported seconds, last metrics) of n train_steps."""
    walls, inner, metrics = [], [], {}
    for _ in range(n):
        start = time.perf_counter()
        metrics = group.train_step(refs)
        walls.append(time.perf_counter() - start)
        inner.append(metrics["seconds"])
    return walls, inner, metrics


def time_push(group: LearnerGroup, actors: list, repeats: int) -> dict:
    """export_weights + every actor's set_weights vs a torch copy_ of the same bytes (best of `repeats`)."""
    export_s, load_s, total_s = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        ref, version = group.export_weights()
        mid = time.perf_counter()
        ray.get([a.set_weights.remote(ref, version) for a in actors])
        end = time.perf_counter()
        export_s.append(mid - start), load_s.append(end - mid), total_s.append(end - start)
    state = ray.get(ref)
    nbytes = sum(v.numel() * v.element_size() for v in state.values())
    dst = {k: torch.empty_like(v) for k, v in state.items()}
    copy_s = []
    for _ in range(repeats + 2):
        start = time.perf_counter()
        for k, v in state.items():
            dst[k].copy_(v)
        copy_s.append(time.perf_counter() - start)
    return {"bytes": nbytes, "tensors": len(state), "actors": len(actors), "export_s": min(export_s),
            "set_weights_s": min(load_s), "push_s": min(total_s), "memcpy_s": min(copy_s),
            "push_over_memcpy": min(total_s) / min(copy_s), "push_gb_per_s": nbytes / min(total_s) / 1e9,
            "memcpy_gb_per_s": nbytes / min(copy_s) / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller model and batch (a smoke run)")
    args = parser.parse_args()
    p = QUICK if args.quick else FULL
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    cluster.init_ray(num_cpus=8)  # logical CPUs: actor, reward worker and 2 ranks at once (2 physical cores)

    tmp = tempfile.TemporaryDirectory()
    tiny = TinyModelConfig(hidden_size=p["hidden"], num_layers=p["layers"], num_heads=p["heads"],
                           intermediate_size=p["ffn"], max_positions=512, seed=0)
    model_path = str(make_tiny_model(tiny, os.path.join(tmp.name, "model")))
    cfg = load_config(None, [f"sampler.gen_length={p['gen']}", f"sampler.steps={p['steps']}",
                             f"sampler.block_length={p['block']}", f"algorithm.mu={MU_MAX}",
                             "learner.cpus_per_rank=1", "rollout.torch_threads=1"])

    # the batch, once: a real RolloutActor (sampling, rewards, teacher targets S_old / S_ref for all 8 seeds)
    reward_pool = RemoteRewardPool.remote(1, num_cpus_per_worker=0.5)
    actor = RemoteRolloutActor.options(num_cpus=1).remote(cfg, model_path, reward_pool=reward_pool)
    prompts = make_prompts(task="sudoku", prompt_format="compact", split="train", num=p["prompts"], seed=1)
    start = time.perf_counter()
    table, summary = ray.get(list(actor.rollout.remote(prompts, p["group"])))
    rollout_s = time.perf_counter() - start
    batch = with_advantages(table, p["group"], seed=0)
    refs = [ray.put(batch.to_arrow())]
    rows, prompt_len, L = batch.num_rows, batch.prompt_ids.shape[1], p["gen"]
    vocab = len(load_denoiser(cfg.model, model_path, device="cpu").tokenizer)
    print(json.dumps({"bench": "learner_setup", "quick": args.quick, "cores": cores, "load_avg_1m": load_before,
                      "hidden": p["hidden"], "layers": p["layers"], "ffn": p["ffn"], "vocab": vocab, "rows": rows,
                      "prompt": prompt_len, "gen": L, "rollout_s": rollout_s,
                      "batch_bytes": summary.batch_bytes}), flush=True)

    peak_1t, peak_all = gemm_peak(torch.float32, threads=1), gemm_peak(torch.float32, threads=cores)
    local = {mu: ray.get(local_step_seconds.remote(with_ranks_mu(cfg, 1, mu), model_path, refs[0], mu, p["timed"]))
             for mu in (1, 8)}

    results, pushes = [], []
    for ranks in (1, 2):
        for mu in (1, 8):
            group = LearnerGroup(with_ranks_mu(cfg, ranks, mu), model_path)
            _, _, warm = time_steps(group, refs, 1)  # warm-up: gloo connections, FSDP lazy init, allocator
            walls, inner, metrics = time_steps(group, refs, p["timed"] if mu == 1 else 1)
            if mu == 1:  # the push does not depend on mu: measure it once per rank count
                pushes.append({"bench": "learner_push", "ranks": ranks, **time_push(group, [actor], 3)})
            group.shutdown()
            step_s = statistics.median(walls)
            flops = step_flops(p, rows=rows, prompt=prompt_len, vocab=vocab, mu=mu, num_mc=cfg.algorithm.num_mc)
            results.append({
                "bench": "learner_step", "ranks": ranks, "mu": mu, "rows": rows, "prompt": prompt_len, "gen": L,
                "threads_per_rank": 1, "steps_timed": len(walls), "step_s": step_s,
                "worker_step_s": statistics.median(inner), "rows_per_s": rows / step_s,
                "tokens_per_s": rows * L / step_s, "network_tokens_per_s": mu * 2 * rows * (prompt_len + L) / step_s,
                "step_gflop": flops / 1e9, "gflops": flops / step_s / 1e9,
                "frac_of_peak": flops / step_s / (ranks * peak_1t), "frac_of_machine": flops / step_s / peak_all,
                "local_step_s": local[mu], "speedup_vs_local": local[mu] / step_s,
                # the warm-up step runs on the sampling weights: its teacher gap must be 0 (clamp fraction 0)
                "warmup_teacher_gap_max": warm["teacher_gap_max"], "warmup_clamp_frac": warm["clamp_frac"][0],
                "clamp_frac_first": metrics["clamp_frac"][0],
            })
            print(json.dumps(results[-1]), flush=True)
    # best of the two peak measurements: background load only ever lowers a GEMM's FLOP/s
    peak_1t = max(peak_1t, gemm_peak(torch.float32, threads=1))
    peak_all = max(peak_all, gemm_peak(torch.float32, threads=cores))
    for push in pushes:
        print(json.dumps(push), flush=True)
    print(json.dumps({"bench": "learner_gemm", "gemm_1thread_gflops": peak_1t / 1e9,
                      f"gemm_{cores}threads_gflops": peak_all / 1e9, "load_avg_1m_end": os.getloadavg()[0]}),
          flush=True)

    print(f"# learner benchmark ({'quick' if args.quick else 'full'}): {rows} rows, P={prompt_len}, L={L}, "
          f"fp32 GEMM {peak_1t / 1e9:.0f} GFLOP/s (1 thread) / {peak_all / 1e9:.0f} ({cores} threads)")
    for r in results:
        print(f"#  ranks={r['ranks']} mu={r['mu']}: step {r['step_s']:.2f}s  {r['rows_per_s']:.1f} rows/s  "
              f"{r['tokens_per_s']:.0f} tok/s  {r['gflops']:.1f} GFLOP/s = {100 * r['frac_of_peak']:.0f}% of "
              f"{r['ranks']}x1-thread GEMM  (local no-FSDP step {r['local_step_s']:.2f}s)")
    for push in pushes:
        print(f"#  push ranks={push['ranks']}: {push['bytes'] / 1e6:.1f} MB export {push['export_s'] * 1e3:.0f}ms + "
              f"set_weights {push['set_weights_s'] * 1e3:.0f}ms vs memcpy {push['memcpy_s'] * 1e3:.1f}ms "
              f"({push['push_over_memcpy']:.0f}x)")
    ray.kill(actor)
    ray.get(reward_pool.shutdown.remote())
    ray.kill(reward_pool)
    ray.shutdown()
    tmp.cleanup()


if __name__ == "__main__":
    main()
