"""A simulated accelerator for CPU-only machines: the device contract's tests run the real services on it.

PyTorch's PrivateUse1 backend, registered from Python as device type "simdev" (`torch.accelerator` then reports it as
this process's accelerator), holds tensors that are CPU tensors inside a wrapper subclass. Every op unwraps, runs on
the CPU and wraps the result again, and fails the way a GPU would where devices do not match:

  * an op mixing simdev tensors with CPU tensors (other than 0-dim scalars and index tensors, which CUDA accepts),
  * noise drawn for simdev tensors with a CPU generator (or the reverse),
  * a collective on a process group without a backend for the tensor's device type.

Generators on simdev are CPU generators of a marked subclass (`torch.Generator(device="simdev")` works inside
`simulated_accelerator()`). Importing this module registers the device type, process-wide and for good, so only the
checks' own subprocess imports it (tests/test_simulated_device.py runs tests/simulated_device_checks.py). Not a model of
a GPU's numerics: a check of where tensors live.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.distributed as dist
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

TYPE = "simdev"
# where CUDA accepts a CPU tensor next to device tensors: indices of advanced indexing
_INDEX_OPS = {torch.ops.aten.index.Tensor, torch.ops.aten.index_put_.default, torch.ops.aten.index_put.default,
              torch.ops.aten._index_put_impl_.default}


class DeviceMismatch(RuntimeError):
    """What a GPU would raise: tensors (or a generator) on different devices in one op."""


class SimGenerator(torch._C.Generator):
    """A generator of the simulated device: a CPU generator that reports the simulated device."""

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return DEVICE


class _GeneratorMeta(type(torch._C.Generator)):
    def __instancecheck__(cls, obj) -> bool:
        return isinstance(obj, torch._C.Generator)


class PatchedGenerator(torch._C.Generator, metaclass=_GeneratorMeta):
    """`torch.Generator` inside the simulation: device="simdev" gives a SimGenerator, anything else the real one."""

    def __new__(cls, device: str | torch.device = "cpu"):
        if torch.device(device).type == TYPE:
            return SimGenerator()
        return torch._C.Generator(device=device)


class SimTensor(torch.Tensor):
    """A CPU tensor (`inner`) that reports the simulated device."""

    @staticmethod
    def __new__(cls, inner: torch.Tensor, requires_grad: bool = False):
        return torch.Tensor._make_wrapper_subclass(cls, inner.shape, strides=inner.stride(),
                                                   storage_offset=inner.storage_offset(), dtype=inner.dtype,
                                                   device=DEVICE, requires_grad=requires_grad, layout=inner.layout)

    def __init__(self, inner: torch.Tensor, requires_grad: bool = False) -> None:
        self.inner = inner

    def __repr__(self) -> str:
        return f"SimTensor({self.inner!r})"

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})


def _is_sim_device(value) -> bool:
    return value is not None and torch.device(value).type == TYPE


def _run(func, args, kwargs):
    devices: set[str] = set()
    index_op = func in _INDEX_OPS

    def unwrap(x, *, index: bool = False):
        if isinstance(x, SimTensor):
            devices.add(TYPE)
            return x.inner
        if isinstance(x, torch.Tensor) and x.device.type == "cpu" and x.dim() > 0 and not index:
            devices.add("cpu")
        return x

    if index_op:  # (self, indices, values...): CPU index tensors are fine, as on CUDA
        args = list(args)
        plain = [unwrap(args[0])]
        plain.append([None if i is None else unwrap(i, index=True) for i in args[1]])
        plain += [tree_map(unwrap, a) for a in args[2:]]
        a, k = tuple(plain), tree_map(unwrap, kwargs)
    else:
        a, k = tree_map(unwrap, (args, kwargs))
    to_sim = _is_sim_device(k.get("device"))
    to_host = k.get("device") is not None and torch.device(k["device"]).type == "cpu"
    if to_sim:
        k["device"] = torch.device("cpu")
    if func is torch.ops.aten._to_copy.default:
        if to_sim:
            return SimTensor(func(*a, **k))
        if TYPE in devices and to_host:
            return func(*a, **k)  # to the host
    if func in (torch.ops.aten.copy_.default,):  # copies across devices are fine, as on CUDA
        func(a[0], a[1], *a[2:], **k)
        return args[0]
    if len(devices) > 1:
        cpu = [tuple(x.shape) for x in torch.utils._pytree.tree_leaves((args, kwargs))
               if isinstance(x, torch.Tensor) and not isinstance(x, SimTensor) and x.dim() > 0]
        raise DeviceMismatch(f"{func}: tensors on {DEVICE} and on cpu (shapes {cpu}) in one op")
    out = func(*a, **k)
    if TYPE in devices or to_sim:
        return tree_map(lambda t: SimTensor(t) if isinstance(t, torch.Tensor) else t, out)
    return out


class _GeneratorCheck(TorchFunctionMode):
    """Noise for simdev tensors needs a simdev generator (and the reverse), as on CUDA. Checked at the Python call,
    where the caller's generator object is still the one it made (the dispatcher re-wraps it)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.tolist and isinstance(args[0], SimTensor):  # a device -> host copy, as on CUDA
            return args[0].inner.tolist()
        generator = kwargs.get("generator")
        if isinstance(generator, torch._C.Generator):
            target = kwargs.get("device")
            if target is None:
                target = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
            on_sim = torch.device(target).type == TYPE
            if on_sim != isinstance(generator, SimGenerator):
                raise DeviceMismatch(f"{getattr(func, '__name__', func)}: a generator on {generator.device} draws "
                                     f"for tensors on {DEVICE if on_sim else 'cpu'}")
        return func(*args, **kwargs)


