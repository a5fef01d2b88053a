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


@pytest.mark.parametrize("bucket_bytes", [64, 1000, 2**20])
def test_broadcast_delivers_every_tensor_exactly(bucket_bytes):
    listen = socket.socket()
    listen.bind(("127.0.0.1", 0))
    listen.listen()
    port = listen.getsockname()[1]
    master = dist.TCPStore("127.0.0.1", port, is_master=True, master_listen_fd=listen.fileno(),
                           wait_for_workers=False)
    sent = wire_format(state_dict(seed=1), torch.float32)
    received, errors = {}, []

    def member(rank: int) -> None:
        try:
            store = master if rank == 0 else dist.TCPStore("127.0.0.1", port, is_master=False)
            bus = WeightBus(store, rank=rank, world_size=3, generation=7, device=torch.device("cpu"), timeout_s=30,
                            bucket_bytes=bucket_bytes)
            if rank == 0:
                received[rank] = bus.send(sent, version=5)
            else:
                like = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in sent.items()}
                received[rank] = bus.receive(like)
            bus.close()
        except Exception as err:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(err)

    threads = [threading.Thread(target=member, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    listen.close()
    assert not errors, errors
    assert received[0] == sum(t.numel() * t.element_size() for t in sent.values())
    for rank in (1, 2):
        state, version = received[rank]
        assert version == 5
        assert list(state) == list(sent)
        for k, v in sent.items():
            assert state[k].dtype == v.dtype and torch.equal(state[k], v), k
