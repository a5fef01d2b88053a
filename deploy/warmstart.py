"""The starting policy: a local HF model, or the tiny built-in one, optionally warm-started by SFT (learner/sft.py).

Both are cached under `cache_dir` (default runs/cache, shared by runs), keyed by a hash of the settings that produce
them, so a second `make run` reuses them.

A warm start depends on the machine's float rounding (other GEMM kernels give other weights after a few hundred SFT
steps), so the `make run` default does not build one: it starts from a start shipped in the repository
(data/starts/, data/README.md), built once by

  python -m deploy.warmstart --config configs/countdown_tiny.yaml --out data/starts/NAME [key=value ...]

which runs the SFT of the config, stores the weights in bfloat16 (half the bytes; loading upcasts exactly) and writes
`start.json`: the command, the settings, the machine and the weights' sha256.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.config import RunConfig
from common.machine import cpu_name
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


def ship(source: str, out: Path, *, provenance: dict) -> Path:
    """Copy the HF directory `source` to `out` with bfloat16 weights (config.json torch_dtype) and start.json."""
    import torch
    from safetensors.torch import load_file, save_file

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(source, out)
    config = json.loads((out / "config.json").read_text())
    config["torch_dtype"] = "bfloat16"
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    digests = {}
    for f in sorted(out.glob("*.safetensors")):
        tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(str(f)).items()}
        save_file(tensors, str(f), metadata={"format": "pt"})
        f.chmod(0o644)  # save_file writes 0600; a shipped file is read by whoever clones the repository
        digests[f.name] = hashlib.sha256(f.read_bytes()).hexdigest()
    (out / "start.json").write_text(json.dumps({**provenance, "sha256": digests}, indent=1) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    from common import cluster
    from common.config import load_config

    parser = argparse.ArgumentParser(description="build an SFT warm start once and store it as a shippable start")
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True,
                        help="directory to write (replaced), e.g. data/starts/countdown_tiny_sft1500")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides (e.g. model.path=null sft.enabled=true)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = load_config(args.config, args.overrides)
    if not cfg.sft.enabled:
        parser.error("sft.enabled is false in this config: add sft.enabled=true (and model.path=null to start "
                     "from the tiny built-in model)")
    cluster.init_ray(address=cfg.cluster.address, num_cpus=cfg.cluster.num_cpus or 2)
    cache = Path(cfg.cache_dir)
    source = warm_start(cfg, base_model(cfg, cache), cache)
    import torch

    provenance = {"command": "python -m deploy.warmstart " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "sft": cfg.sft.model_dump(), "task": cfg.task.model_dump(), "model": cfg.model.model_dump(),
                  "machine": cpu_name(), "torch": torch.__version__,
                  "date": time.strftime("%Y-%m-%d", time.gmtime())}
    print(ship(source, Path(args.out), provenance=provenance))
    return 0


if __name__ == "__main__":
    sys.exit(main())
