"""LiveBytes: the bytes of tensors created inside a block of code, live and at their peak, on any device (the CPU has no
allocator statistics). A TorchDispatchMode that adds the bytes of every new storage an op creates (views and in-place
results share an input's storage: not new) and subtracts them when the storage is freed (a weak reference: a tensor
saved for backward stays counted until backward frees it). Its peak is what an allocator must hold for the ops run
inside, without fragmentation. Used by tests/deploy/test_plan.py and benchmarks/plan_check.py.
"""
from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class LiveBytes(TorchDispatchMode):
    """`with LiveBytes() as m: ...` -> m.now (bytes still held), m.peak (the most held at once)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[int, weakref.ref]] = {}
        self.now = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                key = storage._cdata
                if key not in self.live and key not in inputs:
                    self.now += storage.nbytes()
                    self.peak = max(self.peak, self.now)
                    self.live[key] = (storage.nbytes(), weakref.ref(storage, lambda _, k=key: self._free(k)))
        return out

    def _free(self, key: int) -> None:
        self.now -= self.live.pop(key)[0]

    def reset_peak(self) -> None:
        self.peak = self.now
