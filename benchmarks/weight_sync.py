"""Weight sync: the object-store push vs the weight bus broadcast (`pipeline.weight_sync`), 1 and 2 rollout actors.

  python -m benchmarks.weight_sync [--quick] [--hidden 512 --layers 8]

Builds the job's own RolloutFleet (actors + a reward worker) and LearnerGroup (1 rank) on a local Ray instance with
a tiny dLLM, then times `push(wait=True)` of deploy/weight_sync.py, best of `--repeats`: for the object store, rank 0
exports into the store and every actor loads it; for the bus, rank 0 gathers and broadcasts bucket by bucket and
every actor stages it; `+ load` adds each actor's load of the staged weights (what its next rollout does first), so
both columns do the same work. The naive reference in the same run is a plain torch `copy_` of the same bytes into
preallocated tensors in one process. One JSON line per case, then a summary.
"""
from __future__ import annotations

from common import cluster

cluster.local_env()  # before anything imports ray (common/cluster.py)
# ruff: noqa: E402

import argparse
import json
import os
import tempfile
import time

import ray
import torch

from common.config import load_config
from common.denoiser import load_denoiser
from common.tiny import make_tiny_model
from deploy.fleet import RolloutFleet
from deploy.weight_sync import BroadcastSync, ObjectStoreSync
from learner.group import LearnerGroup


def memcpy_seconds(state: dict[str, torch.Tensor], repeats: int) -> float:
    dst = {k: torch.empty_like(v) for k, v in state.items()}
    best = float("inf")
    for _ in range(repeats + 2):
        start = time.perf_counter()
        for k, v in state.items():
            dst[k].copy_(v)
        best = min(best, time.perf_counter() - start)
    return best


def time_push(sync, fleet: RolloutFleet, repeats: int) -> tuple[float, float]:
    """(best push seconds, best push + every actor loaded seconds)."""
    push_s, loaded_s = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        sync.push(wait=True)
        push_s.append(time.perf_counter() - start)
        ray.get([a.ping.remote() for a in fleet.actors])  # loads staged weights (a no-op after set_weights)
        loaded_s.append(time.perf_counter() - start)
    return min(push_s), min(loaded_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="hidden 64, 2 layers, 2 repeats")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bucket-mb", type=float, default=256)
    args = parser.parse_args()
    hidden, layers, repeats = (64, 2, 2) if args.quick else (args.hidden, args.layers, args.repeats)
    cluster.init_ray(num_cpus=8)
    tmp = tempfile.TemporaryDirectory()
    overrides = [f"model.tiny.hidden_size={hidden}", f"model.tiny.num_layers={layers}", "model.tiny.num_heads=4",
                 f"model.tiny.intermediate_size={3 * hidden}", f"pipeline.weight_bucket_mb={args.bucket_mb}",
                 f"cache_dir={tmp.name}", f"run_dir={tmp.name}/run", "rollout.cpus_per_actor=1"]
    cfg0 = load_config(None, overrides)
    model_path = str(make_tiny_model(cfg0.model.tiny, os.path.join(tmp.name, "model")))
    state = load_denoiser(cfg0.model, model_path, device="cpu").model.state_dict()
    nbytes = sum(v.numel() * v.element_size() for v in state.values())
    copy_s = memcpy_seconds(state, repeats)
    print(json.dumps({"bench": "weight_sync_setup", "hidden": hidden, "layers": layers, "mb": nbytes / 2**20,
                      "tensors": len(state), "memcpy_s": copy_s, "cores": os.cpu_count(),
                      "load_avg_1m": os.getloadavg()[0]}), flush=True)
    rows = []
    for actors in (1, 2):
        cfg = load_config(None, [*overrides, f"rollout.num_actors={actors}"])
        learner, fleet = LearnerGroup(cfg, model_path), RolloutFleet(cfg, model_path)
        ray.get([a.ping.remote() for a in fleet.actors])
        for mode, sync in (("object_store", ObjectStoreSync(learner, fleet)),
                           ("broadcast", BroadcastSync(cfg, learner, fleet))):
            push_s, loaded_s = time_push(sync, fleet, repeats)
            rows.append({"bench": "weight_sync", "mode": mode, "actors": actors, "mb": nbytes / 2**20,
                         "push_s": push_s, "push_and_load_s": loaded_s, "memcpy_s": copy_s,
                         "over_memcpy": loaded_s / copy_s, "gb_per_s_per_actor": nbytes / loaded_s / 1e9})
            print(json.dumps(rows[-1]), flush=True)
        fleet.shutdown()
        learner.shutdown()
    print(f"# weight sync: {nbytes / 2**20:.1f} MB ({len(state)} tensors), memcpy {copy_s * 1e3:.1f} ms")
    for r in rows:
        print(f"#  {r['mode']:12s} actors={r['actors']}: push {r['push_s'] * 1e3:.0f} ms, + load "
              f"{r['push_and_load_s'] * 1e3:.0f} ms = {r['over_memcpy']:.1f}x memcpy")
    ray.shutdown()
    tmp.cleanup()


if __name__ == "__main__":
    main()
