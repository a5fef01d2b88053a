"""The model-family registry (common/families.py): a new family is one entry, an unknown one is an error naming the
registered families. The test family is a LLaDA clone under another name, `model_type` and key prefix: registered
with one entry, the tiny model is built, saved, loaded back by its `model_type`, run forward and sampled from, and
computes exactly what the same weights do as LLaDA."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors import safe_open

from actors.sampling import sample
from common.config import ConfigError, ModelConfig, SamplerConfig, TinyModelConfig, load_config
from common.denoiser import load_denoiser
from common.families import FAMILIES, get_family
from common.models import ModelArgs, family_of, key_map
from common.tiny import make_tiny_model
from common.tokenize import encode_prompts

TINY = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, seed=3)


@pytest.fixture
def clone_family(monkeypatch):
    """The one entry that adds the family (a LLaDA clone stored under its own key prefix)."""
    entry = dataclasses.replace(FAMILIES["llada"], name="llada_clone", model_type="LLaDAClone",
                                block_prefix="model.clone.blocks")
    monkeypatch.setitem(FAMILIES, "llada_clone", entry)
    return entry


def test_a_registered_family_is_built_loaded_run_and_sampled(tmp_path, clone_family):
    clone_dir = make_tiny_model(TinyModelConfig(family="llada_clone", **TINY), tmp_path / "clone")
    llada_dir = make_tiny_model(TinyModelConfig(family="llada", **TINY), tmp_path / "llada")
    config = json.loads((clone_dir / "config.json").read_text())
    assert config["model_type"] == "LLaDAClone" and family_of(config, None) == "llada_clone"
    with safe_open(clone_dir / "model.safetensors", framework="pt") as f:
        keys = set(f.keys())
    assert "model.clone.blocks.1.attn_out.weight" in keys and not any(k.startswith("model.transformer.blocks")
                                                                       for k in keys)
    clone = load_denoiser(ModelConfig(), clone_dir, device="cpu")  # family from config.json model_type
    llada = load_denoiser(ModelConfig(), llada_dir, device="cpu")
    assert clone.net.args.family == "llada_clone" and llada.net.args.family == "llada"
    assert clone.shift is False  # the entry's shift
    ids, lens = encode_prompts(clone.tokenizer, ["12+3=", "4"])
    positions = torch.ones(2, ids.shape[1], dtype=torch.bool)
    assert torch.equal(clone.logits(ids, positions=positions), llada.logits(ids, positions=positions))
    cfg = SamplerConfig(gen_length=8, steps=4, block_length=4)
    a = sample(clone, ids, cfg, torch.Generator().manual_seed(0), prompt_len=lens)
    b = sample(llada, ids, cfg, torch.Generator().manual_seed(0), prompt_len=lens)
    assert a.completion_ids.shape == (2, 8) and torch.equal(a.completion_ids, b.completion_ids)
    assert bool((a.completion_ids != clone.mask_id).all())  # draw_mask false: every position revealed
    # the config accepts the new name for both keys, from the registry
    run = load_config(None, ["model.family=llada_clone", "model.tiny.family=llada_clone"])
    assert run.model.family == run.model.tiny.family == "llada_clone"


def test_unknown_family_is_an_error_naming_the_registered_ones():
    args = ModelArgs(family="gemma", vocab_size=8, dim=8, n_layers=1, n_heads=1, n_kv_heads=1, ffn_dim=8,
                     rope_theta=1e4, norm_eps=1e-5, qkv_bias=False, tied=False, shift=False, mask_token_id=None,
                     eos_token_id=None, pad_token_id=None)
    with pytest.raises(ValueError, match=r"unknown family 'gemma'; choose one of \[llada, dream\]"):
        key_map(args)  # formerly: silently Dream's keys
    with pytest.raises(ValueError, match=r"model.family: unknown family 'gemma'"):
        family_of({"model_type": "llada"}, "gemma")
    with pytest.raises(ValueError, match="model_type 'gemma' is not a supported family"):
        family_of({"model_type": "gemma"}, None)
    for key in ("model.family", "model.tiny.family"):
        with pytest.raises(ConfigError, match=rf"'{key}'.*unknown family 'gemma'; choose one of \[llada, dream\]"):
            load_config(None, [f"{key}=gemma"])


def test_entries_match_the_official_layouts():
    """The two released layouts, written out independently of the registry."""
    llada, dream = get_family("llada"), get_family("dream")
    assert (llada.model_type, dream.model_type) == ("llada", "Dream") and (llada.shift, dream.shift) == (False, True)
    assert llada.block_keys["wo"] == "attn_out" and dream.block_keys["wo"] == "self_attn.o_proj"
    assert llada.top_keys["head"] == "model.transformer.ff_out" and dream.top_keys["head"] == "lm_head"
    assert llada.sampler["schedule"] == "blocks" and dream.sampler["schedule"] == "dream"
    assert llada.lora_targets == dream.lora_targets == {
        "wq": "q_proj", "wk": "k_proj", "wv": "v_proj", "wo": "o_proj", "w_gate": "gate_proj", "w_up": "up_proj",
        "w_down": "down_proj"}
