"""What one learner rank holds, declared once for its role mixins: LearnerWorker (learner/worker.py) sets these in
`__init__` and `setup`; WeightPublisher (publish.py), Checkpointing (checkpoint.py) and SFTStep (sft.py) read them.
Annotations only: nothing is created or set here."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch
    import torch.distributed as dist

    from common.config import RunConfig
    from common.denoiser import Denoiser
    from common.weight_bus import WeightBus


class WorkerState:
    cfg: RunConfig
    rank: int
    world_size: int
    device: torch.device
    denoiser: Denoiser  # the policy: an FSDP2 shard on `device`
    reference: Denoiser | None  # a frozen copy for per-token S_ref (or the policy with adapters off); None: unused
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator  # SFT mask draws (CPU)
    version: int  # bumped once per RL step
    optimizer_steps: int
    store: dist.TCPStore  # the rendezvous store; rank 0's hosts the weight bus rendezvous too
    bus: WeightBus | None  # rank 0 with pipeline.weight_sync: broadcast, after join_weight_bus
    _sent: dict[str, torch.Tensor] | None  # the last state sent on the bus, kept for a resend

    # one role's method that another role calls
    full_state_dict: Callable[[], dict[str, torch.Tensor]]  # WeightPublisher (collective gather)
    _optimizer_step: Callable[[], torch.Tensor]  # LearnerWorker: clip, AdamW, schedule; the pre-clip grad norm
