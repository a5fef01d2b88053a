"""Weight bus: a bucketed broadcast of the policy from learner rank 0 to the rollout actors over a process group of
its own — the alternative to the object-store copy (docs/design.md, "Weight sync") (`pipeline.weight_sync:
broadcast`).

Members: learner rank 0 is bus rank 0 (the sender), rollout actor i is bus rank i + 1. The group is a standalone
`ProcessGroupGloo` / `ProcessGroupNCCL` (not the learner's default group, which only the learner ranks join), keyed by
a generation number in the learner's TCPStore: when an actor dies, the driver makes every member join a new
generation and sends again. One backend for all members (common/devices.py::bus_backend): each member publishes its
device type in the store and every member derives the same choice from all of them — NCCL only when every member is
on CUDA, else gloo everywhere (a member on an accelerator then sends / receives through host memory).

Tensors go in buckets: consecutive state-dict entries of one dtype, flattened into one buffer of at most
`bucket_bytes` (a tensor larger than that gets a bucket of its own), one broadcast per bucket — a few large messages
instead of one per parameter, and a bounded extra buffer on each side.

A member dying mid-broadcast: with gloo the others' wait raises after the timeout; an NCCL group is built with
TORCH_NCCL_ASYNC_ERROR_HANDLING=2 (abort the communicator and raise, instead of the default that ends the process), so
a dead actor never takes learner rank 0 down with it (the driver then rebuilds the group: deploy/weight_sync.py).
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist

from common.devices import bus_backend

SENDER = 0
# NCCL's watchdog, on a collective that cannot finish: 2 = abort the communicator and raise in the waiting call
# (the default, 3, ends the process: a dead actor would kill learner rank 0 mid-push)
NCCL_ERROR_HANDLING = "2"


@dataclass(frozen=True)
class Bucket:
    """Consecutive tensors of one dtype sent as one flat buffer."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtype: torch.dtype

    @property
    def numels(self) -> list[int]:
        return [int(torch.Size(s).numel()) for s in self.shapes]


def plan_buckets(state: dict[str, torch.Tensor], bucket_bytes: int) -> list[Bucket]:
    """Group `state` (in its own key order) into buckets; both ends build the same plan from their own state dict."""
    if bucket_bytes <= 0:
        raise ValueError(f"pipeline.weight_bucket_mb must be > 0 (got {bucket_bytes} bytes)")
    buckets: list[Bucket] = []
    names: list[str] = []
    shapes: list[tuple[int, ...]] = []
    dtype: torch.dtype | None = None  # of the open bucket; None: no bucket open yet
    size = 0
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        if dtype is not None and (t.dtype != dtype or size + nbytes > bucket_bytes):
            buckets.append(Bucket(tuple(names), tuple(shapes), dtype))
            names, shapes, size = [], [], 0
        names.append(name)
        shapes.append(tuple(t.shape))
        dtype, size = t.dtype, size + nbytes
    if dtype is not None:
        buckets.append(Bucket(tuple(names), tuple(shapes), dtype))
    return buckets


def wire_format(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """What travels: entries in sorted key order (both ends agree whatever their module order), floating tensors in
    the compute dtype the actors sample with."""
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sorted(state.items())}


