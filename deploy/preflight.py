"""Checks of the world a run is about to start in, before any actor exists (seconds, not an 8B SFT + evaluation +
first rollout later). Config-only rules live in common/config.py's validation; these need the filesystem or the
cluster:

  check_files(cfg, resume=...)   before Ray: model.path is a model directory; --resume finds a checkpoint
  check_memory(cfg)              after ray.init: the memory plan (deploy/plan.py) of every actor and rank fits the
                                 GPU memory (cluster.gpu_mem_gib, the driver's GPU, or the cluster's accelerator type)
  check_resources(cfg)           after ray.init: the cluster has the CPUs / GPUs / custom resources the config asks
                                 for, in total and per actor / rank on some node (else Ray would queue them forever)

Every message names the config keys and what was found.
"""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path

from common.config import RunConfig

log = logging.getLogger(__name__)


class PreflightError(RuntimeError):
    """The run cannot start; the message says which key or path and how to fix it."""


def check_files(cfg: RunConfig, *, resume: bool) -> None:
    if cfg.model.path is not None:
        path = Path(cfg.model.path)
        if not path.is_dir():
            raise PreflightError(f"config key 'model.path': {cfg.model.path!r} is not a directory (a local HF model "
                                 "directory is expected: weights cannot be downloaded by the job)")
        if not (path / "config.json").is_file():
            raise PreflightError(f"config key 'model.path': {cfg.model.path!r} has no config.json, so it is not an HF "
                                 f"model directory (found: {', '.join(sorted(p.name for p in path.iterdir())[:8])})")
    if resume:
        latest = Path(cfg.run_dir) / "checkpoint" / "latest"
        if not latest.is_file():
            raise PreflightError(f"--resume: no checkpoint in run_dir {cfg.run_dir} ({latest} does not exist); "
                                 "start the run without --resume")
        step_dir = latest.parent / latest.read_text().strip()
        state = step_dir / "trainer_state.json"
        if not state.is_file():
            raise PreflightError(f"--resume: {latest} names {step_dir.name}, but {state} does not exist (an "
                                 "interrupted save or a pruned directory)")
        step = json.loads(state.read_text())["step"]
        if cfg.steps < step:
            raise PreflightError(f"--resume: config key 'steps' is {cfg.steps}, but the checkpoint is at step {step}; "
                                 f"set steps >= {step}")


def demands(cfg: RunConfig) -> list[tuple[str, int, dict[str, float]]]:
    """(config section, count, resources of one) of every actor / rank the run creates at once."""
    r, w, l = cfg.rollout, cfg.reward, cfg.learner
    pool = [("reward pool", 1, dict(w.resources))] if w.resources else []  # it reserves no CPU, only these
    return [("rollout", r.num_actors, {"CPU": r.cpus_per_actor, "GPU": r.gpus_per_actor, **r.resources}),
            ("reward", w.num_workers, {"CPU": w.cpus_per_worker, **w.resources}), *pool,
            ("learner", l.num_ranks, {"CPU": l.cpus_per_rank, "GPU": l.gpus_per_rank, **l.resources})]


KEYS = {("rollout", "CPU"): "rollout.num_actors x rollout.cpus_per_actor",
        ("rollout", "GPU"): "rollout.num_actors x rollout.gpus_per_actor",
        ("reward", "CPU"): "reward.num_workers x reward.cpus_per_worker",
        ("learner", "CPU"): "learner.num_ranks x learner.cpus_per_rank",
        ("learner", "GPU"): "learner.num_ranks x learner.gpus_per_rank"}
COUNT_KEY = {"rollout": "rollout.num_actors", "reward": "reward.num_workers", "reward pool": "the reward pool actor",
             "learner": "learner.num_ranks"}
SECTION = {"reward pool": "reward"}  # a demand's config section, where its name is not one


def _key(section: str, resource: str) -> str:
    return KEYS.get((section, resource),
                    f"{COUNT_KEY[section]} x {SECTION.get(section, section)}.resources.{resource}")


