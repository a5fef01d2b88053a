"""The bf16 teacher gap is exactly 0 (issue 20): a bf16 LoRA actor's S_old equals the first S_theta of a 2-rank bf16
FSDP2 learner, before and after a weight push, with the learner's micro-batches pooled across two actor batches.

Why it can be exact: the learner forwards the actors' own row chunks (learner/micro.py), in the same dtype, with the
frozen base held in bf16 like the actor's, the RoPE tables left in float32 (FSDP's input cast off, learner/fsdp.py),
and the same seeded LoRA dropout. Any of those broken gives gaps of 1e-3..1e-2 here, far outside eps = 4e-4.
"""
import pytest
import ray

from common.config import load_config
from learner.group import LearnerGroup
from rollouts import actor_batches, with_advantages  # tests/learner/rollouts.py

pytestmark = pytest.mark.slow

BF16 = ["sampler.gen_length=32", "sampler.steps=8", "sampler.block_length=16", "algorithm.mu=2", "learner.lr=1e-2",
        "learner.cpus_per_rank=1", "model.dtype=bfloat16", "learner.micro_batch_rows=4", "model.lora.enabled=true",
        "model.lora.r=4", "model.lora.alpha=8", "model.lora.dropout=0.1"]


@pytest.fixture(scope="module")
def setup(ray_local, tiny_model_dir):
    with actor_batches(load_config(None, BF16), tiny_model_dir) as data:
        yield data


def test_bf16_lora_two_ranks_teacher_gap_is_zero(setup, tiny_model_dir):
    cfg, actor, prompts, batches = setup
    group = LearnerGroup(cfg.model_copy(update={"learner": cfg.learner.model_copy(update={"num_ranks": 2})}),
                         tiny_model_dir)
    try:
        first = group.train_step(batches)  # 2 actor batches x 12 rows: 6 micro-batches of 4 rows, 3 per rank
        assert first["micro_batches"] == 3
        assert first["teacher_gap_max"] == 0.0 and first["clamp_frac"][0] == 0.0, first["teacher_gap_max"]
        assert first["loss_reg"][0] > 0
        state_ref, version = group.export_weights()
        assert ray.get(actor.set_weights.remote(state_ref, version)) == version == 1
        fresh = with_advantages(ray.get(actor.rollout.remote(prompts[:2], 6)[0]), seed=9)
        after_push = group.train_step([fresh])
        assert after_push["teacher_gap_max"] == 0.0 and after_push["clamp_frac"][0] == 0.0
        assert after_push["clamp_frac"][1] > 0  # the second iteration moved S_theta out of the tight band
    finally:
        group.shutdown()
