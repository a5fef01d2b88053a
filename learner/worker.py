"""LearnerWorker: one rank (a Ray actor in a job; a plain object in benchmarks/gpu_check.py, which has no Ray),
holding an FSDP2 shard of the policy, its optimizer and LR schedule.

The worker's roles, one module each: setup and the RL step (here), the metric reduction (learner/reduce.py), the SFT
warm start's step (learner/sft.py, `SFTStep`), weights out to the actors (learner/publish.py, `WeightPublisher`),
export and checkpoints (learner/checkpoint.py, `Checkpointing`).

A step: the RolloutBatch tables arrive as the call's arguments (Ray resolves the ObjectRefs the driver routed, zero-
copy), this rank takes its micro-batches (learner/micro.py: the actors' row chunks, pooled across their batches, the
same count on every rank), and for each inner iteration j < mu recomputes S_theta with the actor's mask seeds, applies
the loss, accumulates gradients, clips, AdamW. The version is bumped once per step. The loss family's own work
(teacher targets, forward + loss + backward) is an `UpdatePath` (learner/update.py): the sequence-level `SequencePath`,
the per-token `TokenPath` or SPG's `SandwichPath` (learner/spg_update.py). Everything lives on the rank's device
(common/devices.py); metrics stay there until one all-reduce and one host copy per step.
"""
from __future__ import annotations

import socket
import time
from typing import Any, Callable

import pyarrow as pa
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

from common.batch import RolloutBatch
from common.config import ConfigError, RunConfig
from common.denoiser import DTYPES, load_denoiser
from common.devices import group_backend, make_generator, service_device
from common.weight_bus import WeightBus
from learner.checkpoint import Checkpointing
from learner.fsdp import shard_model
from learner.losses import LossSpec, get_loss
from learner.micro import drop_zero_advantage_groups, plan_micro_batches
from learner.optim import build_optimizer, clip_grad_norm
from learner.publish import WeightPublisher
from learner.reduce import reduce_step
from learner.sft import SFTStep
from learner.spg_update import SandwichPath
from learner.token_update import TokenPath
from learner.update import MetricSum, SequencePath, UpdatePath