class _Mode(TorchDispatchMode):
    """Routes factory calls with device="simdev" (no tensor argument to dispatch on) through `_run`."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if any(issubclass(t, SimTensor) for t in types):
            return NotImplemented
        return _run(func, args, kwargs or {})


class _Backend:
    """torch.simdev: what FSDP2 and torch.accelerator ask a device module for (streams are no-ops: one "stream")."""

    class Stream:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def wait_stream(self, other) -> None:
            pass

        def wait_event(self, event) -> None:
            pass

        def record_event(self, event=None):
            return _Backend.Event()

        def synchronize(self) -> None:
            pass

    class Event:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def record(self, stream=None) -> None:
            pass

        def wait(self, stream=None) -> None:
            pass

        def synchronize(self) -> None:
            pass

    _stream = None

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def is_initialized() -> bool:
        return True

    @staticmethod
    def _is_in_bad_fork() -> bool:
        return False

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def current_device() -> int:
        return 0

    @staticmethod
    def set_device(index) -> None:
        pass

    @staticmethod
    def synchronize(device=None) -> None:
        pass

    @staticmethod
    def manual_seed_all(seed: int) -> None:
        pass

    # activation checkpointing saves and restores the device RNG around a recompute (no device RNG here: the
    # simulated device draws from CPU generators)
    @staticmethod
    def get_rng_state(device=None) -> torch.Tensor:
        return torch.zeros(0, dtype=torch.uint8, device="cpu")

    @staticmethod
    def set_rng_state(state, device=None) -> None:
        pass

    @staticmethod
    @contextlib.contextmanager
    def device(index) -> Iterator[None]:
        yield

    @classmethod
    def current_stream(cls, device=None):
        if cls._stream is None:
            cls._stream = cls.Stream()
        return cls._stream

    @staticmethod
    @contextlib.contextmanager
    def stream(stream) -> Iterator[None]:
        yield


@contextlib.contextmanager
def simulated_accelerator() -> Iterator[torch.device]:
    """Inside: `torch.accelerator` reports simdev:0, tensors made or moved there are SimTensors, and
    `torch.Generator(device="simdev")` works. Yields the device."""
    previous_generator = torch.Generator
    previous_swap = torch.__future__.get_swap_module_params_on_conversion()
    previous_lift = torch._C._only_lift_cpu_tensors()
    fsdp_storage = _patch_fsdp_storage()
    previous_checkpoint = _patch_checkpoint()
    torch.Generator = PatchedGenerator  # type: ignore[misc]
    torch.__future__.set_swap_module_params_on_conversion(True)  # module.to(simdev) swaps in SimTensor parameters
    torch._C._set_only_lift_cpu_tensors(True)  # torch.tensor(data, device=simdev): made on the CPU, then moved by us
    try:
        with _Mode(), _GeneratorCheck():
            yield DEVICE
    finally:
        torch.Generator = previous_generator  # type: ignore[misc]
        torch.__future__.set_swap_module_params_on_conversion(previous_swap)
        torch._C._set_only_lift_cpu_tensors(previous_lift)
        _unpatch_fsdp_storage(fsdp_storage)
        _unpatch_checkpoint(previous_checkpoint)


def _patch_fsdp_storage() -> dict:
    """FSDP2 frees / reallocates an unsharded parameter's storage directly (`storage.resize_`); a SimTensor's storage
    is its inner CPU tensor's. Returns what to restore."""
    from torch.distributed.fsdp._fully_shard import _fsdp_param, _fsdp_param_group

    saved = {"alloc": _fsdp_param.alloc_storage, "free": _fsdp_param.free_storage}

    def inner(t: torch.Tensor) -> torch.Tensor:
        return t.inner if isinstance(t, SimTensor) else t

    _fsdp_param.alloc_storage = _fsdp_param_group.alloc_storage = lambda t: saved["alloc"](inner(t))
    _fsdp_param.free_storage = lambda t: saved["free"](inner(t))
    return saved


def _unpatch_fsdp_storage(saved: dict) -> None:
    from torch.distributed.fsdp._fully_shard import _fsdp_param, _fsdp_param_group

    _fsdp_param.alloc_storage = _fsdp_param_group.alloc_storage = saved["alloc"]
    _fsdp_param.free_storage = saved["free"]


def _patch_checkpoint():
    """torch.utils.checkpoint's saved-tensor hooks abort the process on wrapper-subclass tensors (a limit of this
    simulation, not of the code under test): inside the simulation the model's checkpointed calls run plainly (the
    same values and devices; only the memory saving is gone)."""
    from common.models import transformer

    saved = transformer.checkpoint
    transformer.checkpoint = lambda fn, *args, use_reentrant=False, **kwargs: fn(*args, **kwargs)
    return saved


def _unpatch_checkpoint(saved) -> None:
    from common.models import transformer

    transformer.checkpoint = saved


def register() -> None:
    """Register the simulated device type (at import; process-wide, it cannot be undone)."""
    from torch.utils.backend_registration import _setup_privateuseone_for_python_backend

    _setup_privateuseone_for_python_backend(TYPE, backend_module=_Backend())
    dist.Backend.default_device_backend_map[TYPE] = "gloo"  # collectives of simdev tensors: gloo on the CPU copies



register()
DEVICE = torch.device(TYPE, 0)
