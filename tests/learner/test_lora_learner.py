"""The FSDP2 learner with LoRA on a local Ray instance (gloo, CPU): 2 ranks vs 1, only adapters move, an
adapter-only push gives the actor's S_old == the learner's S_theta at the first inner iteration (dropout on), resume
bit-for-bit from an adapter-only DCP checkpoint, merged export + peft adapter directory."""
import json

import pytest
import ray
import torch

from common.config import ModelConfig, load_config
from common.denoiser import load_denoiser
from common.models.lora import is_adapter
from learner.group import LearnerGroup
from rollouts import actor_batches, with_advantages  # tests/learner/rollouts.py

pytestmark = pytest.mark.slow

LORA = ["model.lora.enabled=true", "model.lora.r=4", "model.lora.alpha=8", "model.lora.dropout=0.1"]
BASE = ["sampler.gen_length=32", "sampler.steps=8", "sampler.block_length=16", "algorithm.mu=2",
        "learner.lr=1e-2", "learner.cpus_per_rank=1", *LORA]


def ranks(cfg, n: int):
    return cfg.model_copy(update={"learner": cfg.learner.model_copy(update={"num_ranks": n})})


@pytest.fixture(scope="module")
def setup(ray_local, tiny_model_dir):
    with actor_batches(load_config(None, BASE), tiny_model_dir) as data:
        yield data


def test_lora_two_ranks_match_one_rank_and_push_only_adapters(setup, tiny_model_dir):
    cfg, _, _, batches = setup
    pushed, metrics = {}, {}
    for n in (1, 2):
        group = LearnerGroup(ranks(cfg, n), tiny_model_dir)
        metrics[n] = group.train_step(batches)
        ref, _ = group.export_weights()
        pushed[n] = ray.get(ref)
        group.shutdown()
    assert metrics[1]["loss_reg"][0] > 0 and metrics[1]["teacher_gap_max"] == 0.0
    for key in ("loss_reg", "loss_kl", "clamp_frac", "grad_norm"):
        assert metrics[1][key] == pytest.approx(metrics[2][key], rel=1e-4, abs=1e-9), key
    base = load_denoiser(ModelConfig(), tiny_model_dir, device="cpu").net.state_dict()
    assert pushed[1] and all(is_adapter(k) for k in pushed[1])  # the push carries the adapters only
    assert set(pushed[1]) == set(pushed[2])
    for name, value in pushed[1].items():
        assert torch.allclose(value, pushed[2][name], rtol=0, atol=1e-2 * cfg.learner.lr), name
    assert any(k.endswith("lora_B") and v.abs().max() > 0 for k, v in pushed[1].items())  # B moved off zero
    assert sum(v.numel() for v in pushed[1].values()) < sum(v.numel() for v in base.values()) / 4


def test_lora_teacher_gap_zero_after_push_and_resume_bit_exact(setup, tiny_model_dir, tmp_path):
    cfg, actor, prompts, batches = setup
    group = LearnerGroup(ranks(cfg, 2), tiny_model_dir)
    group.train_step(batches[:1])
    state_ref, version = group.export_weights()
    assert ray.get(actor.set_weights.remote(state_ref, version)) == version == 1
    fresh = with_advantages(ray.get(actor.rollout.remote(prompts[:2], 6)[0]), seed=7)
    # the actor computed S_old with the pushed adapters and the same seeded dropout draws as the learner's S_theta
    first = group.train_step([fresh])
    assert first["teacher_gap_max"] == 0.0 and first["clamp_frac"][0] == 0.0 and first["staleness"] == [0]
    assert first["loss_kl"][0] > 0  # S_ref (adapters off) differs from the trained policy

    group.save_checkpoint(str(tmp_path / "ckpt"))
    after = group.train_step(batches[1:])
    after_state = ray.get(group.export_weights()[0])
    group.shutdown()
    resumed = LearnerGroup(ranks(cfg, 2), tiny_model_dir)
    assert resumed.load_checkpoint(str(tmp_path / "ckpt"))["version"] == 2
    again = resumed.train_step(batches[1:])
    for key in ("loss_reg", "loss_kl", "grad_norm", "mean_logp"):
        assert again[key] == after[key], key  # bit-for-bit on CPU
    again_state = ray.get(resumed.export_weights()[0])
    assert all(torch.equal(again_state[k], v) for k, v in after_state.items())

    path = resumed.export_hf(str(tmp_path / "hf"))
    resumed.shutdown()
    # the merged weights in the official layout, loaded without LoRA
    merged = load_denoiser(ModelConfig(), path, device="cpu")
    adapted = load_denoiser(ModelConfig(lora=cfg.model.lora), tiny_model_dir, device="cpu")
    adapted.net.load_state_dict(again_state, strict=False)
    x = torch.randint(0, 30, (2, 24))
    with torch.no_grad():
        assert torch.allclose(merged.logits(x), adapted.logits(x), atol=1e-5, rtol=0)
    config = json.loads((tmp_path / "hf" / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["peft_type"] == "LORA"
