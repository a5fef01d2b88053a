"""LoRA on the native model, in-process: merged == unmerged, adapters off == base, seeded dropout independent of the
batching and of activation checkpointing, only adapters train, config names, push sizes, the peft adapter layout."""
import json

import pytest
import torch
from safetensors import safe_open

from common.config import ConfigError, ModelConfig, load_config
from common.denoiser import load_denoiser
from common.logprob import denoise_logprob
from common.models import key_map
from common.models.lora import LoRASpec, _splitmix, adapter_bytes, adapter_names, merged_state, row_seeds, uniform_hash
from learner.checkpoint import save_adapter, save_hf

LORA = {"enabled": True, "r": 4, "alpha": 8.0, "dropout": 0.3}


def lora_denoiser(path, **extra):
    den = load_denoiser(ModelConfig(lora={**LORA, **extra}), path, device="cpu")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # B = 0 at init makes every test trivially pass: give the adapters a value
        for name, p in den.net.named_parameters():
            if name.endswith("lora_B"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return den


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, 30, (3, 8), generator=g)
    completion = torch.randint(0, 30, (3, 12), generator=g)
    masks = torch.rand(3, 12, generator=g) < 0.5
    return prompt, completion, masks


def test_fresh_adapters_equal_base_and_only_adapters_train(tiny_model_dir):
    base = load_denoiser(ModelConfig(), tiny_model_dir, device="cpu")
    den = load_denoiser(ModelConfig(lora=LORA), tiny_model_dir, device="cpu")
    x = torch.randint(0, 30, (2, 16))
    assert torch.equal(den.logits(x), base.logits(x))  # B = 0 (peft init): version 0 is the base model
    trainable = [n for n, p in den.net.named_parameters() if p.requires_grad]
    assert trainable == adapter_names(den.net) and len(trainable) == 2 * 7 * den.net.args.n_layers
    assert set(den.net.state_dict()) - set(base.net.state_dict()) == set(trainable)  # base keys unchanged
    # same init seed -> the same A on every process
    again = load_denoiser(ModelConfig(lora=LORA), tiny_model_dir, device="cpu")
    assert all(torch.equal(again.net.state_dict()[k], den.net.state_dict()[k]) for k in trainable)


def test_adapters_disabled_is_base_and_merged_equals_unmerged(tiny_model_dir, tmp_path):
    base = load_denoiser(ModelConfig(), tiny_model_dir, device="cpu")
    den = lora_denoiser(tiny_model_dir)
    x = torch.randint(0, 30, (2, 16))
    with torch.no_grad():
        on, off, ref = den.logits(x), den.without_adapters().logits(x), base.logits(x)
    assert torch.equal(off, ref)  # S_ref: the same weights with adapters off, no copy
    assert (on - ref).abs().max() > 1e-3  # the adapters do something
    assert den.without_adapters().net is den.net
    # merged export in the official layout, loaded back without LoRA, gives the adapted logits
    save_hf(merged_state(den.net.state_dict(), den.net.lora_spec), den.net, den.tokenizer, str(tmp_path / "merged"))
    merged = load_denoiser(ModelConfig(), tmp_path / "merged", device="cpu")
    with safe_open(tmp_path / "merged" / "model.safetensors", framework="pt") as f:
        assert set(f.keys()) == set(key_map(den.net.args).values())
    with torch.no_grad():
        assert torch.allclose(merged.logits(x), on, atol=1e-5, rtol=0)


def test_dream_layout_merged_equals_unmerged(tmp_path):
    """Dream: q/k/v bias, grouped-query attention, shifted logits; the peft names are Qwen2's."""
    from common.config import TinyModelConfig
    from common.tiny import make_tiny_model

    source = make_tiny_model(TinyModelConfig(family="dream", hidden_size=64, num_layers=2, num_heads=4,
                                             num_kv_heads=2, intermediate_size=128), tmp_path / "dream")
    den = lora_denoiser(source)
    x = torch.randint(0, 30, (2, 16))
    save_hf(merged_state(den.net.state_dict(), den.net.lora_spec), den.net, den.tokenizer, str(tmp_path / "merged"))
    merged = load_denoiser(ModelConfig(), tmp_path / "merged", device="cpu")
    with torch.no_grad():
        assert torch.allclose(merged.logits(x), den.logits(x), atol=1e-5, rtol=0)
    save_adapter(den.net.state_dict(), den.net, den.net.lora_spec, str(tmp_path / "adapter"))
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["target_modules"] == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                               "down_proj"])


def test_peft_adapter_directory(tiny_model_dir, tmp_path):
    den = lora_denoiser(tiny_model_dir)
    out = save_adapter(den.net.state_dict(), den.net, den.net.lora_spec, str(tmp_path / "adapter"))
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8.0
    # LLaDA's own module names (the tiny default is saved in the LLaDA layout)
    assert config["target_modules"] == sorted(["q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj",
                                               "ff_out"])
    with safe_open(f"{out}/adapter_model.safetensors", framework="pt") as f:
        keys = set(f.keys())
        a = f.get_tensor("base_model.model.model.transformer.blocks.1.attn_out.lora_A.weight")
    assert len(keys) == 2 * 7 * den.net.args.n_layers
    assert torch.equal(a, den.net.state_dict()["body.blocks.1.wo.lora_A"])


def test_dropout_draws_depend_on_row_and_seed_only(tiny_model_dir, inputs):
    den = lora_denoiser(tiny_model_dir)
    prompt, completion, masks = inputs
    with torch.no_grad():
        whole = denoise_logprob(den, prompt, completion, masks, dropout_seeds=row_seeds(5, torch.arange(3)))
        alone = torch.cat([denoise_logprob(den, prompt[i:i + 1], completion[i:i + 1], masks[i:i + 1],
                                           dropout_seeds=row_seeds(5, torch.tensor([i]))) for i in range(3)])
        other = denoise_logprob(den, prompt, completion, masks, dropout_seeds=row_seeds(6, torch.arange(3)))
        none = denoise_logprob(den, prompt, completion, masks)
    assert torch.equal(whole, alone)  # the actor's chunking and the learner's micro-batches see the same draws
    assert not torch.equal(whole, other) and not torch.equal(whole, none)


def reference_uniform(key: int, index: int) -> float:
    """The dropout draw of one element, in plain Python integers (common/models/lora.py::uniform_hash)."""
    def mix(v: int) -> int:
        v = (((v >> 16) ^ v) * 0x45D9F3B) & 0xFFFFFFFF
        v = (((v >> 16) ^ v) * 0x45D9F3B) & 0xFFFFFFFF
        return (v >> 16) ^ v

    h = mix(mix(index ^ (key & 0xFFFFFFFF)) ^ (key >> 32))
    return (h >> 8) / 2**24


def test_uniform_hash_is_uniform_and_independent():
    """The draws are uniform on [0, 1) (16-bin chi-square), independent across keys (correlation ~ 0) and equal to
    the plain-integer reference."""
    keys = torch.tensor([_splitmix(k) for k in range(4)])
    u = uniform_hash(keys, (64, 512))  # [4, 64, 512]
    counts = torch.histc(u[0], bins=16, min=0, max=1)
    expected = u[0].numel() / 16
    assert float(((counts - expected) ** 2 / expected).sum()) < 40  # chi2(15): p < 1e-3 at 37.7
    assert float(torch.corrcoef(u.view(4, -1)).fill_diagonal_(0).abs().max()) < 0.01
    assert float(u[2, 3, 7]) == reference_uniform(int(keys[2]), 3 * 512 + 7)


def test_dropout_matches_by_hand_reference(tiny_model_dir):
    """One LoRALinear against an independent evaluation of y = Wx + (alpha/r) B A (x * keep / (1-p))."""
    den = lora_denoiser(tiny_model_dir)
    layer = den.net.body.blocks[0].wq
    x = torch.randn(2, 5, layer.in_features)
    layer.row_seeds = torch.tensor([11, 12])
    with torch.no_grad():
        got = layer(x)
        layer.row_seeds = None
        undropped = layer(x)
    expected = []
    for b, seed in enumerate([11, 12]):
        key = _splitmix(seed ^ (layer.index * 0x2545F491))
        keep = torch.tensor([[reference_uniform(key, t * x.shape[2] + i) >= 0.3 for i in range(x.shape[2])]
                             for t in range(x.shape[1])]).float()
        xd = x[b] * keep / 0.7
        expected.append(x[b] @ layer.weight.T + (xd @ layer.lora_A.T @ layer.lora_B.T) * (8.0 / 4))
    assert torch.allclose(got, torch.stack(expected), atol=1e-5)
    assert not torch.allclose(got, undropped)


def test_checkpointed_backward_recomputes_the_same_draws(tiny_model_dir, inputs):
    prompt, completion, masks = inputs
    grads = {}
    for ckpt in (False, True):
        den = lora_denoiser(tiny_model_dir)
        den.net.body.activation_checkpointing = ckpt
        s = denoise_logprob(den, prompt, completion, masks, dropout_seeds=row_seeds(9, torch.arange(3)))
        s.sum().backward()
        grads[ckpt] = {n: p.grad.clone() for n, p in den.net.named_parameters() if p.requires_grad}
        assert all(p.grad is None for n, p in den.net.named_parameters() if not p.requires_grad)
    for name, g in grads[False].items():
        assert torch.allclose(g, grads[True][name], atol=1e-6, rtol=1e-5), name


def test_config_maps_official_names_and_rejects_unknown():
    cfg = load_config(None, ["model.lora.enabled=true",
                             "model.lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"])
    assert cfg.model.lora.target_modules == ["wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"]
    assert (cfg.model.lora.r, cfg.model.lora.alpha, cfg.model.lora.dropout) == (128, 64.0, 0.05)
    assert load_config(None).model.lora.enabled is False
    with pytest.raises(ConfigError, match="attn_out"):
        load_config(None, ["model.lora.target_modules=[attn_out]"])


def test_push_bytes_formula_matches_the_model(tiny_model_dir):
    den = load_denoiser(ModelConfig(lora={**LORA, "target_modules": ["wq", "wo", "w_up"]}), tiny_model_dir,
                        device="cpu")
    measured = sum(v.numel() * 2 for k, v in den.net.state_dict().items() if k in set(adapter_names(den.net)))
    assert adapter_bytes(den.net.args, LoRASpec(r=4, targets=("wq", "wo", "w_up"))) == measured
