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
