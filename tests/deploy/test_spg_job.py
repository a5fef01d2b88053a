"""SPG end to end through `python -m deploy.job` (rollouts, learner steps, evaluation, export) on the tiny model."""
from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.slow


def test_spg_job_end_to_end(jobs, tmp_path):
    run_dir = tmp_path / "run"
    jobs.run("spg", "algorithm.name=spg", "algorithm.eubo_beta=1.0", "steps=2", f"run_dir={run_dir}")
    records = jobs.step_records(run_dir)
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        learner = r["learner"]
        assert len(learner["loss_pg"]) == 2 and all(math.isfinite(v) for v in learner["loss_pg"])  # mu = 2
        assert all(math.isfinite(v) for v in learner["mean_eubo"] + learner["mean_elbo"])
        assert "teacher_gap_max" not in learner  # ratio-free: no teacher targets
    assert "after (step 2)" in (run_dir / "eval.md").read_text()
    assert (run_dir / "final" / "model.safetensors").is_file()