def shortfalls(wanted: list[tuple[str, int, dict[str, float]]], nodes: list[dict[str, float]]) -> list[str]:
    """What cannot be placed: totals over all nodes, and each single actor / rank on the largest node.
    Pure (tested without Ray); `nodes` are the alive nodes' total resources."""
    total: dict[str, float] = defaultdict(float)
    for node in nodes:
        for name, amount in node.items():
            total[name] += amount
    need: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for section, count, one in wanted:
        for name, amount in one.items():
            if amount:
                need[name].append((section, count * amount))
    problems = []
    for name, parts in need.items():
        amount = sum(a for _, a in parts)
        if amount > total.get(name, 0.0) + 1e-9:
            terms = " + ".join(f"{_key(s, name)} = {a:g}" for s, a in parts)
            problems.append(f"{name}: the config asks for {amount:g} ({terms}), the cluster has "
                            f"{total.get(name, 0.0):g}")
    for section, count, one in wanted:
        asked = {k: v for k, v in one.items() if v}
        if count and total and not any(all(node.get(k, 0.0) + 1e-9 >= v for k, v in asked.items()) for node in nodes):
            problems.append(f"one {section} {'rank' if section == 'learner' else 'actor'} asks for {asked} "
                            f"({SECTION.get(section, section)}.* keys), but no single node has that much (nodes: "
                            f"{[{k: v for k, v in n.items() if k in asked} for n in nodes]})")
    return problems


def check_resources(cfg: RunConfig) -> None:
    import ray

    nodes = [{k: v for k, v in n["Resources"].items() if not k.startswith("node:")}
             for n in ray.nodes() if n.get("Alive")]
    problems = shortfalls(demands(cfg), nodes)
    if problems:
        raise PreflightError(
            "the Ray cluster cannot hold this run (Ray would queue its actors forever): " + "; ".join(problems)
            + ". Lower those keys, or give the cluster more: `python -m deploy.head start --num-cpus N` / "
            "`ray start --num-cpus N --num-gpus N --resources '{...}'` (logical CPUs are scheduling units and may "
            "exceed the cores), or cluster.num_cpus=N for a local instance")
    free = ray.available_resources()
    busy = {name: amount for name, amount in _totals(demands(cfg)).items() if amount > free.get(name, 0.0) + 1e-9}
    if busy:
        log.warning("the cluster holds enough in total, but other jobs use part of it: this run needs %s and %s is "
                    "free now; its actors wait until it is", busy, {k: free.get(k, 0.0) for k in busy})


def _totals(wanted: list[tuple[str, int, dict[str, float]]]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for _, count, one in wanted:
        for name, amount in one.items():
            if amount:
                out[name] += count * amount
    return dict(out)


def device_memory_gib(cfg: RunConfig) -> tuple[float | None, str]:
    """(GiB of one GPU, where the number comes from): cluster.gpu_mem_gib, else the driver's own GPU, else the Ray
    cluster's `accelerator_type:<name>` resource when that name has one known memory size (deploy/plan.py)."""
    if cfg.cluster.gpu_mem_gib is not None:
        return cfg.cluster.gpu_mem_gib, "cluster.gpu_mem_gib"
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / 2**30, "the driver's GPU"
    try:
        import ray

        if ray.is_initialized():
            from deploy.plan import ACCELERATOR_GIB

            types = {k.split(":", 1)[1] for n in ray.nodes() if n.get("Alive") for k in n["Resources"]
                     if k.startswith("accelerator_type:")}
            known = [ACCELERATOR_GIB[t] for t in types if t in ACCELERATOR_GIB]
            if known and len(known) == len(types):
                return min(known), f"the cluster's accelerator_type {sorted(types)}"
    except ImportError:
        pass
    return None, "unknown"


def check_memory(cfg: RunConfig) -> None:
    """The memory plan of one rollout actor and one learner rank must fit one GPU (only for what runs on GPUs)."""
    if not (cfg.rollout.gpus_per_actor > 0 or cfg.learner.gpus_per_rank > 0):
        return
    from deploy.plan import build_plan, model_args, problems

    gib, source = device_memory_gib(cfg)
    try:
        plan = build_plan(cfg, model_args(cfg), gpu_mem_gib=gib)
    except (ValueError, FileNotFoundError) as err:
        raise PreflightError(f"memory plan: {err}") from None
    actor, _ = plan.actor.peak()
    rank, _ = plan.learner.peak()
    log.info("memory plan (deploy/plan.py): rollout actor %.1f GiB, learner rank %.1f GiB at their peaks; GPU memory "
             "%s (%s)", actor / 2**30, rank / 2**30, "unknown" if gib is None else f"{gib:g} GiB", source)
    if gib is None:
        log.warning("GPU memory unknown: the memory plan is not checked (set cluster.gpu_mem_gib)")
        return
    found = [p for p in problems(plan)
             if (p.startswith("one rollout") and cfg.rollout.gpus_per_actor > 0)
             or (p.startswith("one learner") and cfg.learner.gpus_per_rank > 0)]
    if found:
        raise PreflightError(f"the memory plan does not fit a GPU of {gib:g} GiB ({source}): " + "; ".join(found)
                             + ". Print the whole plan with `python -m deploy.plan --config ...`")