def signature(state: dict[str, torch.Tensor]) -> str:
    """Names, shapes and dtypes in order: sender and receivers must agree before any byte is sent."""
    text = ";".join(f"{k}:{tuple(v.shape)}:{v.dtype}" for k, v in state.items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class WeightBus:
    """One member of the weight group of one generation. Construction is a rendezvous: every member must join."""

    def __init__(self, store: dist.Store, *, rank: int, world_size: int, generation: int, device: torch.device,
                 timeout_s: float, bucket_bytes: int) -> None:
        self.rank, self.world_size, self.generation = rank, world_size, generation
        self.bucket_bytes = bucket_bytes
        prefixed = dist.PrefixStore(f"weight_bus/{generation}", store)
        timeout = datetime.timedelta(seconds=timeout_s)
        self.backend = agree_backend(prefixed, rank=rank, world_size=world_size, device=torch.device(device))
        # where the flat buffers live: the member's accelerator with NCCL, host memory with gloo
        self.device = torch.device(device) if self.backend == "nccl" else torch.device("cpu")
        # Any: torch's stubs declare neither `broadcast` on these backends nor ProcessGroupGloo._Options
        self.group: Any
        if self.backend == "nccl":
            opts = dist.ProcessGroupNCCL.Options()
            opts._timeout = timeout
            with _env("TORCH_NCCL_ASYNC_ERROR_HANDLING", NCCL_ERROR_HANDLING):  # read when the group is built
                self.group = dist.ProcessGroupNCCL(prefixed, rank, world_size, opts)
        else:
            gloo_opts = dist.ProcessGroupGloo._Options()  # type: ignore[attr-defined]
            gloo_opts._timeout = timeout
            gloo_opts._devices = [gloo_device()]
            self.group = dist.ProcessGroupGloo(prefixed, rank, world_size, gloo_opts)

    @classmethod
    def join(cls, store: dist.Store, pipeline, *, rank: int, world_size: int, generation: int,
             device: torch.device) -> "WeightBus":
        """A member with the run's `pipeline.weight_sync_timeout_s` and `pipeline.weight_bucket_mb`."""
        return cls(store, rank=rank, world_size=world_size, generation=generation, device=device,
                   timeout_s=pipeline.weight_sync_timeout_s, bucket_bytes=int(pipeline.weight_bucket_mb * 2**20))

    def _broadcast(self, flat: torch.Tensor) -> None:
        options = dist.BroadcastOptions()
        options.rootRank = SENDER
        self.group.broadcast([flat], options).wait()

    def send(self, state: dict[str, torch.Tensor], version: int) -> int:
        """Sender side: broadcast the version, then every bucket of `state`. Returns the bytes sent."""
        assert self.rank == SENDER
        self._broadcast(torch.tensor([version], dtype=torch.int64, device=self.device))
        sent = 0
        for bucket in plan_buckets(state, self.bucket_bytes):
            flat = torch.cat([state[n].reshape(-1) for n in bucket.names]).to(self.device)
            self._broadcast(flat)
            sent += flat.numel() * flat.element_size()
        return sent

    def receive(self, like: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
        """Receiver side: (a new state dict shaped like `like` (names, shapes, dtypes), filled bucket by bucket,
        its version)."""
        assert self.rank != SENDER
        header = torch.zeros(1, dtype=torch.int64, device=self.device)
        self._broadcast(header)
        out: dict[str, torch.Tensor] = {}
        for bucket in plan_buckets(like, self.bucket_bytes):
            flat = torch.empty(sum(bucket.numels), dtype=bucket.dtype, device=self.device)
            self._broadcast(flat)
            for name, shape, part in zip(bucket.names, bucket.shapes, flat.split(bucket.numels)):
                out[name] = part.view(shape)
        return out, int(header.item())

    def close(self) -> None:
        try:
            self.group.shutdown()
        except Exception:  # a group broken by a dead member may refuse a clean shutdown; it is dropped anyway
            pass


def gloo_device():
    """The gloo transport device: GLOO_SOCKET_IFNAME when set (loopback on a local instance), else this node's IP."""
    iface = os.environ.get("GLOO_SOCKET_IFNAME")
    if iface:
        return dist.ProcessGroupGloo.create_device(interface=iface.split(",")[0])
    import ray

    return dist.ProcessGroupGloo.create_device(hostname=ray.util.get_node_ip_address())


def agree_backend(store: dist.Store, *, rank: int, world_size: int, device: torch.device) -> str:
    """Publish this member's device type and return the backend every member derives from all of them
    (common/devices.py::bus_backend); blocks until every member has published (the store's timeout)."""
    store.set(f"device/{rank}", device.type)
    return bus_backend(store.get(f"device/{r}").decode() for r in range(world_size))


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous
