"""GDSD with LoRA on the tiny model end to end through `python -m deploy.job`: a LoRA SFT warm start (merged into its
export), RL whose weight bus (broadcast) carries the adapters only, every step's first inner iteration on the teacher
(S_theta == S_old, dropout on), and a final export of the merged model in the official layout plus a peft adapter
directory."""
from __future__ import annotations

import json

import pytest
import torch

from common.config import ModelConfig
from common.denoiser import load_denoiser

pytestmark = pytest.mark.slow
LORA = ["model.lora.enabled=true", "model.lora.r=32", "model.lora.alpha=64", "model.lora.dropout=0.05",
        "learner.lr=1e-2", "steps=2", "pipeline.weight_sync=broadcast",
        # a short LoRA warm start: trains the adapters through the job and merges them into its export
        "sft.enabled=true", "sft.steps=20", "sft.batch_size=8", "sft.num_examples=160", "sft.lr=1e-2"]


def test_gdsd_with_lora_through_the_job(jobs, tmp_path):
    run_dir = tmp_path / "run"
    jobs.run("lora", *LORA, f"run_dir={run_dir}")
    records = jobs.step_records(run_dir)
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert r["staleness"]["max"] == 0
        assert r["learner"]["teacher_gap_max"] == 0.0 and r["learner"]["clamp_frac"][0] == 0.0
    final = run_dir / "final"
    config = json.loads((final / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 32 and config["lora_alpha"] == 64
    # the tiny model earns no sudoku reward in two steps (A = 0, no RL gradient: tests/learner/test_lora_learner.py
    # trains the adapters with given advantages); the LoRA warm start did train, through the same learner
    base_dir = next((tmp_path / "cache").rglob("tiny-*/config.json")).parent
    base = load_denoiser(ModelConfig(), base_dir, device="cpu")
    merged = load_denoiser(ModelConfig(), final, device="cpu")
    before, after = base.net.state_dict(), merged.net.state_dict()
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # only adapted projections move (norms, embeddings and head are frozen under LoRA)
    assert changed and all(k.rsplit(".", 2)[-2] in ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")
                           for k in changed)
