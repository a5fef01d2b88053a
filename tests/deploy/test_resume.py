"""`--resume RUN_DIR`: a job killed (SIGKILL) after its step-1 checkpoint, resumed, ends exactly where an
uninterrupted job ends: same step-2 metrics and the same final weights, bit for bit (CPU, float32, one thread).

What makes this hold: the learner checkpoint (DCP: weights, AdamW state, LR schedule, version), the driver's
trainer_state.json (step, data cursor), and rollout noise that is a function of (seed, step, first group) rather than
of a running generator that a fresh actor process would restart.
"""
from __future__ import annotations

import json
import time

import pytest
from safetensors.torch import load_file

from records import deterministic  # tests/deploy/records.py

pytestmark = pytest.mark.slow
# a checkpoint after every step, an evaluation after step 1 (it must survive the resume), and mu = 8 inner iterations:
# a step long enough (~1 s) that the kill below lands between the step-1 checkpoint and the final one
SETTINGS = ["steps=2", "checkpoint.every=1", "eval.every=1", "algorithm.mu=8"]


def test_resume_after_kill_matches_uninterrupted_run(jobs, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    jobs.run("full", *SETTINGS, f"run_dir={full}")

    proc = jobs.start("killed", *SETTINGS, f"run_dir={resumed}")
    latest = resumed / "checkpoint" / "latest"
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            if latest.is_file() and latest.read_text().strip() == "step000001":
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the job ended before its step-1 checkpoint:\n{jobs.log('killed')[-3000:]}"
        proc.kill()  # SIGKILL: no shutdown hooks, no final checkpoint (its local Ray instance dies with it)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert latest.read_text().strip() == "step000001", "the kill came too late: the final checkpoint exists"
    assert not (resumed / "final").exists()

    jobs.run("resumed", *SETTINGS, f"run_dir={resumed}", resume=True)
    assert "resumed" in jobs.log("resumed") and "at step 1" in jobs.log("resumed")

    ref = {r["step"]: r for r in jobs.step_records(full)}
    got = {r["step"]: r for r in jobs.step_records(resumed)}  # the last record of a step wins (a retried step 2)
    assert sorted(ref) == sorted(got) == [1, 2]
    assert got[2]["version"] == 2 and got[2]["learner"]["optimizer_steps"] == 2 * 8  # mu = 8 per step
    assert deterministic(got[1]) == deterministic(ref[1])  # same run up to the kill
    assert deterministic(got[2]) == deterministic(ref[2])  # rollout, rewards, loss, KL, grad norm after the resume

    a, b = load_file(str(full / "final" / "model.safetensors")), load_file(str(resumed / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a), "final weights differ"
    assert json.loads((resumed / "eval.json").read_text()) == json.loads((full / "eval.json").read_text())
