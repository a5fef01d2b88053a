"""LiveBytes: the bytes of tensors created inside a block of code, live and at their peak, on any device (the CPU has no
allocator statistics). A TorchDispatchMode that adds the bytes of every new storage an op creates (views and in-place
results share an input's storage: not new) and subtracts them when the storage is freed (a weak reference: a tensor
saved for backward stays counted until backward frees it). Its peak is what an allocator must hold for the ops run
inside, without fragmentation. Used by tests/deploy/test_plan.py and benchmarks/plan_check.py.

OPENED ops are run through their composite kernel (CompositeExplicitAutograd[NonFunctional]; the CPU and CUDA
backends have no kernel of their own for them) with the mode active, so the temporaries that kernel allocates are
seen too: `torch.logsumexp`'s kernel (ATen ReduceOps.cpp, logsumexp_out_impl) holds `(x - max).exp_()`, a copy of
its whole input, which a mode that only sees an op's result would miss (the head's [chunk, V] float32 logits: as
much again). Only listed ops are opened: a composite run by key bypasses tensor subclasses (FSDP's DTensors), and
some composites cannot be called by key with the arguments the dispatcher hands over. A kernel's internal scratch
that is no op at all (cuBLAS / SDPA workspaces, gloo's staging buffers) stays invisible.

Memory is identified by its device and data pointer, not by the storage object: a functional collective or a tensor
subclass may hand out a second storage object over the same memory (an alias), which is counted once and freed when
its last storage object is.

`top=k`: also record the k largest storages live at the peak, with the op that created each (`m.at_peak`), to tell
where a peak comes from.
"""
from __future__ import annotations

import weakref

import torch
from torch._C import DispatchKey
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

OPENED = {torch.ops.aten.logsumexp.default, torch.ops.aten.logsumexp.out}
BACKEND = {"cpu": DispatchKey.CPU, "cuda": DispatchKey.CUDA}
COMPOSITE = (DispatchKey.CompositeExplicitAutograd, DispatchKey.CompositeExplicitAutogradNonFunctional)


def composite_key(func, tensors: list[torch.Tensor]) -> DispatchKey | None:
    """The key of the composite kernel that runs `func` (an OPENED op) on plain tensors of one backend that has no
    kernel of its own for it, else None (the op runs as it is)."""
    if func not in OPENED or any(type(t) not in (torch.Tensor, torch.nn.Parameter) for t in tensors):
        return None
    devices = {t.device.type for t in tensors}
    backend = BACKEND.get(devices.pop()) if len(devices) == 1 else None
    name = func.name()
    if backend is None or torch._C._dispatch_has_kernel_for_dispatch_key(name, backend):
        return None
    return next((k for k in COMPOSITE if torch._C._dispatch_has_kernel_for_dispatch_key(name, k)), None)


def _memory(t: torch.Tensor) -> tuple | None:
    """The memory a tensor's storage lives in: (device, data pointer); None for a wrapper subclass (DTensor,
    AsyncCollectiveTensor), whose storage holds no memory (its inner tensors are counted by the ops that make them).
    Not the storage object: functional collectives return new storage objects over memory that an earlier op
    allocated, which must not count twice."""
    try:
        return t.device, t.untyped_storage().data_ptr()
    except RuntimeError:  # "invalid python storage": a wrapper subclass
        return None


class LiveBytes(TorchDispatchMode):
    """`with LiveBytes() as m: ...` -> m.now (bytes still held), m.peak (the most held at once)."""

    def __init__(self, top: int = 0) -> None:
        super().__init__()
        self.live: dict[tuple, tuple[int, set, str]] = {}  # memory -> (bytes, its storage objects, the op)
        self.now = self.peak = 0
        self.top, self.at_peak = top, []
        self._opened: set = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        key = None if func in self._opened else composite_key(func, tensors)
        if key is not None:
            # a composite that calls its own op again (another overload's kernel) runs it plainly
            self._opened.add(func)
            try:
                with self:  # the composite's own ops come back through this mode
                    out = func._op_dk(key, *args, **kwargs)
            finally:
                self._opened.discard(func)
        else:
            out = func(*args, **kwargs)
        inputs = {_memory(t) for t in tensors}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                k = _memory(t)
                if k is None or storage.nbytes() == 0 or k in inputs:
                    continue
                if k in self.live:  # another storage object over memory already counted (an alias): not new
                    self.live[k][1].add(self._watch(storage, k))
                    continue
                self.now += storage.nbytes()
                self.live[k] = (storage.nbytes(), {self._watch(storage, k)}, str(func))
                if self.now > self.peak:
                    self.peak = self.now
                    if self.top:
                        largest = sorted(self.live.values(), key=lambda v: -v[0])[:self.top]
                        self.at_peak = [(op, n) for n, _, op in largest]
        return out

    def _watch(self, storage, key: tuple) -> weakref.ref:
        return weakref.ref(storage, lambda ref, k=key: self._free(k, ref))

    def _free(self, key: tuple, ref: weakref.ref) -> None:
        """A storage object died: the memory is free once every storage object over it has died."""
        refs = self.live[key][1]
        refs.discard(ref)
        if not refs:
            self.now -= self.live.pop(key)[0]

    def reset_peak(self) -> None:
        self.peak = self.now
