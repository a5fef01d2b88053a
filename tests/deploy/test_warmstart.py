"""deploy/warmstart.py: the starting policy, cached under cache_dir keyed by the settings that produce it."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from common.config import load_config
from deploy.warmstart import base_model, warm_start

TINY = ["model.tiny.hidden_size=32", "model.tiny.num_layers=1", "model.tiny.num_heads=2",
        "model.tiny.intermediate_size=64", "sampler.gen_length=40", "sampler.block_length=8", "sampler.steps=5"]


def weights(path) -> dict[str, torch.Tensor]:
    return load_file(f"{path}/model.safetensors")


def test_a_model_path_is_used_as_is(tmp_path):
    assert base_model(load_config(None, ["model.path=/models/llada"]), tmp_path) == "/models/llada"
    assert not any(tmp_path.iterdir())


def test_the_tiny_model_is_made_once_per_setting(tmp_path):
    cfg = load_config(None, TINY)
    path = base_model(cfg, tmp_path)
    stamp = (tmp_path / path).stat().st_mtime_ns, weights(path)
    assert base_model(cfg, tmp_path) == path  # reused, not rebuilt
    assert (tmp_path / path).stat().st_mtime_ns == stamp[0]
    other = base_model(load_config(None, [*TINY, "model.tiny.seed=1"]), tmp_path)
    assert other != path and not torch.equal(weights(other)["model.transformer.wte.weight"],
                                             stamp[1]["model.transformer.wte.weight"])


@pytest.mark.slow
def test_warm_start_trains_once_and_is_reused(ray_local, tmp_path):
    sft = ["sft.enabled=true", "sft.steps=2", "sft.batch_size=4", "sft.num_examples=8", "learner.cpus_per_rank=1"]
    cfg = load_config(None, [*TINY, *sft])
    base = base_model(cfg, tmp_path)
    tuned = warm_start(cfg, base, tmp_path)
    assert tuned != base and (tmp_path / tuned).is_dir()
    before, after = weights(base), weights(tuned)
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    assert warm_start(cfg, base, tmp_path) == tuned  # cached: no second LearnerGroup
    assert warm_start(load_config(None, [*TINY, *sft, "sft.lr=1e-4"]), base, tmp_path) != tuned  # new settings


def test_a_shipped_start_is_bfloat16_with_its_provenance_and_loads_exactly(tmp_path):
    import hashlib
    import json

    from common.models.weights import build_model
    from deploy.warmstart import ship

    source = base_model(load_config(None, TINY), tmp_path / "cache")
    out = ship(source, tmp_path / "start", provenance={"command": "python -m deploy.warmstart ..."})
    shipped = weights(out)
    assert all(t.dtype == torch.bfloat16 for t in shipped.values())
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    meta = json.loads((out / "start.json").read_text())
    assert meta["command"].startswith("python -m deploy.warmstart")
    assert meta["sha256"]["model.safetensors"] == hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    # loaded in float32 it is the source rounded to bfloat16, exactly (the upcast is exact)
    loaded = dict(build_model(out, dtype=torch.float32).named_parameters())
    for name, param in build_model(source, dtype=torch.float32).named_parameters():
        assert loaded[name].dtype == torch.float32
        assert torch.equal(loaded[name], param.to(torch.bfloat16).float()), name


def test_the_make_run_start_is_shipped_intact():
    """The `make run` config starts from a start in the repository (no machine-dependent SFT): it exists, its
    weights are the ones start.json was written for, and the run resolves the relative path for its actors."""
    import hashlib
    import json
    import re
    from pathlib import Path

    from deploy.run_dir import resolve_paths

    config = re.search(r"^CONFIG \?= (\S+)$", Path("Makefile").read_text(), re.M).group(1)
    cfg = load_config(config)
    assert not cfg.sft.enabled and cfg.model.path is not None and not Path(cfg.model.path).is_absolute()
    meta = json.loads((Path(cfg.model.path) / "start.json").read_text())
    for name, digest in meta["sha256"].items():
        assert hashlib.sha256((Path(cfg.model.path) / name).read_bytes()).hexdigest() == digest, name
    assert meta["command"].startswith("python -m deploy.warmstart --config configs/")
    # the shipped start was trained for this task and prompt format
    assert meta["task"]["name"] == cfg.task.name and meta["task"]["prompt_format"] == cfg.task.prompt_format
    resolved = resolve_paths(cfg)
    assert Path(resolved.model.path).is_absolute() and Path(resolved.model.path) == Path(cfg.model.path).resolve()
