"""FSDP2 done plainly: `fully_shard` on every transformer block, then on the root (torchtitan's recipe).

The root is the native `DiffusionLM` (common/models/): embeddings, final norm and LM head (tied or not) sit in the
root's group and are gathered by its hooks; its forward runs body and head, so nothing is called around the hooks.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from common.models import DiffusionLM


def shard_model(net: nn.Module, mesh: DeviceMesh | None = None, *, compute_dtype: torch.dtype,
                activation_checkpointing: bool = False) -> None:
    """Shard `net` (a DiffusionLM) over `mesh`, in place.

    Trainable parameters stay float32 (the optimizer's master copy; a frozen LoRA base may be held in the compute
    dtype already); with compute_dtype bfloat16 the all-gathered copies are bf16 and gradients are reduced in float32
    (torchtitan's default policy). Forward inputs are *not* cast (`cast_forward_inputs=False`, not the default): each
    block receives the float32 RoPE tables, as on the actors, where a cast to bf16 would change every S_theta against
    the actors' S_old and close GDSD's clamp (docs/design.md, "Numerical traps"). With `activation_checkpointing`
    each block is recomputed in backward (learner.activation_checkpointing): activations of one block at a time.
    """
    if not isinstance(net, DiffusionLM):
        raise TypeError(f"shard_model expects the native DiffusionLM, got {type(net).__name__}")
    net.body.activation_checkpointing = activation_checkpointing
    policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32, cast_forward_inputs=False)
    for block in net.body.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    # the root keeps its (small) parameters gathered after forward: they are needed again at once in backward
    fully_shard(net, mesh=mesh, mp_policy=policy, reshard_after_forward=False)
