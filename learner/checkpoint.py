"""Checkpoints: `torch.distributed.checkpoint` (DCP) of the sharded model + optimizer, plus a small per-rank file
(scheduler, step, version, RNG); and an export in the official layout of the model's family (safetensors under the
official keys + the source directory's config, tokenizer and code files), a drop-in replacement of the original.
With LoRA the DCP checkpoint holds the adapters and their optimizer state only (the frozen base is reloaded from
model.path), and the export is the merged weights plus a peft adapter directory (`save_adapter`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import json
import os

import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from common.models import DiffusionLM, export_checkpoint, key_map
from common.models.lora import LoRASpec, has_lora, is_adapter, merged_state
from learner.state import WorkerState


def _options(net: nn.Module) -> StateDictOptions:
    # LoRA: the frozen base is model.path's weights; only what trains is saved (and loaded back non-strictly)
    lora = has_lora(net)
    return StateDictOptions(ignore_frozen_params=lora, strict=not lora)


def save(path: str, *, net: nn.Module, optimizer, scheduler, rank: int, state: dict) -> str:
    model_sd, optim_sd = get_state_dict(net, optimizer, options=_options(net))
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=path)
    # per-rank: each rank's RNG differs, and DCP would deduplicate same-named values across ranks
    torch.save({"scheduler": scheduler.state_dict(), **state}, Path(path) / f"rank{rank}.pt")
    return path


def load(path: str, *, net: nn.Module, optimizer, scheduler, rank: int) -> dict:
    if not (Path(path) / f"rank{rank}.pt").is_file():
        raise FileNotFoundError(f"{path}: no learner checkpoint for rank {rank} (was it saved with as many ranks?)")
    options = _options(net)
    model_sd, optim_sd = get_state_dict(net, optimizer, options=options)
    state: dict[str, Any] = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(net, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"], options=options)
    extra = torch.load(Path(path) / f"rank{rank}.pt", weights_only=False)
    scheduler.load_state_dict(extra.pop("scheduler"))
    return extra


def save_hf(state: dict[str, torch.Tensor], model: DiffusionLM, tokenizer, path: str) -> None:
    """Export the gathered `state` (our parameter names) in the official layout of `model`'s family, with the
    config.json, tokenizer and code files of the directory the model was loaded from; files 0644. `tokenizer` is
    saved only when that directory is unknown."""
    export_checkpoint(state, model.args, path, source_dir=model.source_dir)
    if model.source_dir is None and tokenizer is not None:
        tokenizer.save_pretrained(path)


def save_adapter(state: dict[str, torch.Tensor], model: DiffusionLM, spec: LoRASpec, path: str) -> str:
    """A peft adapter directory (adapter_config.json + adapter_model.safetensors) for the official checkpoint:
    keys `base_model.model.<official module>.lora_A.weight` / `.lora_B.weight`, the official module names of the
    model's family (LLaDA: q_proj k_proj v_proj attn_out ff_proj up_proj ff_out; Dream: the Qwen2 names)."""
    official = key_map(model.args)  # ours.weight -> official.weight
    tensors, targets = {}, set()
    for key, value in state.items():
        if not is_adapter(key):
            continue
        stem, which = key.rsplit(".", 1)  # body.blocks.N.wq, lora_A
        module = official[f"{stem}.weight"].removesuffix(".weight")
        tensors[f"base_model.model.{module}.{which}.weight"] = value.detach().to("cpu", torch.float32).contiguous()
        targets.add(module.rsplit(".", 1)[-1])
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / "adapter_model.safetensors", metadata={"format": "pt"})
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": spec.r, "lora_alpha": spec.alpha,
              "lora_dropout": spec.dropout, "target_modules": sorted(targets), "bias": "none",
              "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
              "base_model_name_or_path": model.source_dir}
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    for file in ("adapter_model.safetensors", "adapter_config.json"):
        os.chmod(out / file, 0o644)
    return str(out)


class Checkpointing(WorkerState):
    """The worker's export and checkpoint calls (a mixin of LearnerWorker, learner/worker.py): every rank calls them
    (the gathers and DCP are collective); rank 0 writes the export."""

    def export_hf(self, path: str) -> str | None:
        """Export under the family's official checkpoint keys with the source directory's config, tokenizer and code
        files (common/models/weights.py), a drop-in replacement of the original (rank 0 writes)."""
        state = self.full_state_dict()
        if self.rank == 0:
            if self.cfg.model.lora.enabled:  # merged weights in the official layout + a peft adapter directory
                spec = self.denoiser.model.lora_spec
                save_adapter(state, self.denoiser.model, spec, f"{path}/adapter")
                state = merged_state(state, spec)
            save_hf(state, self.denoiser.model, self.denoiser.tokenizer, path)
            return path
        return None

    def save_checkpoint(self, path: str, extra: dict | None = None) -> str:
        return save(path, net=self.denoiser.net, optimizer=self.optimizer, scheduler=self.scheduler,
                               rank=self.rank, state={"version": self.version, "optimizer_steps": self.optimizer_steps,
                                                      "rng": self.generator.get_state(), **(extra or {})})

    def load_checkpoint(self, path: str) -> dict:
        state = load(path, net=self.denoiser.net, optimizer=self.optimizer, scheduler=self.scheduler,
                                rank=self.rank)
        self.version, self.optimizer_steps = state["version"], state["optimizer_steps"]
        self.generator.set_state(state["rng"])
        return {k: v for k, v in state.items() if k != "rng"}
