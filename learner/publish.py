"""Weights out of the learner: the push state (the adapters with LoRA, else the full state), gathered over the ranks,
to the object store (`export_weights`) or over the weight bus from rank 0 (pipeline.weight_sync: broadcast,
common/weight_bus.py), and the signature the actors check theirs against. A mixin of LearnerWorker
(learner/worker.py): it reads the worker's denoiser, config, rank, version and bus."""
from __future__ import annotations

from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.tensor import DTensor

from common.denoiser import DTYPES
from common.models.lora import is_adapter
from common.weight_bus import WeightBus, signature, wire_format
from learner.state import WorkerState


class WeightPublisher(WorkerState):
    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The full HF state dict, gathered once onto rank 0's CPU (collective: every rank must call it)."""
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state: dict[str, Any] = get_model_state_dict(self.denoiser.net, options=options)  # [str, Tensor]
        return {k.removeprefix("model."): v for k, v in state.items()}

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The LoRA adapter tensors only, gathered onto every rank's CPU (collective; the frozen base is never
        gathered: a push is the adapters, docs/lora.md)."""
        out = {}
        for name, p in self.denoiser.net.named_parameters():
            if is_adapter(name):
                full = p.full_tensor() if isinstance(p, DTensor) else p
                out[name] = full.detach().cpu()
        return out

    def push_state_dict(self) -> dict[str, torch.Tensor]:
        """What a weight push carries: the adapters with LoRA, else the full state (collective)."""
        return self.adapter_state_dict() if self.cfg.model.lora.enabled else self.full_state_dict()

    def export_weights(self) -> tuple[dict[str, torch.Tensor] | None, int]:
        """(state dict on rank 0 / None elsewhere, version). The caller forwards rank 0's ObjectRef to the actors."""
        state = self.push_state_dict()
        return (wire_format(state, DTYPES[self.cfg.model.dtype]) if self.rank == 0 else None), self.version

    # ---- weights out over the weight bus (pipeline.weight_sync: broadcast) ---------------------------------------
    def weight_signature(self) -> str:
        """Signature of what rank 0 sends, from names, global shapes and dtypes (meta tensors: nothing is gathered);
        the actors check theirs against it."""
        state = self.denoiser.net.state_dict()  # sharded DTensors report their global shape
        if self.cfg.model.lora.enabled:
            state = {k: v for k, v in state.items() if is_adapter(k)}
        meta = {k.removeprefix("model."): torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in state.items()}
        return signature(wire_format(meta, DTYPES[self.cfg.model.dtype]))

    def join_weight_bus(self, generation: int, world_size: int) -> int:
        """Rank 0 only: join generation `generation` of the weight group as its sender (a rendezvous)."""
        if self.bus is not None:
            self.bus.close()
        self.bus = WeightBus.join(self.store, self.cfg.pipeline, rank=0, world_size=world_size,
                                  generation=generation, device=self.denoiser.device)
        return generation

    def broadcast_weights(self) -> tuple[int, int]:
        """Gather the full state (collective over the learner ranks), then rank 0 broadcasts it bucket by bucket.
        Returns (version, bytes sent by this rank)."""
        state = self.export_weights()[0]
        if self.rank != 0:
            return self.version, 0
        assert state is not None  # rank 0's export holds the state
        self._sent = state  # kept: a group rebuilt after an actor died gets the same version again
        return self.version, self._joined_bus().send(state, self.version)

    def resend_weights(self) -> tuple[int, int]:
        """Rank 0 only: broadcast the last sent state again (to a group rebuilt after a death)."""
        if self._sent is None:  # exporting here would be a collective that the other ranks do not join
            raise RuntimeError("resend_weights: nothing was broadcast yet")
        return self.version, self._joined_bus().send(self._sent, self.version)

    def _joined_bus(self) -> WeightBus:
        if self.bus is None:
            raise RuntimeError("weight bus: rank 0 has not joined one (join_weight_bus first)")
        return self.bus
