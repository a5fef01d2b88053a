"""Bytes per weight push: the full state dict vs the LoRA adapters only (`model.lora.enabled`), bf16 on the wire.

  python -m benchmarks.lora_push

LLaDA-8B and Dream-7B: computed from their config.json shapes (the model built on the meta device, no memory),
official LoRA r=128 on the seven projections, and on the four LLaDA's peft config actually matches (see
docs/lora.md); the tiny default: measured, the dicts the learner pushes (`LearnerWorker.push_state_dict`, cast by
`wire_format`) of the tiny default model loaded with LoRA (r=128 and r=8). One JSON line per case.
"""
from __future__ import annotations

import json
import tempfile

import torch

from common.models import DiffusionLM, ModelArgs
from common.models.lora import LoRASpec, adapter_bytes, is_adapter
from common.weight_bus import wire_format

LLADA_8B = dict(family="llada", vocab_size=126464, dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, ffn_dim=12288,
                qkv_bias=False)
DREAM_7B = dict(family="dream", vocab_size=152064, dim=3584, n_layers=28, n_heads=28, n_kv_heads=4, ffn_dim=18944,
                qkv_bias=True)
OFFICIAL_LLADA_MATCH = ("wq", "wk", "wv", "w_up")  # q_proj k_proj v_proj up_proj exist in LLaDA's module names


def args(shape: dict) -> ModelArgs:
    return ModelArgs(**shape, rope_theta=1e4, norm_eps=1e-5, tied=False, shift=shape["family"] == "dream",
                     mask_token_id=None, eos_token_id=None, pad_token_id=None)


def full_bytes(a: ModelArgs, bytes_per_elem: int = 2) -> int:
    with torch.device("meta"):
        net = DiffusionLM(a)
    return sum(v.numel() for v in net.state_dict().values()) * bytes_per_elem


def measured(model_dir: str, r: int) -> dict:
    from common.config import ModelConfig
    from common.denoiser import load_denoiser

    net = load_denoiser(ModelConfig(lora={"enabled": True, "r": r, "alpha": 2 * r}), model_dir, device="cpu").net
    state = net.state_dict()
    full = wire_format({k: v for k, v in state.items() if not is_adapter(k)}, torch.bfloat16)
    push = wire_format({k: v for k, v in state.items() if is_adapter(k)}, torch.bfloat16)
    size = lambda d: sum(t.numel() * t.element_size() for t in d.values())  # noqa: E731
    return {"full_bytes": size(full), "adapter_bytes": size(push), "adapter_tensors": len(push)}


def main() -> list[dict]:
    records = []
    for name, shape, targets in (("llada-8b", LLADA_8B, None), ("llada-8b official-match", LLADA_8B,
                                                                OFFICIAL_LLADA_MATCH), ("dream-7b", DREAM_7B, None)):
        spec = LoRASpec(r=128, alpha=64) if targets is None else LoRASpec(r=128, alpha=64, targets=targets)
        a = args(shape)
        full, adapters = full_bytes(a), adapter_bytes(a, spec)
        records.append({"model": name, "how": "computed", "r": spec.r, "targets": list(spec.targets),
                        "full_bytes": full, "adapter_bytes": adapters, "ratio": full / adapters})
    from common.config import TinyModelConfig
    from common.tiny import make_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(make_tiny_model(TinyModelConfig(), f"{tmp}/tiny"))
        for r in (128, 8):
            tiny = measured(model_dir, r)
            records.append({"model": "tiny default (hidden 256, 4 layers)", "how": "measured", "r": r,
                            **tiny, "ratio": tiny["full_bytes"] / tiny["adapter_bytes"]})
    for r in records:
        print(json.dumps(r))
    return records


if __name__ == "__main__":
    main()
