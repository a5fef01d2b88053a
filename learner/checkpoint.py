"""Checkpoints: `torch.distributed.checkpoint` (DCP) of the sharded model + optimizer, plus a small per-rank file
(scheduler, step, version, RNG); and an export in the official layout of the model's family (safetensors under the
official keys + the source directory's config, tokenizer and code files), a drop-in replacement of the original."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from common.models import export_checkpoint


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
    """Export the gathered `state` (our parameter names) in the official layout of `model`'s family, with the
    config.json, tokenizer and code files of the directory the model was loaded from; files 0644. `tokenizer` is
    saved only when that directory is unknown."""
    export_checkpoint(state, model.args, path, source_dir=model.source_dir)
    if model.source_dir is None and tokenizer is not None:
        tokenizer.save_pretrained(path)
