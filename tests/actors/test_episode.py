"""The episode function (actors/episode.py) and the PolicyEngine (actors/engine.py) in-process, without Ray: a real
tiny model and the real reward code (rewards' worker body), every stage checked against a recomputation here."""
from __future__ import annotations

import pytest
import torch

from actors.engine import PolicyEngine
from actors.episode import run_episode
from common.config import load_config
from common.logprob import denoise_logprob
from common.masking import consistent_masks
from common.tasks import make_prompts
from rewards.service.worker import RewardWorkerImpl

OVERRIDES = ["sampler.gen_length=16", "sampler.steps=4", "sampler.block_length=8", "algorithm.mu=2",
             "learner.micro_batch_rows=4"]


def episode(engine, cfg, prompts, score_fn, *, seed=0, group_offset=3):
    return run_episode(prompts, cfg=cfg, policy=engine.policy, reference=engine.reference, score_fn=score_fn,
                       group_size=4, group_offset=group_offset, version=engine.version,
                       sample_rng=torch.Generator().manual_seed(seed), seed_rng=torch.Generator().manual_seed(seed + 1))


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    cfg = load_config(None, OVERRIDES)
    engine = PolicyEngine(cfg, tiny_model_dir, device=torch.device("cpu"))
    scorer = RewardWorkerImpl({"threads": 1})  # threads given: no Ray resource lookup in this process
    prompts = make_prompts(task="sudoku", prompt_format="compact", split="train", num=2, seed=0)
    calls = []

    def score_fn(texts, metas, tasks):
        calls.append(len(texts))
        return scorer.score_with_metrics(texts, metas, tasks)

    batch, summary = episode(engine, cfg, prompts, score_fn)
    return cfg, engine, prompts, score_fn, calls, batch, summary


def test_every_stage_lands_in_the_batch(setup):
    cfg, engine, prompts, _, calls, batch, summary = setup
    B, L = 8, cfg.sampler.gen_length
    assert calls == [B]  # one scoring call for the whole episode
    assert batch.completion_ids.shape == (B, L) and batch.group_id.tolist() == [3] * 4 + [4] * 4
    assert batch.prompt_uid == [p.uid for p in prompts for _ in range(4)]
    # rewards in row order: the texts rescored here give the same totals
    metas = [p.meta for p in prompts for _ in range(4)]
    again, _ = RewardWorkerImpl({"threads": 1}).score_with_metrics(batch.text, metas, batch.task)
    assert batch.reward.tolist() == pytest.approx([r.total for r in again])
    r = batch.reward.view(2, 4)
    assert torch.allclose(batch.advantage, (r - (r.sum(1, keepdim=True) - r) / 3).view(-1))
    # teacher targets: S_old and S_ref recomputed with the seeds' masks (reference = the initial weights = policy)
    for j in range(2):
        masks = consistent_masks(int(batch.mask_seeds[0, j, 0]), B, L)
        with torch.no_grad():
            s = denoise_logprob(engine.policy, batch.prompt_ids, batch.completion_ids, masks)
        assert torch.equal(s, batch.old_logp[:, j, 0]) and torch.equal(s, batch.ref_logp[:, j, 0])
    assert summary.groups == [3, 4] and summary.rows == B and summary.version == 0
    assert summary.reward_metrics.rows == B


def test_an_episode_is_a_pure_function_of_its_generators(setup):
    cfg, engine, prompts, score_fn, _, batch, _ = setup
    same, _ = episode(engine, cfg, prompts, score_fn)
    other, _ = episode(engine, cfg, prompts, score_fn, seed=5)
    assert torch.equal(same.completion_ids, batch.completion_ids) and torch.equal(same.old_logp, batch.old_logp)
    assert not torch.equal(other.mask_seeds, batch.mask_seeds)


def test_a_reward_service_that_loses_rows_fails_the_episode(setup):
    cfg, engine, prompts, score_fn, _, _, _ = setup

    def lossy(texts, metas, tasks):
        results, metrics = score_fn(texts, metas, tasks)
        return results[:-1], metrics

    with pytest.raises(RuntimeError, match="returned 7 results for 8 rows"):
        episode(engine, cfg, prompts, lossy)


def test_per_token_algorithms_get_no_actor_targets(tiny_model_dir, setup):
    _, _, prompts, score_fn, _, _, _ = setup
    cfg = load_config(None, [*OVERRIDES, "algorithm.name=diffu_grpo", "algorithm.teacher_source=learner"])
    engine = PolicyEngine(cfg, tiny_model_dir, device=torch.device("cpu"))
    assert engine.reference is None  # the learner holds the per-token reference
    batch, _ = episode(engine, cfg, prompts, score_fn)
    assert torch.isnan(batch.old_logp).all() and torch.isnan(batch.ref_logp).all()


def test_engine_loads_weights_with_their_version(setup, tiny_model_dir):
    cfg = setup[0]
    engine = PolicyEngine(cfg, tiny_model_dir, device=torch.device("cpu"))
    state = {k: v * 0.5 for k, v in engine.policy.model.state_dict().items()}
    assert engine.load(state, 4) == 4 and engine.version == 4
    assert engine.load_staged(0) == 4  # nothing staged: keeps what it holds
    assert all(torch.equal(v, state[k]) for k, v in engine.policy.model.state_dict().items())
