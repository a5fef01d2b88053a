"""FSDP2 done plainly: `fully_shard` on every transformer block, then on the root (torchtitan's recipe).

The root is our `SelectiveLogits` wrapper, so embeddings, final norm and LM head (tied or not) sit in the root's
group and are gathered by its hooks even though its forward calls the HF body and head separately.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks, found from the HF model's own `_no_split_modules` (no model-name checks)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        raise ValueError(f"{type(model).__name__} declares no _no_split_modules; cannot find its transformer blocks")
    return blocks


def shard_model(net: nn.Module, hf_model: nn.Module, mesh: DeviceMesh, *, compute_dtype: torch.dtype) -> None:
    """Shard `net` (whose submodule `hf_model` holds the blocks) over `mesh`, in place.

    Parameters stay float32 (the optimizer's master copy); with compute_dtype bfloat16 the all-gathered copies are
    bf16 and gradients are reduced in float32 (torchtitan's default policy).
    """
    policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    for block in transformer_blocks(hf_model):
        fully_shard(block, mesh=mesh, mp_policy=policy)
    # the root keeps its (small) parameters gathered after forward: they are needed again at once in backward
    fully_shard(net, mesh=mesh, mp_policy=policy, reshard_after_forward=False)
