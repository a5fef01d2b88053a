"""Pipeline throughput of the real training job: sync vs async (pipeline.max_staleness 0 / 1), 1 vs 2 rollout actors.

  python -m benchmarks.pipeline [--quick] [--steps 10] [--no-pin]

Each configuration builds the job's own Trainer (RolloutFleet, RewardWorker, LearnerGroup on a local Ray instance)
with a small dLLM and runs it for `--steps` steps; every service uses one torch thread, and (unless --no-pin) each
rollout actor and the learner rank are pinned to one core with sched_setaffinity, so "1 vs 2 actors" means
"1 vs 2 cores of rollout". Steps/s is measured between the first and the last step record (the first step, which
fills the pipeline and warms the caches, is excluded). One JSON line per configuration, then one with the ratios
against the naive reference in the same run: synchronous, one actor. The weight sync column is the driver's
`sync_weights` phase: rank 0 exports the state dict into the object store and (sync mode) every actor loads it.
"""
from __future__ import annotations

from common import cluster

cluster.local_env()  # before anything imports ray (common/cluster.py)
# ruff: noqa: E402

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import ray
import torch

from common.config import load_config

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "sudoku_tiny.yaml"
# chosen so that one rollout (B=4 prompts x G=6, 40 tokens, 20 denoising steps, + S_old / S_ref targets) and one
# learner update (mu inner iterations over the 24 rows) take comparable time on one core: the case async mode is for
MODEL = ["model.tiny.hidden_size=128", "model.tiny.num_layers=2", "model.tiny.num_heads=4",
         "model.tiny.intermediate_size=384", "sft.enabled=false", "sampler.gen_length=40", "sampler.block_length=8",
         "sampler.steps=20", "rollout.prompts_per_step=4", "rollout.group_size=6", "rollout.torch_threads=1",
         "learner.cpus_per_rank=1", "learner.torch_threads=1", "eval.num_prompts=0", "checkpoint.export_hf=false"]


def _spin(core: int) -> float:
    """One thread of 128x128 matmuls on one core (about the size of the tiny model's GEMMs)."""
    if core >= 0:
        os.sched_setaffinity(0, {core})
    torch.set_num_threads(1)
    a = torch.randn(128, 128, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    for _ in range(15000):
        a @ a
    return time.perf_counter() - start


def core_parallelism() -> float:
    """How much two single-threaded services can overlap on this box right now: the throughput of two pinned
    matmul loops at once over one alone (2.0 on two idle cores; less when other work or a shared physical core
    takes its share). Async mode cannot beat it."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return 1.0
    alone = _spin(-1)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        pair = list(pool.map(_spin, cores[:2]))
    return 2 * alone / max(pair)


def pids(handles) -> list[int]:
    return ray.get([h.__ray_call__.remote(lambda self: os.getpid()) for h in handles])


def set_affinity(pid: int, cores: set[int]) -> None:
    """Every thread of the process (sched_setaffinity(pid) alone moves only its main thread; Ray's and torch's
    threads would keep floating)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cores)
        except ProcessLookupError:
            pass


def pin(trainer) -> dict[str, list[int]]:
    """Actor i -> core i mod n; the learner rank -> the last core (it shares it with actor n-1 when n actors = cores:
    in sync mode they never run at the same time; in async mode with 1 actor each has its own core)."""
    cores = sorted(os.sched_getaffinity(0))
    placed = {}
    for i, pid in enumerate(pids(trainer.fleet.actors)):
        set_affinity(pid, {cores[i % len(cores)]})
        placed[f"rollout-{i}"] = [cores[i % len(cores)]]
    for rank, pid in enumerate(pids(trainer.learner.workers)):
        set_affinity(pid, {cores[-1]})
        placed[f"learner-rank{rank}"] = [cores[-1]]
    return placed


def run(num_actors: int, max_staleness: int, steps: int, mu: int, root: Path, pin_cores: bool) -> dict:
    from deploy.trainer import Trainer

    run_dir = root / f"a{num_actors}_s{max_staleness}"
    cfg = load_config(CONFIG, [*MODEL, f"steps={steps}", f"algorithm.mu={mu}", f"rollout.num_actors={num_actors}",
                               f"pipeline.max_staleness={max_staleness}", f"run_dir={run_dir}",
                               f"cache_dir={root / 'cache'}"])
    trainer = Trainer(cfg)
    placed = pin(trainer) if pin_cores else {}
    stamps: list[float] = []
    log = trainer.metrics.log

    def stamped(step, values):  # the wall-clock time at which each step finished (the driver logs it then)
        if "learner" in values:
            stamps.append(time.perf_counter())
        return log(step, values)

    trainer.metrics.log = stamped
    try:
        trainer.run()
    finally:
        trainer.shutdown()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if "learner" in r][1:]  # step 1 fills the pipeline: excluded
    steps_per_s = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    rows = cfg.rollout.prompts_per_step * cfg.rollout.group_size

    def mean(key: str) -> float:
        return statistics.mean(r["time"][key] for r in records)

    return {"actors": num_actors, "max_staleness": max_staleness, "mu": mu, "steps_measured": len(records),
            "steps_per_s": steps_per_s, "rows_per_s": steps_per_s * rows,
            # in async mode "rollout" is only the wait for a batch that was generated during the previous update
            "rollout_wait_s": mean("rollout"), "update_s": mean("update"), "weight_sync_s": mean("sync_weights"),
            "weights_mb": trainer.learner.num_params * 4 / 2**20,
            "staleness_max": max(r["staleness"]["max"] for r in records),
            "tokens_per_s_per_actor": statistics.mean(v for r in records for v in r["rollout"].values()),
            "pinned": placed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 steps per configuration (about 2 minutes in all)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--mu", type=int, default=4, help="inner iterations (sets the learner's share of a step)")
    parser.add_argument("--no-pin", action="store_true", help="let the OS place the services")
    args = parser.parse_args()
    steps = 5 if args.quick else args.steps
    pin_cores = not args.no_pin and hasattr(os, "sched_setaffinity")
    # logical CPUs for the reservations (2 actors + learner + reward worker); the cores are what the OS has
    cluster.init_ray(num_cpus=max(4, os.cpu_count() or 1))
    probe = {"bench": "box", "cores": len(os.sched_getaffinity(0)), "loadavg_1min": os.getloadavg()[0],
             "core_parallelism": core_parallelism()}
    print(json.dumps(probe), flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="gdsd-bench-") as tmp:
        for num_actors, max_staleness in [(1, 0), (1, 1), (2, 0), (2, 1)]:
            res = run(num_actors, max_staleness, steps, args.mu, Path(tmp), pin_cores)
            results[(num_actors, max_staleness)] = res
            print(json.dumps({"bench": "pipeline", **res}), flush=True)
    ref = results[(1, 0)]
    base = ref["steps_per_s"]
    # what perfect overlap would give: a sync step costs rollout + update + sync; an async step only the longer one
    ideal = (1 / base) / max(ref["rollout_wait_s"], ref["update_s"] + ref["weight_sync_s"])
    print(json.dumps({"bench": "pipeline_ratios", "reference": "sync, 1 actor",
                      **{f"a{a}_s{s}_vs_ref": r["steps_per_s"] / base for (a, s), r in results.items()},
                      "async_vs_sync_1_actor": results[(1, 1)]["steps_per_s"] / base,
                      "async_ideal_1_actor": ideal, "two_vs_one_actor_sync": results[(2, 0)]["steps_per_s"] / base,
                      "loadavg_1min_end": os.getloadavg()[0]}), flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
