"""diffu-GRPO (d1) and wd1 trained end to end by the FSDP2 learner on real RolloutActor batches (gloo, CPU):
per-token targets recomputed on the learner, the same prompt mask for old / new / reference within an inner
iteration, 2 ranks == 1 rank, wd1 groups never split."""
import math

import pytest
import ray
import torch

from common.algorithms import ALGORITHMS
from common.batch import RolloutBatch
from common.config import ModelConfig, load_config
from common.denoiser import load_denoiser
from learner.token_update import onestep_prompt_mask
from rollouts import actor_batches, run_step  # tests/learner/rollouts.py

pytestmark = pytest.mark.slow  # Ray actors + real rollouts / FSDP steps: minutes on 2 cores

TOKEN = ["sampler.gen_length=32", "sampler.steps=8", "sampler.block_length=16", "algorithm.mu=2", "learner.lr=1e-3",
         "learner.cpus_per_rank=1"]


def config(name: str, *extra: str, ranks: int = 1):
    # per-token targets are computed on the learner; wd1 has none (ratio-free) and reads no teacher_source
    source = ["algorithm.teacher_source=learner"] if "teacher_source" in ALGORITHMS[name].reads else []
    cfg = load_config(None, TOKEN + [f"algorithm.name={name}", *source, *extra])
    return cfg.model_copy(update={"learner": cfg.learner.model_copy(update={"num_ranks": ranks})})


@pytest.fixture(scope="module")
def token_setup(ray_local, tiny_model_dir):
    """(the first batch as a RolloutBatch, the two batch refs): real rollouts with seeded rewards."""
    with actor_batches(config("diffu_grpo", "algorithm.beta=0.04"), tiny_model_dir) as (_, _, _, refs):
        yield RolloutBatch.from_arrow(ray.get(refs[0])), refs


def assert_same_update(cfg, runs, keys, tiny_model_dir):
    (m1, s1), (m2, s2) = runs
    assert m1["global_rows"] == m2["global_rows"] == 24
    for key in keys:
        assert m1[key] == pytest.approx(m2[key], rel=1e-4, abs=1e-7), key
    for name, value in s1.items():  # float32 tolerance relative to the step, as test_two_ranks_match_one_rank
        assert torch.allclose(value, s2[name], rtol=0, atol=1e-2 * cfg.learner.lr), name
    initial = load_denoiser(ModelConfig(), tiny_model_dir, device="cpu").net.state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in s1.items())  # the step really moved the weights


def test_actor_sends_no_sequence_targets(token_setup):
    batch, _ = token_setup
    assert batch.old_logp.shape == (12, 2, 1) and torch.isnan(batch.old_logp).all()
    assert torch.isnan(batch.ref_logp).all()


def test_diffu_grpo_step_two_ranks_match_one(token_setup, tiny_model_dir):
    _, batches = token_setup
    runs = [run_step(config("diffu_grpo", "algorithm.beta=0.04", ranks=r), tiny_model_dir, batches) for r in (1, 2)]
    metrics = runs[0][0]
    for key in ("loss_pg", "loss_kl", "clip_frac", "mean_ratio", "mean_logp", "kl", "grad_norm"):
        assert all(math.isfinite(v) for v in metrics[key]), key
    # first inner iteration: old per-token log-probs from the same weights, micro-batches and prompt mask
    assert metrics["teacher_gap_max"] == 0.0 and metrics["mean_ratio"][0] == 1.0 and metrics["clip_frac"][0] == 0.0
    assert metrics["kl"][0] == pytest.approx(0.0, abs=1e-7)  # reference = initial weights = sampling weights
    assert metrics["mean_ratio"][1] != 1.0 and metrics["kl"][1] > 0  # the second iteration sees moved weights
    assert runs[1][0]["teacher_gap_max"] == 0.0 and runs[1][0]["clip_frac"][0] == 0.0
    # token-level metrics (ratio, kl) are token means per micro-batch, averaged by rows: compare the exact sums only
    assert_same_update(config("diffu_grpo"), runs, ("loss_pg", "loss_kl", "grad_norm"), tiny_model_dir)


def test_wd1_step_two_ranks_match_one(token_setup, tiny_model_dir):
    _, batches = token_setup
    # micro-batches of one group (6 rows): 1 rank forwards all of them, 2 ranks half each; never a split group
    runs = [run_step(config("wd1", "learner.micro_batch_rows=6", ranks=r), tiny_model_dir, batches) for r in (1, 2)]
    metrics = runs[0][0]
    for key in ("loss_pos", "loss_neg", "mean_seq_logp", "w_pos_max", "grad_norm"):
        assert all(math.isfinite(v) for v in metrics[key]), key
    assert "teacher_gap_max" not in metrics  # ratio-free: no old log-probs
    assert_same_update(config("wd1"), runs, ("loss_pos", "loss_neg", "mean_seq_logp", "w_pos_max", "grad_norm"),
                       tiny_model_dir)


def test_prompt_mask_is_seeded_and_independent_of_sharding(token_setup):
    batch, _ = token_setup
    full = onestep_prompt_mask(batch, 0, 0.15)
    assert torch.equal(full, onestep_prompt_mask(batch, 0, 0.15))  # a pure function of the batch's seed
    assert not torch.equal(full, onestep_prompt_mask(batch, 1, 0.15))  # another inner iteration, another mask
    assert torch.equal(onestep_prompt_mask(batch.select(slice(3, 9)), 0, 0.15), full[3:9])
    real = torch.arange(batch.prompt_ids.shape[1])[None] >= batch.prompt_ids.shape[1] - batch.prompt_len[:, None]
    assert not (full & ~real).any() and full.any()  # only real prompt tokens, some of them
    assert not onestep_prompt_mask(batch, 0, 0.0).any()
