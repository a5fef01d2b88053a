"""LearnerGroup: `learner.num_ranks` LearnerWorkers in one placement group, with a torch.distributed rendezvous.

Placement (`learner.placement`): STRICT_PACK by default — every rank on one node, where the FSDP collectives run
over NVLink; the job creates this group before any rollout actor, so actors cannot take the node's GPUs first.
PACK allows a multi-node learner (ranks spill to other nodes when one is full; FSDP then crosses the network).
Every call is written where it happens: the same method on every rank (they are collective), rank 0's answer kept.
"""
from __future__ import annotations

from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from common.config import RunConfig
from learner.worker import LearnerWorker

PLACEMENT_TIMEOUT_S = 120


class LearnerGroup:
    def __init__(self, cfg: RunConfig, model_path: str) -> None:
        lcfg = cfg.learner
        bundle = {"CPU": lcfg.cpus_per_rank, **({"GPU": lcfg.gpus_per_rank} if lcfg.gpus_per_rank else {}),
                  **lcfg.resources}
        self.placement = placement_group([bundle] * lcfg.num_ranks, strategy=lcfg.placement, name="learner")
        try:
            ray.get(self.placement.ready(), timeout=PLACEMENT_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            remove_placement_group(self.placement)
            one_node = " on one node (learner.placement=STRICT_PACK; PACK lets ranks span nodes)" if (
                lcfg.placement == "STRICT_PACK") else ""
            raise RuntimeError(f"learner: {lcfg.num_ranks} x {bundle} cannot be placed{one_node} within "
                               f"{PLACEMENT_TIMEOUT_S}s; the cluster has {ray.available_resources()} free (lower "
                               "learner.num_ranks / learner.cpus_per_rank or add nodes)") from None
        worker_cls = ray.remote(LearnerWorker)
        # ActorHandle[LearnerWorker], typed Any: Ray's stubs give a handle's methods no `.remote` / `.options`
        self.workers: list[Any] = []
        try:
            for rank in range(lcfg.num_ranks):
                self.workers.append(worker_cls.options(
                    name=f"learner-rank{rank}", num_cpus=lcfg.cpus_per_rank, num_gpus=lcfg.gpus_per_rank,
                    resources=lcfg.resources, scheduling_strategy=PlacementGroupSchedulingStrategy(
                        self.placement, placement_group_bundle_index=rank),
                ).remote(cfg, model_path, rank=rank, world_size=lcfg.num_ranks))
            master_addr, master_port = ray.get(self.workers[0].address.remote())
            self.store_address = (master_addr, master_port)  # the weight bus rendezvous too
            self.num_params = ray.get([w.setup.remote(master_addr, master_port) for w in self.workers])[0]
        except BaseException:
            # a rank that fails to start (bad model path, OOM) must not leave the named group and ranks behind:
            # the next LearnerGroup in this Ray namespace (a restart, the next job or test) would fail on the names
            self.shutdown()
            raise

    def _all(self, method: str, *args, **kwargs) -> list[Any]:
        refs = [getattr(w, method).remote(*args, **kwargs) for w in self.workers]
        pending = refs
        while pending:  # a dead rank raises here at once; the others would sit in a collective until its timeout
            ready, pending = ray.wait(pending, num_returns=1)
            ray.get(ready)
        return ray.get(refs)

    def train_step(self, batch_refs: list[ray.ObjectRef]) -> dict[str, Any]:
        """One RL step; the refs go to every rank as top-level arguments, so Ray resolves them in the rank's process
        (the tables arrive zero-copy from the object store; the driver never fetches them)."""
        return self._all("train_step", *batch_refs)[0]

    def sft_step(self, prompts: list[str], answers: list[str]) -> dict[str, float]:
        return self._all("sft_step", prompts, answers)[0]

    def export_weights(self) -> tuple[ray.ObjectRef, int]:
        """(ObjectRef of the full state dict, version): gathered once on rank 0, stored once in the object store."""
        refs = [w.export_weights.options(num_returns=2).remote() for w in self.workers]
        ray.get([version for _, version in refs])  # wait for the collective to finish on every rank
        state_ref, version_ref = refs[0]
        return state_ref, ray.get(version_ref)

    # weight bus (pipeline.weight_sync: broadcast): these return refs, the caller waits together with the actors'
    def weight_signature(self) -> str:
        return self._all("weight_signature")[0]

    def join_weight_bus(self, generation: int, world_size: int) -> ray.ObjectRef:
        return self.workers[0].join_weight_bus.remote(generation, world_size)

    def broadcast_weights(self) -> list[ray.ObjectRef]:
        """Every rank gathers; rank 0 sends. Refs of (version, bytes), rank 0's first."""
        return [w.broadcast_weights.remote() for w in self.workers]

    def resend_weights(self) -> ray.ObjectRef:
        return self.workers[0].resend_weights.remote()

    def export_hf(self, path: str) -> str:
        return self._all("export_hf", path)[0]

    def save_checkpoint(self, path: str, extra: dict | None = None) -> str:
        return self._all("save_checkpoint", path, extra)[0]

    def load_checkpoint(self, path: str) -> dict:
        return self._all("load_checkpoint", path)[0]

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w)
        remove_placement_group(self.placement)
