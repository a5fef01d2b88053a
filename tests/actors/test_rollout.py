"""RolloutActor end to end on a local Ray instance: real tiny model, the real RewardPool actor, arrow batch by
ObjectRef."""
import pytest
import ray
import torch

from actors.rollout import RemoteRolloutActor
from common.batch import RolloutBatch
from common.config import ModelConfig, load_config
from common.denoiser import load_denoiser
from common.logprob import denoise_logprob
from common.masking import consistent_masks
from common.tasks import make_prompts
from rewards.service.pool import RemoteRewardPool

pytestmark = pytest.mark.slow  # Ray actors + real rollouts / FSDP steps: minutes on 2 cores

OVERRIDES = ["sampler.gen_length=32", "sampler.steps=8", "sampler.block_length=16", "algorithm.mu=2",
             "algorithm.num_mc=2", "learner.micro_batch_rows=5"]


@pytest.fixture(scope="module")
def rollout(ray_local, tiny_model_dir):
    cfg = load_config(None, OVERRIDES)
    pool = RemoteRewardPool.remote(1, num_cpus_per_worker=0.5)
    actor = RemoteRolloutActor.options(num_cpus=1, name="rollout-test").remote(
        cfg, tiny_model_dir, reward_pool=pool)
    prompts = make_prompts(task="sudoku", prompt_format="compact", split="train", num=2, seed=0)
    batch_ref, summary_ref = actor.rollout.remote(prompts, 6)
    yield cfg, actor, prompts, RolloutBatch.from_arrow(ray.get(batch_ref)), ray.get(summary_ref)
    ray.kill(actor)
    ray.get(pool.shutdown.remote())
    ray.kill(pool)


def test_batch_contract(rollout):
    cfg, _, prompts, batch, summary = rollout
    B, L = 12, cfg.sampler.gen_length
    assert batch.num_rows == B and batch.completion_ids.shape == (B, L)
    assert batch.group_id.tolist() == [0] * 6 + [1] * 6
    assert batch.prompt_uid == [p.uid for p in prompts for _ in range(6)]
    assert batch.mask_seeds.shape == (B, 2, 2) and (batch.mask_seeds == batch.mask_seeds[0]).all()
    assert batch.old_logp.shape == (B, 2, 2) and torch.isfinite(batch.old_logp).all()
    assert torch.isfinite(batch.ref_logp).all()
    assert (batch.reveal_step >= 0).all() and (batch.policy_version == 0).all()
    r = batch.reward.view(2, 6)
    expected = r - (r.sum(1, keepdim=True) - r) / 5  # leave-one-out, written out
    assert torch.allclose(batch.advantage, expected.view(-1))
    assert summary.rows == B and summary.reward_errors == 0 and "sudoku" in batch.reward_parts
    # the reward service's metrics travel with the summary (to metrics.jsonl): every row scored once, by the pool
    assert summary.reward_metrics.pool.rows_scored == B and summary.reward_metrics.rows == B
    assert summary.reward_metrics.flat()["reward/total_mean"] == pytest.approx(float(batch.reward.mean()))


def test_s_old_matches_recomputation_in_another_process(rollout, tiny_model_dir):
    """The actor's S_old (computed 5 rows per forward) equals S_theta computed here with 12, 6 and 1 rows per
    forward, same weights, same dtype: delta = 0 exactly on CPU; bfloat16 weights are far off."""
    cfg, _, _, batch, _ = rollout
    den = load_denoiser(ModelConfig(), tiny_model_dir, device="cpu")
    B, L = batch.completion_ids.shape
    for j in range(2):
        for m in range(2):
            masks = consistent_masks(int(batch.mask_seeds[0, j, m]), B, L)
            for rows in (12, 6, 1):
                with torch.no_grad():
                    s = torch.cat([denoise_logprob(den, batch.prompt_ids[i:i + rows], batch.completion_ids[i:i + rows],
                                                   masks[i:i + rows]) for i in range(0, B, rows)])
                assert torch.equal(s, batch.old_logp[:, j, m]), (j, m, rows, (s - batch.old_logp[:, j, m]).abs().max())
    # the numerical trap (docs/design.md): a learner in another dtype than the actor sees a teacher gap far beyond
    # the clamp range eps, so most rows would be clamped from the first inner iteration on
    bf16 = load_denoiser(ModelConfig(dtype="bfloat16"), tiny_model_dir, device="cpu")
    with torch.no_grad():
        s16 = denoise_logprob(bf16, batch.prompt_ids, batch.completion_ids,
                              consistent_masks(int(batch.mask_seeds[0, 0, 0]), B, L))
    gaps = (s16 - batch.old_logp[:, 0, 0]).abs()
    assert int((gaps > cfg.algorithm.eps).sum()) >= B // 2, gaps  # most rows outside [log(1-eps), log(1+eps)]


def test_set_weights_changes_policy_and_version(rollout, tiny_model_dir):
    _, actor, prompts, batch, _ = rollout
    den = load_denoiser(ModelConfig(), tiny_model_dir, device="cpu")
    state = {k: v * 0.5 for k, v in den.model.state_dict().items()}
    assert ray.get(actor.set_weights.remote(ray.put(state), 3)) == 3
    batch_ref, _ = actor.rollout.remote(prompts[:1], 6)
    new = RolloutBatch.from_arrow(ray.get(batch_ref))
    assert (new.policy_version == 3).all()
    den.model.load_state_dict(state)
    masks = consistent_masks(int(new.mask_seeds[0, 0, 0]), 6, new.completion_ids.shape[1])
    with torch.no_grad():
        assert torch.equal(denoise_logprob(den, new.prompt_ids, new.completion_ids, masks), new.old_logp[:, 0, 0])
