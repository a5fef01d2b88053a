"""The weight bus (common/weight_bus.py): bucket plans, signatures, and a real gloo broadcast between three members
(threads of this process, each with its own ProcessGroupGloo over a loopback TCPStore) that must deliver every tensor
bit for bit, whatever the bucket size."""
from __future__ import annotations

import socket
import threading

import pytest
import torch
import torch.distributed as dist

from common.weight_bus import WeightBus, plan_buckets, signature, wire_format


def state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": torch.randn(50, 8, generator=g),
        "layers.0.w": torch.randn(8, 8, generator=g),
        "layers.0.steps": torch.arange(5, dtype=torch.int64),  # a non-float buffer keeps its dtype
        "layers.1.w": torch.randn(8, 8, generator=g),
        "norm.weight": torch.randn(8, generator=g),
    }


def test_plan_keeps_order_splits_on_dtype_and_size():
    state = state_dict()
    one_bucket_per_dtype_run = plan_buckets(state, bucket_bytes=10**9)
    assert [b.names for b in one_bucket_per_dtype_run] == [
        ("embed.weight", "layers.0.w"), ("layers.0.steps",), ("layers.1.w", "norm.weight")]
    assert [b.dtype for b in one_bucket_per_dtype_run] == [torch.float32, torch.int64, torch.float32]
    # 300 bytes: embed (1600 B) is larger than a bucket and goes alone; 8x8 floats (256 B) + 8 floats (32 B) fit
    small = plan_buckets(state, bucket_bytes=300)
    assert [b.names for b in small] == [("embed.weight",), ("layers.0.w",), ("layers.0.steps",),
                                        ("layers.1.w", "norm.weight")]
    assert sum(sum(b.numels) for b in small) == sum(t.numel() for t in state.values())
    with pytest.raises(ValueError, match="weight_bucket_mb"):
        plan_buckets(state, bucket_bytes=0)


def test_wire_format_and_signature():
    state = state_dict()
    wire = wire_format(dict(reversed(state.items())), torch.bfloat16)
    assert list(wire) == sorted(state)  # both ends agree on the order whatever their module order
    assert wire["layers.0.steps"].dtype == torch.int64 and wire["embed.weight"].dtype == torch.bfloat16
    meta = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in wire.items()}
    assert signature(meta) == signature(wire)  # shapes and dtypes only, no values
    changed = dict(wire, **{"norm.weight": torch.zeros(9, dtype=torch.bfloat16)})
    assert signature(changed) != signature(wire)
    assert signature(wire_format(state, torch.float32)) != signature(wire)


def run_bus(devices: list[torch.device], sent: dict[str, torch.Tensor], *, bucket_bytes: int = 2**20):
    """One generation of the bus with a member per device (threads, loopback TCPStore): member 0 sends `sent` as
    version 5. Returns ({rank: what send / receive returned}, {rank: the backend the member chose})."""
    listen = socket.socket()
    listen.bind(("127.0.0.1", 0))
    listen.listen()
    port = listen.getsockname()[1]
    master = dist.TCPStore("127.0.0.1", port, is_master=True, master_listen_fd=listen.fileno(),
                           wait_for_workers=False)
    received, backends, errors = {}, {}, []

    def member(rank: int) -> None:
        try:
            store = master if rank == 0 else dist.TCPStore("127.0.0.1", port, is_master=False)
            bus = WeightBus(store, rank=rank, world_size=len(devices), generation=7, device=devices[rank],
                            timeout_s=30, bucket_bytes=bucket_bytes)
            backends[rank] = bus.backend
            if rank == 0:
                received[rank] = bus.send(sent, version=5)
            else:
                like = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in sent.items()}
                received[rank] = bus.receive(like)
            bus.close()
        except Exception as err:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(err)

    threads = [threading.Thread(target=member, args=(r,)) for r in range(len(devices))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    listen.close()
    assert not errors, errors
    return received, backends


@pytest.mark.parametrize("bucket_bytes", [64, 1000, 2**20])
def test_broadcast_delivers_every_tensor_exactly(bucket_bytes):
    sent = wire_format(state_dict(seed=1), torch.float32)
    received, _ = run_bus([torch.device("cpu")] * 3, sent, bucket_bytes=bucket_bytes)
    assert received[0] == sum(t.numel() * t.element_size() for t in sent.values())
    for rank in (1, 2):
        state, version = received[rank]
        assert version == 5
        assert list(state) == list(sent)
        for k, v in sent.items():
            assert state[k].dtype == v.dtype and torch.equal(state[k], v), k


def test_members_on_different_devices_agree_on_gloo():
    """A learner rank on a GPU and actors on CPUs: every member derives the same backend from all members' device
    types (gloo: NCCL needs every member on a GPU), and the GPU member stages through host memory, so the group forms
    and the weights arrive. (The "cuda" member here never touches CUDA: with gloo its buffers are on the host, which
    is why this runs on a CPU-only machine; choosing NCCL for it alone would hang the rendezvous.)"""
    sent = wire_format(state_dict(seed=2), torch.bfloat16)
    received, backends = run_bus([torch.device("cuda", 0), torch.device("cpu"), torch.device("cpu")], sent)
    assert backends == {0: "gloo", 1: "gloo", 2: "gloo"}
    for rank in (1, 2):
        state, version = received[rank]
        assert version == 5 and all(torch.equal(state[k], v) for k, v in sent.items())
