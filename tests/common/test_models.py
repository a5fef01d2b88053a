"""Native LLaDA / Dream models: official-layout checkpoints written here (config.json in the family's own field names,
safetensors under the official keys), loaded through load_denoiser, and checked against a slow reference forward
written here from the formulas (loops over rows, heads and positions; float64). Also: export round trip, padding,
Dream's shift, bf16, chunked log-probs, activation checkpointing, and bad checkpoints that must fail by name."""
from __future__ import annotations

import json
import math
import os
import stat

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from actors.sampling import sample
from common.config import ModelConfig, SamplerConfig, TinyModelConfig
from common.denoiser import load_denoiser, load_tokenizer, padding_mask
from common.models import save_model
from common.tiny import make_tiny_model, make_tokenizer

V, H, LAYERS, FFN, EPS = 100, 32, 2, 48, 1e-5
OFFICIAL = {  # family -> (config.json, {key pattern: shape}) in the released checkpoints' own names
    "llada": ({"model_type": "llada", "d_model": H, "n_layers": LAYERS, "n_heads": 4, "n_kv_heads": 4,
               "mlp_hidden_size": FFN, "vocab_size": V, "embedding_size": V, "rope_theta": 500000.0,
               "rms_norm_eps": EPS, "weight_tying": False, "include_qkv_bias": False, "include_bias": False,
               "mask_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, "activation_type": "silu",
               "block_type": "llama", "alibi": False, "rope": True, "torch_dtype": "bfloat16",
               "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig",
                            "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"}},
              {"model.transformer.wte.weight": (V, H), "model.transformer.ln_f.weight": (H,),
               "model.transformer.ff_out.weight": (V, H),
               **{f"model.transformer.blocks.{n}.{k}": s for n in range(LAYERS) for k, s in {
                   "attn_norm.weight": (H,), "q_proj.weight": (H, H), "k_proj.weight": (H, H),
                   "v_proj.weight": (H, H), "attn_out.weight": (H, H), "ff_norm.weight": (H,),
                   "ff_proj.weight": (FFN, H), "up_proj.weight": (FFN, H), "ff_out.weight": (H, FFN)}.items()}}),
    "dream": ({"model_type": "Dream", "hidden_size": H, "num_hidden_layers": LAYERS, "num_attention_heads": 4,
               "num_key_value_heads": 2, "intermediate_size": FFN, "vocab_size": V, "rope_theta": 1000000.0,
               "rms_norm_eps": EPS, "tie_word_embeddings": False, "hidden_act": "silu", "rope_scaling": None,
               "mask_token_id": 2, "eos_token_id": 1, "pad_token_id": 1, "torch_dtype": "bfloat16",
               "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"}},
              {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,), "lm_head.weight": (V, H),
               **{f"model.layers.{n}.{k}": s for n in range(LAYERS) for k, s in {
                   "input_layernorm.weight": (H,), "self_attn.q_proj.weight": (H, H), "self_attn.q_proj.bias": (H,),
                   "self_attn.k_proj.weight": (H // 2, H), "self_attn.k_proj.bias": (H // 2,),
                   "self_attn.v_proj.weight": (H // 2, H), "self_attn.v_proj.bias": (H // 2,),
                   "self_attn.o_proj.weight": (H, H), "post_attention_layernorm.weight": (H,),
                   "mlp.gate_proj.weight": (FFN, H), "mlp.up_proj.weight": (FFN, H),
                   "mlp.down_proj.weight": (H, FFN)}.items()}}),
}


def write_checkpoint(path, family: str, *, config_update: dict | None = None, drop: str | None = None,
                     reshape: str | None = None, shards: int = 1) -> dict[str, torch.Tensor]:
    """An official-layout checkpoint with seeded random weights (norm weights around 1); returns the tensors."""
    config, shapes = OFFICIAL[family]
    generator = torch.Generator().manual_seed(11)
    tensors = {}
    for key, shape in shapes.items():
        if reshape == key:
            shape = (shape[0] + 1, *shape[1:])
        t = torch.randn(shape, generator=generator) * (0.1 if "norm" not in key else 0.2)
        tensors[key] = t + 1.0 if "norm" in key else t
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({**config, **(config_update or {})}))
    make_tokenizer().save_pretrained(path)
    for code in ("modeling_official.py", "configuration_llada.py", "configuration_dream.py"):  # as released
        (path / code).write_text("raise RuntimeError('remote code must never run')\n")
    stored = {k: v for k, v in tensors.items() if k != drop}
    keys = sorted(stored)
    if shards == 1:
        save_file(stored, path / "model.safetensors")
    else:
        weight_map = {}
        for i in range(shards):
            name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            part = {k: stored[k] for k in keys[i::shards]}
            save_file(part, path / name)
            weight_map.update({k: name for k in part})
        (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return tensors


# ---- the slow reference (explicit formulas, one row at a time, float64) -------------------------------------------
def ref_rmsnorm(x, w):
    return [[w[i] * v / math.sqrt(sum(u * u for u in row) / len(row) + EPS) for i, v in enumerate(row)] for row in x]


def ref_linear(x, w, b=None):
    out = x @ w.T
    return out + b if b is not None else out


def ref_rope(vec, pos: int, theta: float):
    """rotate-half RoPE of one head vector: pairs (i, i + D/2) rotated by pos * theta^(-2i/D)."""
    D = vec.shape[0]
    out = vec.clone()
    for i in range(D // 2):
        angle = pos * theta ** (-2 * i / D)
        a, b = vec[i], vec[i + D // 2]
        out[i], out[i + D // 2] = a * math.cos(angle) - b * math.sin(angle), b * math.cos(angle) + a * math.sin(angle)
    return out


def reference_logits(tensors: dict, family: str, ids: list[int]) -> torch.Tensor:
    """Unshifted logits [T, V] of one unpadded row, from the official tensors by the official formulas."""
    config = OFFICIAL[family][0]
    W = {k: v.double() for k, v in tensors.items()}
    if family == "llada":
        names = dict(embed="model.transformer.wte.weight", final="model.transformer.ln_f.weight",
                     head="model.transformer.ff_out.weight", prefix="model.transformer.blocks.{}.",
                     attn_norm="attn_norm", q="q_proj", k="k_proj", v="v_proj", o="attn_out", ffn_norm="ff_norm",
                     gate="ff_proj", up="up_proj", down="ff_out")
        n_heads, n_kv = config["n_heads"], config["n_kv_heads"]
    else:
        names = dict(embed="model.embed_tokens.weight", final="model.norm.weight", head="lm_head.weight",
                     prefix="model.layers.{}.", attn_norm="input_layernorm", q="self_attn.q_proj",
                     k="self_attn.k_proj", v="self_attn.v_proj", o="self_attn.o_proj",
                     ffn_norm="post_attention_layernorm", gate="mlp.gate_proj", up="mlp.up_proj", down="mlp.down_proj")
        n_heads, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    theta, D, T = config["rope_theta"], H // n_heads, len(ids)
    x = W[names["embed"]][ids]  # [T, H]
    for n in range(LAYERS):
        p = names["prefix"].format(n)
        get = lambda name, part="weight": W.get(f"{p}{names[name]}.{part}")  # noqa: E731
        h = torch.tensor(ref_rmsnorm(x.tolist(), get("attn_norm").tolist()), dtype=torch.float64)
        q, k, v = ref_linear(h, get("q"), get("q", "bias")), ref_linear(h, get("k"), get("k", "bias")), \
            ref_linear(h, get("v"), get("v", "bias"))
        out = torch.zeros(T, n_heads * D, dtype=torch.float64)
        for head in range(n_heads):
            kv = head // (n_heads // n_kv)  # grouped-query attention: heads share a key/value head
            for t in range(T):
                qt = ref_rope(q[t, head * D:(head + 1) * D], t, theta)
                scores = [float(qt @ ref_rope(k[s, kv * D:(kv + 1) * D], s, theta)) / math.sqrt(D) for s in range(T)]
                top = max(scores)
                weights = [math.exp(s - top) for s in scores]
                total = sum(weights)
                for s in range(T):  # bidirectional: every position attends to every position
                    out[t, head * D:(head + 1) * D] += weights[s] / total * v[s, kv * D:(kv + 1) * D]
        x = x + ref_linear(out, get("o"))
        h = torch.tensor(ref_rmsnorm(x.tolist(), get("ffn_norm").tolist()), dtype=torch.float64)
        gate = ref_linear(h, get("gate"))
        x = x + ref_linear(gate / (1 + torch.exp(-gate)) * ref_linear(h, get("up")), get("down"))
    x = torch.tensor(ref_rmsnorm(x.tolist(), W[names["final"]].tolist()), dtype=torch.float64)
    return x @ W[names["head"]].T


ROWS = [[5, 9, 14, 3, 22, 40, 7], [31, 8, 2, 2, 11], [60, 61]]  # different lengths, mask tokens inside


def left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    return ids, torch.tensor([len(r) for r in rows])


@pytest.mark.parametrize("family", ["llada", "dream"])
@pytest.mark.parametrize("shards", [1, 3])
def test_official_layout_matches_reference_forward(tmp_path, family, shards):
    tensors = write_checkpoint(tmp_path / "ckpt", family, shards=shards)
    den = load_denoiser(ModelConfig(), tmp_path / "ckpt", device="cpu")
    assert den.shift == (family == "dream") and den.mask_id == 2 and den.eos_id == 1
    ids, lens = left_pad(ROWS, pad=0)
    with torch.no_grad():
        got = den.logits(ids, attention_mask=padding_mask(lens, ids.shape[1], 0)).double()  # [B, T, V] (shifted)
    for b, row in enumerate(ROWS):
        ref = reference_logits(tensors, family, row)  # [T_b, V] unshifted
        if family == "dream":  # Dream: logits = cat(logits[:, :1], logits[:, :-1])
            ref = torch.cat([ref[:1], ref[:-1]])
        real = got[b, ids.shape[1] - len(row):]
        first = 1 if family == "dream" else 0  # Dream's first real position reads the pad before it (never used)
        assert (real[first:] - ref[first:]).abs().max() < 1e-4, (family, b)


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_padded_equals_unpadded_fp32_and_bf16(tmp_path, family):
    write_checkpoint(tmp_path / "ckpt", family)
    for dtype, tol in (("float32", 1e-5), ("bfloat16", None)):
        den = load_denoiser(ModelConfig(dtype=dtype), tmp_path / "ckpt", device="cpu")
        ids, lens = left_pad(ROWS, pad=0)
        with torch.no_grad():
            padded = den.logits(ids, attention_mask=padding_mask(lens, ids.shape[1], 0)).float()
            for b, row in enumerate(ROWS):
                alone = den.logits(torch.tensor([row])).float()[0]
                diff = (padded[b, ids.shape[1] - len(row) + 1:] - alone[1:]).abs().max()
                # bf16: the same math in other batch shapes may round differently, by about one bf16 ulp of a logit
                bound = tol if tol is not None else 2 * 2 ** -7 * float(alone.abs().max())
                assert diff <= bound, (family, dtype, b, float(diff), bound)
        # without the mask the pads are attended and shift positions: the mask is what makes rows equal
        with torch.no_grad():
            unmasked = den.logits(ids).float()
        assert (unmasked[2, -1] - den.logits(torch.tensor([ROWS[2]])).float()[0, -1]).abs().max() > 1e-3


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_no_grad_fast_path_is_bit_identical_to_the_training_path(tmp_path, family):
    """Sampling (no grad) runs in-place SwiGLU / residual / RMSNorm weight and a cat-free RoPE; the actor's S_old
    and the learner's S_theta must still be the same numbers, so both paths must agree bit for bit."""
    write_checkpoint(tmp_path / "ckpt", family)
    for dtype in ("float32", "bfloat16"):
        den = load_denoiser(ModelConfig(dtype=dtype), tmp_path / "ckpt", device="cpu")
        ids, lens = left_pad(ROWS, pad=0)
        mask = padding_mask(lens, ids.shape[1], 0)
        with torch.no_grad():
            fast = den.logits(ids, attention_mask=mask)
        with torch.enable_grad():
            training = den.logits(ids, attention_mask=mask)
        assert training.requires_grad and torch.equal(fast, training.detach()), (family, dtype)


def test_dream_shift_reads_the_previous_hidden_state(tmp_path):
    write_checkpoint(tmp_path / "ckpt", "dream")
    den = load_denoiser(ModelConfig(), tmp_path / "ckpt", device="cpu")
    ids = torch.tensor([ROWS[0]])
    with torch.no_grad():
        unshifted = den.net(ids, shift=False)[0]
        shifted = den.logits(ids)[0]
        select = torch.zeros_like(ids, dtype=torch.bool)
        select[0, [2, 5]] = True
        picked = den.logits(ids, positions=select)
    assert torch.allclose(shifted[1:], unshifted[:-1], atol=1e-6)
    assert torch.allclose(shifted[0], unshifted[0], atol=1e-6)
    assert torch.allclose(picked, unshifted[[1, 4]], atol=1e-6)
    # our config overrides the family default
    assert load_denoiser(ModelConfig(logits_shift=False), tmp_path / "ckpt", device="cpu").shift is False


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_export_round_trip_official_keys_and_files(tmp_path, family):
    tensors = write_checkpoint(tmp_path / "ckpt", family)
    den = load_denoiser(ModelConfig(), tmp_path / "ckpt", device="cpu")
    old_umask = os.umask(0o077)  # a trainer with a strict umask must still write a servable export
    try:
        save_model(den.net, tmp_path / "export")
    finally:
        os.umask(old_umask)
    out = tmp_path / "export"
    with safe_open(out / "model.safetensors", framework="pt") as f:
        saved = {k: f.get_tensor(k) for k in f.keys()}
    assert set(saved) == set(tensors)
    for key, value in tensors.items():  # cast to config.json's torch_dtype (bfloat16), as the released files are
        assert saved[key].dtype == torch.bfloat16 and torch.equal(saved[key], value.to(torch.bfloat16)), key
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "modeling_official.py"):
        assert (out / name).read_bytes() == (tmp_path / "ckpt" / name).read_bytes(), name
    for file in out.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o644, file.name
    again = load_denoiser(ModelConfig(dtype="bfloat16"), out, device="cpu")
    first = load_denoiser(ModelConfig(dtype="bfloat16"), tmp_path / "ckpt", device="cpu")
    a, b = again.net.state_dict(), first.net.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sharded_export_loads_back(tmp_path):
    path = make_tiny_model(TinyModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48),
                           tmp_path / "tiny")
    den = load_denoiser(ModelConfig(), path, device="cpu")
    from common.models import export_checkpoint
    export_checkpoint(den.net.state_dict(), den.net.args, tmp_path / "sharded", source_dir=path,
                      max_shard_bytes=20_000)
    assert len(list((tmp_path / "sharded").glob("model-*-of-*.safetensors"))) > 1
    back = load_denoiser(ModelConfig(), tmp_path / "sharded", device="cpu")
    a, b = back.net.state_dict(), den.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_bf16_load_and_sample(tmp_path, family):
    write_checkpoint(tmp_path / "ckpt", family)
    den = load_denoiser(ModelConfig(dtype="bfloat16"), tmp_path / "ckpt", device="cpu")
    assert {p.dtype for p in den.net.parameters()} == {torch.bfloat16}
    ids, lens = left_pad(ROWS, pad=0)
    cfg = SamplerConfig(gen_length=8, block_length=4, steps=4, temperature=1.0)
    out = sample(den, ids, cfg, torch.Generator().manual_seed(0), prompt_len=lens)
    assert out.completion_ids.shape == (3, 8) and not (out.completion_ids == den.mask_id).any()
    assert ((out.completion_ids >= 0) & (out.completion_ids < V)).all()
    # a padded row samples exactly what it samples alone (greedy: no noise to share between rows)
    greedy = SamplerConfig(gen_length=8, block_length=4, steps=4, temperature=0.0)
    den32 = load_denoiser(ModelConfig(), tmp_path / "ckpt", device="cpu")
    batch = sample(den32, ids, greedy, prompt_len=lens).completion_ids
    alone = sample(den32, torch.tensor([ROWS[2]]), greedy).completion_ids
    assert torch.equal(batch[2], alone[0])


def test_chunked_logprob_and_activation_checkpointing_match(tiny_model_dir):
    den = load_denoiser(ModelConfig(), tiny_model_dir, device="cpu")
    den.net.train()
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(4, 90, (3, 12), generator=g)
    read = torch.rand(3, 12, generator=g) < 0.5
    targets = torch.randint(4, 90, (int(read.sum()),), generator=g)
    attention = padding_mask(torch.tensor([12, 9, 7]), 12, 0)

    def run(chunk: int, ckpt: bool):
        den.net.zero_grad(set_to_none=True)
        den.net.body.activation_checkpointing = ckpt
        logp = den.logprob(ids, read, targets, attention_mask=attention, chunk=chunk)
        logp.sum().backward()
        return logp.detach(), [p.grad.clone() for p in den.net.parameters()]

    full = torch.log_softmax(den.logits(ids, read, attention_mask=attention).float(), -1)
    full = full.gather(1, targets[:, None]).squeeze(1)
    base, grads = run(10_000, False)
    assert torch.allclose(base, full.detach(), atol=1e-6)
    for chunk, ckpt in ((3, False), (5, True)):
        logp, grads2 = run(chunk, ckpt)
        assert torch.allclose(logp, base, atol=1e-6)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, grads2))
    den.net.body.activation_checkpointing = False


@pytest.mark.parametrize("change, message", [
    (dict(drop="model.transformer.blocks.1.up_proj.weight"), "missing keys ['model.transformer.blocks.1.up_proj"),
    (dict(reshape="model.transformer.blocks.0.q_proj.weight"), "model.transformer.blocks.0.q_proj.weight: checkpoint"),
    (dict(config_update={"model_type": "gpt2"}), "model_type 'gpt2' is not a supported family"),
    (dict(config_update={"alibi": True}), "alibi=True is not supported"),
    (dict(config_update={"d_model": None}), "'d_model'"),
])
def test_bad_checkpoint_fails_naming_the_problem(tmp_path, change, message):
    write_checkpoint(tmp_path / "ckpt", "llada", **change)
    with pytest.raises((ValueError, TypeError)) as err:
        load_denoiser(ModelConfig(), tmp_path / "ckpt", device="cpu")
    assert message in str(err.value)
    assert str(tmp_path / "ckpt") in str(err.value) or "model_type" in message or "d_model" in message


def test_unexpected_key_and_family_override(tmp_path):
    write_checkpoint(tmp_path / "ckpt", "llada")
    tensors = {}
    with safe_open(tmp_path / "ckpt" / "model.safetensors", framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file({**tensors, "model.transformer.extra.weight": torch.zeros(2)}, tmp_path / "ckpt" / "model.safetensors")
    with pytest.raises(ValueError, match=r"unexpected keys \['model.transformer.extra.weight'\]"):
        load_denoiser(ModelConfig(), tmp_path / "ckpt", device="cpu")
    # a Dream-layout directory read as LLaDA (model.family overrides model_type) fails on its keys, not silently
    write_checkpoint(tmp_path / "dream", "dream")
    with pytest.raises(ValueError, match="the llada config has no 'd_model'"):
        load_denoiser(ModelConfig(family="llada"), tmp_path / "dream", device="cpu")


def test_dream_tokenizer_loads_without_remote_code(tmp_path):
    """Dream names a remote-code tokenizer class; it is read as the fast tokenizer it is, its code never runs."""
    write_checkpoint(tmp_path / "ckpt", "dream")
    config_file = tmp_path / "ckpt" / "tokenizer_config.json"
    tok_config = json.loads(config_file.read_text())
    tok_config.update(tokenizer_class="DreamTokenizer",
                      auto_map={"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]})
    config_file.write_text(json.dumps(tok_config))
    (tmp_path / "ckpt" / "tokenization_dream.py").write_text("raise RuntimeError('remote code must never run')\n")
    tokenizer = load_tokenizer(tmp_path / "ckpt")
    reference = make_tokenizer()
    text = "<reasoning>1+2</reasoning>"
    assert tokenizer(text)["input_ids"] == reference(text)["input_ids"]
    assert tokenizer.decode(reference(text)["input_ids"]) == text


def test_s_x0_of_a_padded_row_does_not_depend_on_its_batch(tiny_model_dir):
    """Actor (teacher_logps, rows_per_forward chunks) and learner (its micro-batches) group rows differently: with
    the padding mask a row's S(x0) must be the same in any company (docs/design.md, "Numerical traps": teacher gap)."""
    from common.logprob import denoise_logprob
    from common.masking import consistent_masks

    den = load_denoiser(ModelConfig(), tiny_model_dir, device="cpu")
    g = torch.Generator().manual_seed(5)
    rows = [torch.randint(4, 90, (n,), generator=g).tolist() for n in (9, 4, 6, 9)]
    prompt_ids, prompt_len = left_pad(rows, pad=0)
    completion = torch.randint(4, 90, (4, 12), generator=g)
    masks = consistent_masks(7, 4, 12)
    with torch.no_grad():
        together = denoise_logprob(den, prompt_ids, completion, masks, prompt_len=prompt_len)
        alone = torch.cat([denoise_logprob(den, prompt_ids[i:i + 1], completion[i:i + 1], masks[i:i + 1],
                                           prompt_len=prompt_len[i:i + 1]) for i in range(4)])
    assert (together - alone).abs().max() <= 1e-4 * together.abs().max()


def test_trust_remote_code_is_rejected_by_name():
    from common.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="trust_remote_code"):
        load_config(None, ["model.trust_remote_code=true"])
