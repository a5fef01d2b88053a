"""The starting policy: a local HF model, or the tiny built-in one, optionally warm-started by SFT (learner/sft.py).

Both are cached under `cache_dir` (default runs/cache, shared by runs), keyed by a hash of the settings that produce
them, so a second `make run` reuses them."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.config import RunConfig
from common.tasks import make_prompts
from common.tiny import make_tiny_model
from learner.group import LearnerGroup

log = logging.getLogger(__name__)


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def base_model(cfg: RunConfig, cache_root: Path) -> str:
    if cfg.model.path:
        return cfg.model.path
    path = cache_root / f"tiny-{_key(cfg.model.tiny.model_dump())}"
    if not (path / "config.json").is_file():
        make_tiny_model(cfg.model.tiny, path)
    return str(path)


def warm_start(cfg: RunConfig, model_path: str, cache_root: Path) -> str:
    """SFT on generated (prompt, solution) pairs of the train split; returns the HF directory of the result."""
    scfg = cfg.sft
    path = cache_root / f"sft-{_key(model_path, scfg.model_dump(), cfg.task.model_dump(), cfg.sampler.gen_length)}"
    if (path / "config.json").is_file():
        log.info("SFT warm start: reusing %s", path)
        return str(path)
    items = make_prompts(task=cfg.task.name, prompt_format=cfg.task.prompt_format, split="train",
                         num=scfg.num_examples, seed=scfg.seed, source=cfg.task.source)
    # from-scratch SFT wants a larger clip than RL's official 0.2
    learner_cfg = cfg.learner.model_copy(update={"lr": scfg.lr, "warmup_steps": min(50, scfg.steps // 10),
                                                 "grad_clip": 1.0})
    group = LearnerGroup(cfg.model_copy(update={"learner": learner_cfg}), model_path)
    rng = np.random.default_rng(scfg.seed)
    progress = tqdm(range(scfg.steps), desc="SFT warm start", dynamic_ncols=True)
    for _ in progress:
        idx = rng.choice(len(items), size=scfg.batch_size, replace=False)
        stats = group.sft_step([items[i].prompt for i in idx], [items[i].answer for i in idx])
        progress.set_postfix(loss=f"{stats['loss']:.3f}")
    group.export_hf(str(path))
    group.shutdown()
    return str(path)