class LearnerWorker(WeightPublisher, Checkpointing, SFTStep):
    """Use as `ray.remote(LearnerWorker)`; LearnerGroup creates `learner.num_ranks` of them and sets up rendezvous."""

    def __init__(self, cfg: RunConfig, model_path: str, *, rank: int, world_size: int) -> None:
        self.cfg, self.model_path, self.rank, self.world_size = cfg, model_path, rank, world_size
        self.spec = get_loss(cfg.algorithm.name)
        if not self.spec.algorithm.trainable:  # load_config rejects it already; a hand-built config gets here
            raise ConfigError(f"algorithm.name={cfg.algorithm.name}: the learner does not implement it")
        paths: dict[str, Callable[[LossSpec, RunConfig], UpdatePath]] = {"token_onestep": TokenPath,
                                                                          "tlc+eubo": SandwichPath}
        self.path: UpdatePath = paths.get(self.spec.algorithm.logp_kind, SequencePath)(self.spec, cfg)
        # wd1 normalises within prompt groups: its rows are split over ranks / micro-batches on group boundaries
        self.group_size = self.path.group_size
        self.reference = None
        self.version = 0
        self.optimizer_steps = 0
        self.generator = make_generator("cpu", cfg.seed * 7919 + rank)  # SFT mask draws (CPU, as the masks)
        self.bus: WeightBus | None = None  # rank 0, pipeline.weight_sync: broadcast
        self._sent: dict[str, torch.Tensor] | None = None  # the last state sent on the bus, kept for a resend

    def address(self, host: str | None = None) -> tuple[str, int]:
        """Rendezvous address (called on rank 0): a socket bound to `host` (default: this Ray node's IP), kept open
        for the TCPStore, so the store listens there only (TCPStore's own bind is on every interface)."""
        if host is None:
            import ray  # only here: the rest of the worker runs without Ray (benchmarks/gpu_check.py)

            host = ray.util.get_node_ip_address()
        self._listen = socket.socket()
        self._listen.bind((host, 0))
        self._listen.listen()
        return self._listen.getsockname()[:2]

    def setup(self, master_addr: str, master_port: int) -> int:
        """Join the process group, load and shard the policy, build the optimizer. Returns the parameter count."""
        self.device = device = service_device(self.cfg.learner.gpus_per_rank, what="learner.gpus_per_rank")
        listen_fd = self._listen.fileno() if self.rank == 0 else None
        # rank 0's store also hosts the weight bus rendezvous (the actors connect to it as clients)
        self.store = store = dist.TCPStore(master_addr, master_port, self.world_size, self.rank == 0,
                                           master_listen_fd=listen_fd, wait_for_workers=False)
        # a backend per device type ("cpu:gloo,cuda:nccl" on a GPU): no CPU tensor ever reaches an NCCL-only group
        dist.init_process_group(group_backend(device), store=store, rank=self.rank, world_size=self.world_size)
        mesh = init_device_mesh(device.type, (self.world_size,))
        torch.set_num_threads(self.cfg.learner.torch_threads)
        compute = DTYPES[self.cfg.model.dtype]
        # what the optimizer updates is float32 (master weights; FSDP casts them to the compute dtype, what the
        # actors sample with); a frozen LoRA base stays in the compute dtype (the actors' exact weights, half the
        # memory and all-gather bytes of float32: docs/design.md, "Learner memory")
        lora = self.cfg.model.lora.enabled
        self.denoiser = load_denoiser(self.cfg.model, self.model_path, device=device,
                                      dtype=compute if lora else torch.float32, adapter_dtype=torch.float32)
        self.denoiser.model.train()
        shard_model(self.denoiser.net, mesh, compute_dtype=compute,
                    activation_checkpointing=self.cfg.learner.activation_checkpointing)
        self.params = [p for p in self.denoiser.net.parameters() if p.requires_grad]
        if self.spec.algorithm.reference_on(self.cfg.algorithm.beta) == "learner":
            # per-token reference log-probs are not in the RolloutBatch: a frozen copy of the initial weights,
            # sharded like the policy; held in the compute dtype (what FSDP would cast the master weights to)
            if lora:  # the same sharded weights with the adapters off: no second copy
                self.reference = self.denoiser.without_adapters()
            else:
                self.reference = load_denoiser(self.cfg.model, self.model_path, device=device)
                self.reference.model.eval().requires_grad_(False)
                shard_model(self.reference.net, mesh, compute_dtype=compute)
        self.optimizer, self.scheduler = build_optimizer(self.params, self.cfg.learner)
        return sum(p.numel() for p in self.params)

    # ---- RL step ---------------------------------------------------------------------------------------------
    def train_step(self, *tables: pa.Table) -> dict[str, Any]:
        """One step on the step's RolloutBatch tables (every rank gets them all and takes its micro-batches)."""
        start = time.perf_counter()
        alg, lcfg = self.cfg.algorithm, self.cfg.learner
        batches = [RolloutBatch.from_arrow(t) for t in tables]  # zero-copy views of the object store's buffers
        dropped_rows = dropped_batches = 0
        if lcfg.filter_zero_advantage:
            kept = [drop_zero_advantage_groups(b) for b in batches]
            batches, dropped_rows = [b for b, _ in kept if b.num_rows], sum(n for _, n in kept)
            dropped_batches = len(kept) - len(batches)
        global_rows = sum(b.num_rows for b in batches)
        micros = plan_micro_batches(batches, rows=lcfg.micro_batch_rows, rank=self.rank, world_size=self.world_size)
        staleness = [self.version - int(b.policy_version.min()) for b in batches]
        # the loss is normalised by the global row count and FSDP averages gradients over ranks: x world size
        micro_fn = self.path.prepare(self.denoiser, self.reference, micros, version=self.version,
                                     num_rows=global_rows, scale=float(self.world_size))

        per_iter, keys = [], None
        gap_max = torch.zeros((), dtype=torch.float64, device=self.device)
        for j in range(alg.mu if micros else 0):
            acc = MetricSum(self.device)
            for i, micro in enumerate(micros):
                metrics, gap = micro_fn(i, j)
                acc.add(metrics, micro.num_rows)
                if gap is not None:
                    gap_max = torch.maximum(gap_max, gap)
            before = [p.detach().clone() for p in self.params] if lcfg.log_param_delta else None
            grad_norm = self._optimizer_step()
            # ||theta_j+1 - theta_j|| of this inner iteration (issue 16: does Adam move through clamped iterations?)
            moved = (torch.nn.utils.get_total_norm([p.detach() - b for p, b in zip(self.params, before)])
                     if before is not None else torch.zeros((), device=self.device))
            moved = moved.full_tensor() if isinstance(moved, DTensor) else moved
            keys = keys or sorted(acc.sums)
            per_iter.append(torch.cat([acc.vector(keys), grad_norm.reshape(1).to(self.device, torch.float64),
                                       moved.reshape(1).to(self.device, torch.float64)]))
        self.version += 1
        return self._reduce(per_iter, keys or [], gap_max, global_rows=global_rows, dropped_rows=dropped_rows,
                            dropped_batches=dropped_batches,
                            micro_batches=len(micros), staleness=staleness, seconds=time.perf_counter() - start)

    def _optimizer_step(self) -> torch.Tensor:
        """Clip (learner.grad_clip), AdamW, LR schedule, zero the gradients. Returns the pre-clip grad norm."""
        grad_norm = clip_grad_norm(self.params, self.cfg.learner.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer_steps += 1
        return grad_norm

    def _reduce(self, per_iter: list[torch.Tensor], keys: list[str], gap_max: torch.Tensor, **extra) -> dict:
        head = {"version": self.version, "optimizer_steps": self.optimizer_steps,
                "lr": self.scheduler.get_last_lr()[0], **extra}
        return reduce_step(per_iter, keys, gap_max, head, world_size=self.world_size, rank=self.rank,
                           log_param_delta=self.cfg.learner.log_param_delta, needs_old=self.spec.algorithm.needs_old,
                           eps=self.cfg.algorithm.eps)
