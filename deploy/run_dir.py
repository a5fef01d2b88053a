"""The run directory: one run per directory, found where the user expects it, and checkpoints that fit a disk.

- `resolve_paths`: run_dir / cache_dir as absolute paths. Under `ray job submit` the driver's working directory is
  Ray's copy of the uploaded working dir, so a relative run_dir would vanish into it: refused there.
- `claim`: a non-empty run_dir is refused unless `--resume` (continue it; the new config may differ from the saved
  config.yaml only in keys that keep the run one continuous run, `RESUME_SAFE`) or `--overwrite` (`clear_outputs`
  removes its outputs once every other check passed; a directory holding anything else is never cleared).
- `prune_checkpoints`: `checkpoint.keep_last` newest step directories stay, the latest always.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from common.config import ConfigError, RunConfig

# What a run writes into its directory (the Trainer, deploy/metrics.py, the learner's checkpoints and exports).
OUTPUTS = {"config.yaml", "metrics.jsonl", "tensorboard", "wandb", "checkpoint", "final", "eval.md", "eval.json",
           "training.png"}  # the last one: deploy/report.py, written after the run
# Keys a resumed run may change: where things run and what is logged, not what is trained. Any other difference
# (seed, model, sampler, task, batch shape, algorithm, optimizer, learner.num_ranks / micro_batch_rows, staleness,
# reward service, SFT) would make the resumed steps a different experiment than the checkpointed ones.
RESUME_SAFE = ("run_dir", "cache_dir", "eval.", "checkpoint.", "cluster.", "metrics.",
               "rollout.num_actors", "rollout.cpus_per_actor", "rollout.gpus_per_actor", "rollout.resources",
               "rollout.torch_threads", "reward.num_workers", "reward.cpus_per_worker", "reward.resources",
               "learner.cpus_per_rank", "learner.gpus_per_rank", "learner.resources", "learner.placement",
               "learner.torch_threads",
               "learner.max_restarts", "pipeline.weight_sync", "pipeline.weight_bucket_mb",
               "pipeline.weight_sync_timeout_s")


def under_job_submit() -> bool:
    """True in the driver of `ray job submit` (the job supervisor sets this variable for the entrypoint)."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def resolve_paths(cfg: RunConfig) -> RunConfig:
    """cfg with absolute run_dir / cache_dir; a relative run_dir under `ray job submit` is a ConfigError."""
    if under_job_submit():
        if not Path(cfg.run_dir).is_absolute():
            raise ConfigError(
                f"config key 'run_dir': {cfg.run_dir!r} is relative; under `ray job submit` the job runs in Ray's "
                f"copy of the working dir ({os.getcwd()}), which the next job does not see. Give an absolute path on "
                f"a filesystem the head can write, e.g. run_dir=$PWD/{cfg.run_dir}")
        if not Path(cfg.cache_dir).is_absolute():
            print(f"note: cache_dir {cfg.cache_dir!r} is relative: the base model / SFT cache goes to "
                  f"{Path(cfg.cache_dir).resolve()} (Ray's copy of the working dir) and is rebuilt by the next job",
                  flush=True)
    # a relative model.path (make run's data/starts/...) is the driver's: actors may run in another directory
    model = cfg.model if cfg.model.path is None else cfg.model.model_copy(
        update={"path": str(Path(cfg.model.path).resolve())})
    return cfg.model_copy(update={"run_dir": str(Path(cfg.run_dir).resolve()),
                                  "cache_dir": str(Path(cfg.cache_dir).resolve()), "model": model})


def flat_items(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and key not in ("resources", "service"):
            out.update(flat_items(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resume_conflicts(saved: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys whose change breaks continuity, as 'key: old -> new' (both dicts are RunConfig.model_dump(mode='json')).
    Keys absent from the saved config (added to the schema later) are not compared."""
    old_flat, new_flat = flat_items(saved), flat_items(new)
    out = []
    for key, value in new_flat.items():
        if key not in old_flat or old_flat[key] == value:
            continue
        if key == "steps":
            continue  # checked against the checkpoint's step by the caller (more steps is continuing)
        if not any(key == safe or (safe.endswith(".") and key.startswith(safe)) for safe in RESUME_SAFE):
            out.append(f"{key}: {old_flat[key]!r} -> {value!r}")
    return out


def claim(cfg: RunConfig, *, resume: bool, overwrite: bool) -> None:
    """Refuse to mix two runs in one directory (see the module docstring); touches nothing."""
    run_dir = Path(cfg.run_dir)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: continue the run or start it again")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"config key 'run_dir': {run_dir} exists and is not a directory")
    entries = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    if resume:
        check_resume_config(cfg)
        return
    if not entries:
        return
    if not overwrite:
        raise ConfigError(
            f"run_dir {run_dir} is not empty ({', '.join(entries[:6])}{', ...' if len(entries) > 6 else ''}): a second "
            "run there would mix its metrics, checkpoints and evaluation with the first one's. Continue it with "
            "--resume, start it again with --overwrite (removes its outputs), or choose another run_dir=...")
    foreign = [e for e in entries if e not in OUTPUTS]
    if foreign:
        raise ConfigError(f"--overwrite: run_dir {run_dir} holds files that no run writes ({', '.join(foreign)}); "
                          "not clearing it. Remove them or choose another run_dir=...")


def clear_outputs(run_dir: str | Path) -> None:
    """--overwrite, after every check passed: remove what `claim` found (only names in OUTPUTS)."""
    run_dir = Path(run_dir)
    removed = []
    for name in sorted(OUTPUTS):
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(name)
    if removed:
        print(f"--overwrite: removed the previous run's outputs from {run_dir}: {', '.join(removed)}", flush=True)


def check_resume_config(cfg: RunConfig) -> None:
    """--resume: the saved config.yaml exists, and the new config changes no key that breaks continuity."""
    saved_path = Path(cfg.run_dir) / "config.yaml"
    if not saved_path.is_file():
        raise ConfigError(f"--resume: {saved_path} does not exist (is run_dir={cfg.run_dir} a run directory?)")
    saved = yaml.safe_load(saved_path.read_text()) or {}
    conflicts = resume_conflicts(saved, cfg.model_dump(mode="json"))
    if conflicts:
        raise ConfigError(f"--resume: the config differs from {saved_path} in keys that would make the resumed steps "
                          f"a different run: {'; '.join(conflicts)}. Use the saved values, or start a new run_dir "
                          "(changeable on resume: steps (more), eval.*, checkpoint.*, metrics.*, cluster.*, and where "
                          "actors / ranks run; deploy/README.md, Resume)")


def prune_checkpoints(checkpoint_dir: Path, keep_last: int) -> list[Path]:
    """Remove all but the newest `keep_last` step directories (by step number); never the one `latest` names.
    Returns the removed paths. keep_last = 0 keeps everything."""
    if keep_last <= 0 or not checkpoint_dir.is_dir():
        return []
    latest_file = checkpoint_dir / "latest"
    latest = latest_file.read_text().strip() if latest_file.is_file() else None
    steps = sorted((p for p in checkpoint_dir.iterdir() if p.is_dir() and p.name.startswith("step")),
                   key=lambda p: p.name)  # step%06d: lexical order is step order
    keep = {p.name for p in steps[-keep_last:]} | ({latest} if latest else set())
    removed = [p for p in steps if p.name not in keep]
    for path in removed:
        shutil.rmtree(path)
    return removed
