"""The one metrics sink of a run: Ray gauges (Prometheus / Grafana), TensorBoard, optional wandb, and a JSONL file in
the run directory. Nested dicts are flattened with '/' ('reward/mean'); lists become their last value plus
'<key>/first' (per-inner-iteration metrics: first and last iteration are the interesting ones).

Ray gauges follow Prometheus conventions (deploy/README.md, "Metrics", lists every one): `gdsd_<name>` with the unit
at the end of the name, and what varies within a run in tags rather than in the name:
  run        every gauge: metrics.run_name, default the run_dir's name
  actor      per-actor values (rollout/actor3/tokens_per_s -> gdsd_rollout_tokens_per_second{actor="3"})
  iteration  "first" / "last" inner iteration of per-iteration learner values (clamp fraction, k2, losses, ...)
"""
from __future__ import annotations

import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Any

from common.config import MetricsConfig

log = logging.getLogger(__name__)
# per-iteration learner values: logged as '<key>/first' and '<key>' (the last iteration)
PER_ITERATION = {"clamp_frac", "k2", "loss_kl", "loss_reg", "mean_abs_delta", "mean_logp", "grad_norm"}


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}/"))
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) for v in value):
            out[f"{name}/first"], out[name] = float(value[0]), float(value[-1])
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def gauge_spec(key: str) -> tuple[str, dict[str, str]]:
    """A flattened key -> (Prometheus-style gauge name without Ray's `ray_` prefix, tags other than `run`)."""
    tags: dict[str, str] = {}
    parts = key.split("/")
    if parts[0] == "rollout" and len(parts) == 3 and (m := re.fullmatch(r"actor(\d+)", parts[1])):
        tags["actor"] = m.group(1)
        parts = [parts[0], parts[2]]
    if parts[0] == "learner" and parts[-1] == "first" and len(parts) == 3 and parts[1] in PER_ITERATION:
        tags["iteration"], parts = "first", parts[:2]
    elif parts[0] == "learner" and len(parts) == 2 and parts[1] in PER_ITERATION:
        tags["iteration"] = "last"
    if parts[0] == "busy":  # seconds each service worked on the step (deploy/trainer.py busy_seconds)
        if len(parts) == 3 and (m := re.fullmatch(r"actor(\d+)", parts[1])):
            return "gdsd_busy_actor_seconds", {**tags, "actor": m.group(1), "phase": parts[2]}
        return "gdsd_busy_" + re.sub(r"[^a-zA-Z0-9_]", "_", "_".join(parts[1:])) + "_seconds", tags
    if parts[0] == "reward_service":  # rewards/service/metrics.py counters: variable parts as tags
        parts, tags = _reward_service(parts[1:], tags)
    name = "_".join(parts)
    if parts[0] == "time":  # the step's phases, wall clock
        name += "_seconds"
    elif parts[0] == "bytes":  # bytes/batches -> batches_bytes
        name = "_".join(parts[1:]) + "_bytes"
    name = re.sub(r"_tokens_per_s$", "_tokens_per_second", name)
    name = re.sub(r"^learner_seconds$", "learner_update_seconds", name)
    return "gdsd_" + re.sub(r"[^a-zA-Z0-9_]", "_", name), tags


def _reward_service(parts: list[str], tags: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """reward/<f>_mean -> reward_mean{function}, errors/<kind> -> errors{kind}, sandbox/seconds_<stat> ->
    sandbox_seconds{stat}, sandbox/cpu_seconds_<stat> -> sandbox_cpu_seconds{stat}, sandbox/<outcome> ->
    sandbox_outcomes{outcome}; rows, pool/*, sandbox/programs, sandbox/orphans as named."""
    head = ["reward_service"]
    if len(parts) == 2 and parts[0] == "reward" and parts[1].endswith("_mean"):
        return head + ["reward", "mean"], {**tags, "function": parts[1].removesuffix("_mean")}
    if len(parts) == 2 and parts[0] == "errors":
        return head + ["errors"], {**tags, "kind": parts[1]}
    if len(parts) == 2 and parts[0] == "sandbox" and parts[1].startswith("seconds_"):
        return head + ["sandbox", "seconds"], {**tags, "stat": parts[1].removeprefix("seconds_")}
    if len(parts) == 2 and parts[0] == "sandbox" and parts[1].startswith("cpu_seconds_"):
        return head + ["sandbox", "cpu", "seconds"], {**tags, "stat": parts[1].removeprefix("cpu_seconds_")}
    if len(parts) == 2 and parts[0] == "sandbox" and parts[1] not in ("programs", "orphans"):
        return head + ["sandbox", "outcomes"], {**tags, "outcome": parts[1]}
    return head + parts, tags


class Metrics:
    def __init__(self, run_dir: str | Path, cfg: MetricsConfig | None = None, *, ray_gauges: bool = True,
                 config: dict[str, Any] | None = None) -> None:
        cfg = cfg or MetricsConfig()
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run = cfg.run_name or self.run_dir.name
        self.jsonl = open(self.run_dir / "metrics.jsonl", "a")
        self.tb = None
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported here: tensorboard is slow to import

            self.tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        self.wandb = None
        if cfg.wandb:
            try:
                import wandb
            except ImportError:
                raise ImportError("metrics.wandb=true needs wandb: pip install 'gdsd-rl[wandb]'") from None
            self.wandb = wandb.init(project=cfg.wandb_project, name=self.run, dir=str(self.run_dir),
                                    mode=cfg.wandb_mode, config=config, reinit="create_new")
        self.ray_gauges = ray_gauges
        self.gauges: dict[str, Any] = {}

    def _gauge(self, name: str, tag_keys: tuple[str, ...]):
        if name not in self.gauges:
            from ray.util.metrics import Gauge

            self.gauges[name] = Gauge(name, description=f"GDSD-RL {name} (deploy/README.md, Metrics)",
                                      tag_keys=("run", *tag_keys))
        return self.gauges[name]

    def log(self, step: int, values: dict[str, Any]) -> dict[str, float]:
        flat = flatten(values)
        # unix seconds: lines of a resumed or restarted run can be told apart and put on a wall-clock axis
        self.jsonl.write(json.dumps({"step": step, "timestamp": time.time(), **values}, default=str) + "\n")
        self.jsonl.flush()
        finite = {k: v for k, v in flat.items() if math.isfinite(v)}
        for key, value in finite.items():
            if self.tb is not None:
                self.tb.add_scalar(key, value, step)
            if self.ray_gauges:
                name, tags = gauge_spec(key)
                self._gauge(name, tuple(sorted(tags))).set(value, tags={"run": self.run, **tags})
        if self.tb is not None:
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(finite, step=step)
        return flat

    def close(self) -> None:
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
