"""SPG trained by the FSDP2 learner on real RolloutActor batches (gloo, CPU): no teacher targets from the actor, the
learner's first-iteration loss equals the sandwich loss recomputed here on the whole batch, 2 ranks == 1 rank. The
whole job: tests/deploy/test_spg_job.py."""
import math

import pytest
import ray
import torch

from common.batch import RolloutBatch
from common.config import ModelConfig, load_config
from common.denoiser import load_denoiser
from learner.losses import spg_loss
from learner.spg_update import sandwich_terms
from rollouts import actor_batches, run_step  # tests/learner/rollouts.py

pytestmark = pytest.mark.slow  # Ray actors + real rollouts / FSDP steps: minutes on 2 cores

SPG = ["algorithm.name=spg", "algorithm.mu=2", "algorithm.eubo_beta=1.5", "sampler.gen_length=32", "sampler.steps=8",
       "sampler.block_length=16", "learner.lr=1e-3", "learner.cpus_per_rank=1", "learner.micro_batch_rows=6"]


def config(*extra: str, ranks: int = 1):
    cfg = load_config(None, SPG + list(extra))
    return cfg.model_copy(update={"learner": cfg.learner.model_copy(update={"num_ranks": ranks})})


@pytest.fixture(scope="module")
def spg_setup(ray_local, tiny_model_dir):
    """(the two batch refs, the same batches as RolloutBatch): real rollouts with seeded rewards of both signs."""
    with actor_batches(config(), tiny_model_dir) as (_, _, _, refs):
        yield refs, [RolloutBatch.from_arrow(t) for t in ray.get(refs)]


def test_actor_computes_no_teacher_targets_for_spg(spg_setup):
    _, batches = spg_setup
    batch = batches[0]
    assert batch.old_logp.shape == (12, 2, 1) and torch.isnan(batch.old_logp).all()  # ratio-free: no S_old
    assert torch.isnan(batch.ref_logp).all()  # no KL term: no S_ref


def test_spg_step_matches_the_loss_and_two_ranks_match_one(spg_setup, tiny_model_dir):
    refs, batches = spg_setup
    runs = [run_step(config(ranks=r), tiny_model_dir, refs) for r in (1, 2)]
    (m1, s1), (m2, s2) = runs
    assert m1["global_rows"] == m2["global_rows"] == 24
    for key in ("loss_pg", "pos_frac", "mean_elbo", "mean_eubo", "grad_norm"):
        assert len(m1[key]) == 2 and all(math.isfinite(v) for v in m1[key]), key
        assert m1[key] == pytest.approx(m2[key], rel=1e-4, abs=1e-7), key
    assert "teacher_gap_max" not in m1  # no teacher
    # the first inner iteration, recomputed here in float64 bookkeeping on the initial weights: the sum over the
    # learner's micro-batches of the loss (normalised by the 24 global rows) is the loss of the whole step's rows
    den = load_denoiser(ModelConfig(), tiny_model_dir, device="cpu")
    total = 0.0
    with torch.no_grad():
        for batch in batches:
            for lo in range(0, batch.num_rows, 6):  # the learner's micro-batches (micro_batch_rows = 6)
                micro = batch.select(slice(lo, lo + 6))
                elbo, eubo = sandwich_terms(den, micro, 0, beta=1.5)
                total += spg_loss(elbo, eubo, micro.advantage, 32, mix_weight=0.5, num_rows=24)[0].item()
    assert m1["loss_pg"][0] == pytest.approx(total, rel=1e-4, abs=1e-6)
    assert m1["pos_frac"][0] == pytest.approx(sum(int((b.advantage > 0).sum()) for b in batches) / 24)
    initial = den.net.state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in s1.items())  # the step moved the weights
    for name, value in s1.items():  # float32 tolerance relative to the step (as the other 2-rank tests)
        assert torch.allclose(value, s2[name], rtol=0, atol=1e-2 * 1e-3), name
