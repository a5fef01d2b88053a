"""Checkpoints: `torch.distributed.checkpoint` (DCP) of the sharded model + optimizer, plus a small per-rank file
(scheduler, step, version, RNG); and an HF export (safetensors + config + tokenizer) that `transformers` loads."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from transformers import AutoModelForCausalLM


def save(path: str, *, net: nn.Module, optimizer, scheduler, rank: int, state: dict) -> str:
    model_sd, optim_sd = get_state_dict(net, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=path)
    # per-rank: each rank's RNG differs, and DCP would deduplicate same-named values across ranks
    torch.save({"scheduler": scheduler.state_dict(), **state}, Path(path) / f"rank{rank}.pt")
    return path


def load(path: str, *, net: nn.Module, optimizer, scheduler, rank: int) -> dict:
    if not (Path(path) / f"rank{rank}.pt").is_file():
        raise FileNotFoundError(f"{path}: no learner checkpoint for rank {rank} (was it saved with as many ranks?)")
    model_sd, optim_sd = get_state_dict(net, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(net, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    extra = torch.load(Path(path) / f"rank{rank}.pt", weights_only=False)
    scheduler.load_state_dict(extra.pop("scheduler"))
    return extra


def save_hf(state: dict[str, torch.Tensor], model: nn.Module, tokenizer, path: str) -> None:
    """A plain HF directory: a fresh model of the same config loads the gathered weights and saves itself
    (transformers handles tied weights and the safetensors layout)."""
    fresh = AutoModelForCausalLM.from_config(model.config, trust_remote_code=True)
    fresh.load_state_dict(state)
    fresh.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
