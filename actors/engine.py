"""PolicyEngine: the rollout side's weights. It holds the policy at version v, a frozen reference copy (only when
the algorithm's sequence-level targets carry a KL term), and the weights received but not yet loaded.

New weights arrive one of two ways (`pipeline.weight_sync`): `load` (a full state dict from the object store, between
two rollouts), or `receive` over the weight bus, which only stages them (it runs on the actor's "weights" thread, so
the learner never waits for a rollout); `load_staged` loads them before the next rollout or evaluation. Either way a
rollout never sees a half-loaded state dict. The engine lives on one device (common/devices.py: the actor resolves
it once): the policy, its reference view and received weights are all there. No Ray here: tests drive it in-process.
"""
from __future__ import annotations

import datetime
import threading
import time

import torch
import torch.distributed as dist

from common.algorithms import get_algorithm
from common.config import RunConfig
from common.denoiser import DTYPES, Denoiser, load_denoiser
from common.models.lora import adapter_names, is_adapter
from common.weight_bus import WeightBus, signature, wire_format


class PolicyEngine:
    def __init__(self, cfg: RunConfig, model_path: str, *, device: torch.device, name: str = "rollout") -> None:
        self.cfg, self.name, self.device = cfg, name, torch.device(device)
        self.policy: Denoiser = load_denoiser(cfg.model, model_path, device=self.device)
        # sequence-level algorithms with beta > 0 get S_ref here, per-token ones on the learner (the registry's rule)
        needs_ref = get_algorithm(cfg.algorithm.name).reference_on(cfg.algorithm.beta) == "actor"
        # with LoRA the reference is the same weights with the adapters off (official S_ref): no second copy
        self.reference: Denoiser | None = None
        if needs_ref:
            self.reference = (self.policy.without_adapters() if cfg.model.lora.enabled
                              else load_denoiser(cfg.model, model_path, device=self.device))
        self.version = 0
        # weight bus state (pipeline.weight_sync: broadcast): the group, and the last received, not yet loaded weights
        self.bus: WeightBus | None = None
        self._bus_store: dist.Store | None = None
        self._bus_address: tuple[str, int] | None = None
        self._staged: tuple[dict[str, torch.Tensor], int] | None = None
        self._staged_cv = threading.Condition()

    def load(self, state_dict: dict[str, torch.Tensor], version: int) -> int:
        """Load the pushed state dict as policy version `version`: every tensor, or with LoRA exactly the adapter
        tensors (the base never changes)."""
        if self.cfg.model.lora.enabled:
            expected = set(adapter_names(self.policy.model))
            if set(state_dict) != expected:
                raise ValueError(f"{self.name}: a LoRA push must carry exactly the {len(expected)} adapter tensors; "
                                 f"missing {sorted(expected - set(state_dict))[:4]}, unexpected "
                                 f"{sorted(set(state_dict) - expected)[:4]}")
            self.policy.model.load_state_dict(state_dict, strict=False)
        else:
            self.policy.model.load_state_dict(state_dict)
        self.version = version
        return version

    # ---- weight bus ---------------------------------------------------------------------------------------------
    def wire_like(self) -> dict[str, torch.Tensor]:
        """Names, shapes and dtypes of what the learner sends (meta tensors: no memory)."""
        state = self.policy.model.state_dict()
        if self.cfg.model.lora.enabled:
            state = {k: v for k, v in state.items() if is_adapter(k)}  # LoRA: only the adapters travel
        meta = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in state.items()}
        return wire_format(meta, DTYPES[self.cfg.model.dtype])

    def join_bus(self, address: tuple[str, int], rank: int, world_size: int, generation: int,
                 sender_signature: str) -> int:
        """Join generation `generation` of the weight group as bus rank `rank` (a rendezvous with every member)."""
        mine = signature(self.wire_like())
        if mine != sender_signature:
            raise RuntimeError(f"{self.name}: the learner sends weights with signature {sender_signature}, this "
                               f"actor's model expects {mine} (model.* differs?)")
        pcfg = self.cfg.pipeline
        host, port = address
        if self._bus_store is None or self._bus_address != (host, port):  # a rebuilt learner has a new store
            self._bus_store = dist.TCPStore(host, port, is_master=False,
                                            timeout=datetime.timedelta(seconds=pcfg.weight_sync_timeout_s))
            self._bus_address = (host, port)
        if self.bus is not None:
            self.bus.close()
        self.bus = WeightBus.join(self._bus_store, pcfg, rank=rank, world_size=world_size, generation=generation,
                                  device=self.policy.device)
        return generation

    def receive(self) -> int:
        """Receive the next version from the bus and stage it (the caller's next rollout loads it). Returns it."""
        if self.bus is None:  # a restarted instance: the driver rebuilds the group when this fails
            raise RuntimeError(f"{self.name} has not joined the weight bus (restarted?)")
        state, version = self.bus.receive(self.wire_like())
        with self._staged_cv:  # the latest push wins (lower than before only after the learner restarted)
            self._staged = (state, version)
            self._staged_cv.notify_all()
        return version

    def load_staged(self, min_version: int) -> int:
        """Before sampling: load staged weights; on the bus, first wait for version `min_version` (pushed before the
        caller's request was made, possibly still in flight on the weights thread). Returns the version held."""
        timeout = self.cfg.pipeline.weight_sync_timeout_s
        deadline = time.monotonic() + timeout
        with self._staged_cv:
            while self.bus is not None and self.version < min_version and (
                    self._staged is None or self._staged[1] < min_version):
                if not self._staged_cv.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise RuntimeError(f"{self.name}: weights version {min_version} did not arrive within "
                                       f"pipeline.weight_sync_timeout_s={timeout}")
            staged, self._staged = self._staged, None
        if staged is not None:
            self.load(*staged)
        return self.version
