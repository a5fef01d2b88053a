"""The device contract (docs/design.md, "Devices"): each service resolves its device once, and everything it creates
(model, generators, masks, buffers, collective inputs) lives there.

  service_device(num_gpus)   rollout actor / learner rank: Ray's assigned accelerator -> `<type>:<local index>`,
                             else CPU (an accelerator asked for but not visible is an error, not a silent CPU run)
  make_generator(device, s)  a torch.Generator on `device` (sampling noise must be drawn where the logits are)
  group_backend(device)      the learner's process group: a backend for each device type it reduces on, e.g.
                             "cpu:gloo,cuda:nccl" (CPU tensors never reach NCCL)
  bus_backend(types)         the weight bus: one backend every member agrees on (NCCL only when all are on CUDA)

Device types come from `torch.accelerator`, not from the string "cuda", so the same code runs on any accelerator
torch knows (and on the simulated one the CPU tests register: tests/simulated_device.py). Mask draws stay on CPU on
purpose (common/masking.py: a mask must be a pure function of its seed on any device).
"""
from __future__ import annotations

import os
from typing import Iterable

import torch
import torch.distributed as dist

# a device type torch has no default collective backend for gets this one (CPU tensors through gloo)
FALLBACK_BACKEND = "gloo"


def local_index(assigned: list[int | str], visible: str | None) -> int:
    """The local device index of the first accelerator Ray assigned to this process. Ray restricts
    CUDA_VISIBLE_DEVICES to the assigned ids, so the index is the id's position there; without the variable (e.g.
    RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES) it is the id itself."""
    if not assigned:
        raise ValueError("local_index: no accelerator assigned")
    first = str(assigned[0])
    if visible:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        if first in ids:
            return ids.index(first)
    return int(first)


def service_device(num_gpus: float, *, what: str) -> torch.device:
    """The device of a service that asked Ray for `num_gpus` accelerators (`what` names the config key, for errors).
    CPU when it asked for none."""
    if num_gpus <= 0:
        return torch.device("cpu")
    accel = torch.accelerator.current_accelerator(check_available=True)
    if accel is None:
        raise RuntimeError(f"{what}={num_gpus} but this process sees no accelerator (torch {torch.__version__}: a "
                           "CPU build of torch, or CUDA_VISIBLE_DEVICES hides the GPU); install a GPU build of torch "
                           f"(TORCH_SPEC in the Makefile) or set {what}=0")
    assigned: list[int | str] = []
    try:
        import ray  # a Ray worker: the ids Ray assigned; elsewhere (gpu_check, tests) the current device

        if ray.is_initialized():
            assigned = list(ray.get_runtime_context().get_accelerator_ids().get("GPU", []))
    except ImportError:
        pass
    index = (local_index(assigned, os.environ.get("CUDA_VISIBLE_DEVICES")) if assigned
             else torch.accelerator.current_device_index())
    torch.accelerator.set_device_index(index)
    return torch.device(accel.type, index)


def make_generator(device: torch.device | str, seed: int | None = None) -> torch.Generator:
    """A generator on `device` (noise drawn for tensors on an accelerator needs one there)."""
    generator = torch.Generator(device=torch.device(device))
    if seed is not None:
        generator.manual_seed(int(seed))
    return generator


def _accelerator_backend(device_type: str) -> str:
    return dist.Backend.default_device_backend_map.get(device_type, FALLBACK_BACKEND)


def group_backend(device: torch.device) -> str:
    """The backend string of a process group whose members compute on `device`: one backend per device type it may
    reduce on (PyTorch's "cpu:gloo,cuda:nccl" form), so a CPU tensor never reaches an accelerator-only backend."""
    if device.type == "cpu":
        return "gloo"
    return f"cpu:gloo,{device.type}:{_accelerator_backend(device.type)}"


def bus_backend(member_device_types: Iterable[str]) -> str:
    """The one backend all weight-bus members use: the accelerator's (NCCL) when every member is on the same
    accelerator type, else gloo everywhere (members on an accelerator stage through host memory)."""
    types = set(member_device_types)
    if len(types) == 1:
        (only,) = types
        if only != "cpu":
            return _accelerator_backend(only)
    return FALLBACK_BACKEND
