"""Official checkpoint layouts: key maps, streaming load, and export under the same keys.

Our module names (DiffusionLM) -> official safetensors keys (each family's entry in common/families.py):
  llada (OLMo layout, LLaDA-8B):            dream (Qwen2 layout, Dream-v0-7B):
  body.embed.weight     model.transformer.wte.weight            model.embed_tokens.weight
  body.blocks.N.attn_norm  model.transformer.blocks.N.attn_norm   model.layers.N.input_layernorm
  body.blocks.N.wq/wk/wv   ....blocks.N.q_proj/k_proj/v_proj      model.layers.N.self_attn.q_proj/k_proj/v_proj
  body.blocks.N.wo         ....blocks.N.attn_out                  model.layers.N.self_attn.o_proj
  body.blocks.N.ffn_norm   ....blocks.N.ff_norm                   model.layers.N.post_attention_layernorm
  body.blocks.N.w_gate/w_up/w_down  ....blocks.N.ff_proj/up_proj/ff_out  model.layers.N.mlp.gate_proj/up_proj/down_proj
  body.norm.weight      model.transformer.ln_f.weight           model.norm.weight
  head.weight           model.transformer.ff_out.weight         lm_head.weight        (absent when tied)
Loading builds the model on the meta device, allocates it once in the target dtype on the target device, then copies
tensor by tensor from safetensors (one file or shards + model.safetensors.index.json): host memory holds one tensor
at a time, never a second copy of the model. Every key is checked before any is read.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from common.families import get_family
from common.models.args import ModelArgs, args_from_hf, family_of, hf_config_from_args, read_hf_config
from common.models.transformer import DiffusionLM

INDEX = "model.safetensors.index.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5")


def key_map(args: ModelArgs) -> dict[str, str]:
    """Our parameter name -> the family's official key (common/families.py), for every tensor the official
    checkpoint stores; an unregistered family is an error naming the registered ones."""
    family = get_family(args.family)
    out = {}
    for ours, official in family.top_keys.items():
        if ours == "head" and args.tied:
            continue  # a tied head is the embedding; the official checkpoints store it once
        out[f"{ours}.weight"] = f"{official}.weight"
    for n in range(args.n_layers):
        for ours, official in family.block_keys.items():
            out[f"body.blocks.{n}.{ours}.weight"] = f"{family.block_prefix}.{n}.{official}.weight"
            if args.qkv_bias and ours in ("wq", "wk", "wv"):
                out[f"body.blocks.{n}.{ours}.bias"] = f"{family.block_prefix}.{n}.{official}.bias"
    return out


def weight_files(path: Path) -> list[Path]:
    """The safetensors files of a checkpoint directory: the shards named by the index, or model.safetensors."""
    if (path / INDEX).is_file():
        shards = sorted(set(json.loads((path / INDEX).read_text())["weight_map"].values()))
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise FileNotFoundError(f"model.path: {path}/{INDEX} names shards that are not there: {missing}")
        return [path / s for s in shards]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"model.path: {path} has no *.safetensors weights (other formats are not read)")
    return files


def build_model(path: str | Path, *, family: str | None = None, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> DiffusionLM:
    """Load a checkpoint directory in its family's official layout, streaming tensors to `device` and `dtype`."""
    path = Path(path)
    config = read_hf_config(path)
    where = f"{path}/config.json"
    args = args_from_hf(config, family_of(config, family, where=where), where=where)
    with torch.device("meta"):
        model = DiffusionLM(args)
    model = model.to(dtype).to_empty(device=device)  # one allocation, already in the target dtype and place
    if args.tied:
        model.head.weight = model.body.embed.weight  # to_empty converts each tensor on its own: tie again
    load_weights(model, path)
    model.source_dir = str(path)
    return model.eval()


def load_weights(model: DiffusionLM, path: Path) -> None:
    mapping = key_map(model.args)  # ours -> official
    params = dict(model.named_parameters(remove_duplicate=False))
    files = weight_files(path)
    where: dict[str, Path] = {}
    shapes: dict[str, list[int]] = {}
    for file in files:
        with safe_open(file, framework="pt") as f:
            for key in f.keys():
                where[key] = file
                shapes[key] = list(f.get_slice(key).get_shape())
    expected = set(mapping.values())
    missing, unexpected = sorted(expected - set(where)), sorted(set(where) - expected)
    wrong = [f"{official}: checkpoint {shapes[official]} vs config {list(params[ours].shape)}"
             for ours, official in mapping.items()
             if official in shapes and shapes[official] != list(params[ours].shape)]
    if missing or unexpected or wrong:
        raise ValueError(f"model.path: {path} does not match the {model.args.family} layout of its config.json: "
                         f"missing keys {missing}; unexpected keys {unexpected}; wrong shapes {wrong}")
    by_file: dict[Path, list[str]] = {}
    for ours, official in mapping.items():
        by_file.setdefault(where[official], []).append(ours)
    device = next(iter(params.values())).device
    with torch.no_grad():
        for file, names in by_file.items():
            # straight to the GPU when there is one (safetensors reads into device memory), else via host memory
            with safe_open(file, framework="pt", device=str(device) if device.type == "cuda" else "cpu") as f:
                for ours in names:
                    params[ours].copy_(f.get_tensor(mapping[ours]))  # casts to the model's dtype


def export_checkpoint(state: dict[str, torch.Tensor], args: ModelArgs, out_dir: str | Path, *,
                      source_dir: str | Path | None, max_shard_bytes: int = 5 * 2**30) -> Path:
    """Write `state` (our names) under the family's official keys, plus every non-weight file of `source_dir`
    (config.json, tokenizer, chat template, the official modeling code), so the directory is a drop-in replacement
    of the original checkpoint. Tensors are cast to config.json's torch_dtype when it names one. Files are 0644."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = read_hf_config(source_dir) if source_dir else {}
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}.get(
        str(config.get("torch_dtype") or config.get("dtype") or ""))
    mapping = key_map(args)
    missing = sorted(set(mapping) - set(state))
    if missing:
        raise ValueError(f"export: the state dict lacks {missing}")
    tensors = {official: state[ours].detach().to("cpu", dtype or state[ours].dtype).contiguous()
               for ours, official in mapping.items()}
    for stale in list(out.glob("*.safetensors")) + [out / INDEX]:
        stale.unlink(missing_ok=True)  # an old export in the same place must not leave shards behind
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    written = []
    if len(shards) == 1:
        save_file(shards[0], out / "model.safetensors", metadata={"format": "pt"})
        written.append(out / "model.safetensors")
    else:
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, out / name, metadata={"format": "pt"})
            weight_map.update({k: name for k in shard})
            written.append(out / name)
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        (out / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        written.append(out / INDEX)
    if not source_dir:
        (out / "config.json").write_text(json.dumps(hf_config_from_args(args), indent=2))
        written.append(out / "config.json")
    else:
        for file in Path(source_dir).iterdir():
            if file.is_file() and not file.name.endswith(WEIGHT_SUFFIXES) and file.name != INDEX:
                shutil.copyfile(file, out / file.name)
                written.append(out / file.name)
    for file in written:
        os.chmod(file, 0o644)  # readable by the serving user, whatever the umask of the trainer
    return out


def save_model(model: DiffusionLM, out_dir: str | Path, *, source_dir: str | Path | None = None) -> Path:
    """Export a live model (convenience for tests and the tiny model)."""
    return export_checkpoint(model.state_dict(), model.args, out_dir,
                             source_dir=source_dir if source_dir is not None else model.source_dir)
