"""The whole job (SFT warm start, GDSD, evaluation, export) through `python -m deploy.job` on a tiny checkpoint in the
official LLaDA layout and one in the official Dream layout (shifted logits, q/k/v bias, GQA, entropy remasking),
loaded from `model.path` like an 8B checkpoint. The export must be a drop-in replacement of the source directory:
the family's official keys, the source's own config/tokenizer/code files, mode 0644, and loadable again."""
from __future__ import annotations

import json
import stat

import pytest
import torch
from safetensors import safe_open

from common.config import ModelConfig, TinyModelConfig
from common.denoiser import load_denoiser
from common.models import key_map
from common.tiny import make_tiny_model

pytestmark = pytest.mark.slow
SFT = ["sft.enabled=true", "sft.steps=2", "sft.batch_size=4", "sft.num_examples=16", "steps=1", "eval.num_prompts=4"]
FAMILY = {
    "llada": dict(tiny=TinyModelConfig(family="llada", hidden_size=64, num_layers=2, num_heads=4,
                                       intermediate_size=128), overrides=[]),
    "dream": dict(tiny=TinyModelConfig(family="dream", hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                                       intermediate_size=128),
                  overrides=["sampler.remasking=entropy", "sampler.top_p=0.95"]),
}


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_job_on_official_layout_checkpoint(jobs, tmp_path, family):
    source = make_tiny_model(FAMILY[family]["tiny"], tmp_path / f"{family}-source")
    (source / "modeling_official.py").write_text("raise RuntimeError('remote code must never run')\n")
    run_dir = tmp_path / "run"
    jobs.run(family, *SFT, *FAMILY[family]["overrides"], f"model.path={source}", f"run_dir={run_dir}")

    assert [r["step"] for r in jobs.step_records(run_dir)] == [1]
    eval_md = (run_dir / "eval.md").read_text()
    assert "before (step 0)" in eval_md and "after (step 1)" in eval_md
    assert list((tmp_path / "cache").rglob("sft-*/model.safetensors"))  # the warm start ran and was exported

    final = run_dir / "final"
    with safe_open(final / "model.safetensors", framework="pt") as f:
        keys = set(f.keys())
    base = load_denoiser(ModelConfig(), source, device="cpu")
    assert keys == set(key_map(base.net.args).values())  # the family's official names, nothing else
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "modeling_official.py"):
        assert (final / name).read_bytes() == (source / name).read_bytes(), name
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o644 for f in final.iterdir())
    trained = load_denoiser(ModelConfig(), final, device="cpu")
    assert trained.shift == (family == "dream") and trained.mask_id == base.mask_id
    before, after = base.net.state_dict(), trained.net.state_dict()
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    assert json.loads((final / "config.json").read_text())["model_type"] == ("llada" if family == "llada" else "Dream")
