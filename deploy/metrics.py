"""The one metrics sink of a run: Ray gauges (the dashboard's metrics view), TensorBoard scalars and a JSONL file
in the run directory. Nested dicts are flattened with '/' ('reward/mean'); lists become their last value plus
'<key>/first' (per-inner-iteration metrics: first and last iteration are the interesting ones)."""
from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


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


class Metrics:
    def __init__(self, run_dir: str | Path, *, ray_gauges: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(self.run_dir / "metrics.jsonl", "a")
        from torch.utils.tensorboard import SummaryWriter  # imported here: tensorboard is slow to import

        self.tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        self.ray_gauges = ray_gauges
        self.gauges: dict[str, Any] = {}

    def _gauge(self, name: str):
        if name not in self.gauges:
            from ray.util.metrics import Gauge

            self.gauges[name] = Gauge("gdsd_" + re.sub(r"[^a-zA-Z0-9_]", "_", name), description=name)
        return self.gauges[name]

    def log(self, step: int, values: dict[str, Any]) -> dict[str, float]:
        flat = flatten(values)
        self.jsonl.write(json.dumps({"step": step, **values}, default=str) + "\n")
        self.jsonl.flush()
        for key, value in flat.items():
            if math.isfinite(value):
                self.tb.add_scalar(key, value, step)
                if self.ray_gauges:
                    self._gauge(key).set(value)
        self.tb.flush()
        return flat

    def close(self) -> None:
        self.jsonl.close()
        self.tb.close()
