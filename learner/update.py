"""One rank's share of a training step on its micro-batches: rebuild masks, S_theta, loss, backward.

Three implementations of one small protocol (`UpdatePath`) run the step: `SequencePath` here (sequence-level S(x0):
gdsd, gdsd_tlc, espo), `TokenPath` in learner/token_update.py (d1's per-token one-step estimate: diffu_grpo, wd1) and
`SandwichPath` in learner/spg_update.py (SPG's ELBO / EUBO of the same mask pairs).
Both get this rank's micro-batches (learner/micro.py) and keep every metric on the compute device (one host sync
per step, in the worker). No Ray here: the LearnerWorker calls them with its sharded denoiser. Legend: b rows of a
micro-batch, L completion, J inner iterations, M mc draws.
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch

from common.batch import RolloutBatch
from common.config import RunConfig
from common.denoiser import Denoiser
from common.algorithms import SVariant
from common.logprob import denoise_logprob
from common.masking import consistent_masks
from common.models.lora import row_seeds
from learner.losses import LossSpec

# fn(micro-batch index, inner iteration j) -> (loss metrics, teacher gap max |S_theta - S_old| at j = 0, else None);
# all 0-dim tensors on the compute device
MicroFn = Callable[[int, int], tuple[dict[str, torch.Tensor], torch.Tensor | None]]


class UpdatePath(Protocol):
    """How one family of losses turns this rank's rows into gradients. `group_size`: rows are split on group
    boundaries (group-normalised losses), else None. Whether the learner holds a frozen reference copy is
    `AlgorithmSpec.reference_on` (the worker loads it and passes it to `prepare`)."""

    group_size: int | None

    def prepare(self, policy: Denoiser, reference: Denoiser | None, micros: list[RolloutBatch], *, version: int,
                num_rows: int, scale: float) -> MicroFn:
        """Compute what the loss needs once per step (teacher targets) for this rank's `micros` and return fn where
        fn(i, j) runs forward + loss + backward of micro-batch i at iteration j. `num_rows`: global rows (the
        losses' normaliser); `scale`: the backward's factor (FSDP averages over ranks)."""
        ...


def check_on_policy(micros: list[RolloutBatch], version: int) -> None:
    """algorithm.teacher_source=learner: the learner's current weights must be the ones that sampled the rows."""
    stale = sum(int((m.policy_version != version).sum()) for m in micros)
    if stale:
        raise ValueError(f"algorithm.teacher_source=learner needs on-policy batches (synchronous mode), but {stale} "
                         f"rows were sampled by another version than the learner's {version}")


def masks_for(batch: RolloutBatch, j: int, m: int) -> torch.Tensor:
    """bool [b, L]: the (j, m) masks, built for the whole source batch as the actor did, restricted to our rows."""
    if batch.num_rows == 0:  # an empty micro-batch (learner/micro.py): a forward of zero rows
        return torch.zeros(0, batch.completion_ids.shape[1], dtype=torch.bool, device="cpu")
    seed, source_rows = int(batch.mask_seeds[0, j, m]), int(batch.mask_batch_rows[0])
    full = consistent_masks(seed, source_rows, batch.completion_ids.shape[1])  # [source B, L] (CPU: a pure function)
    return full[batch.mask_row]


def sequence_logp(denoiser: Denoiser, batch: RolloutBatch, j: int, *, s_variant: SVariant) -> torch.Tensor:
    """S(x0) float32 [b, M] for inner iteration j (differentiable unless called under no_grad)."""
    device = denoiser.device
    prompt, completion = batch.prompt_ids.to(device), batch.completion_ids.to(device)
    seeds = batch.mask_seeds[0, j].tolist() if batch.num_rows else [0] * batch.mask_seeds.shape[2]  # [M] host ints
    per_draw = [denoise_logprob(denoiser, prompt, completion, masks_for(batch, j, m), s_variant=s_variant,
                                prompt_len=batch.prompt_len, dropout_seeds=row_seeds(seeds[m], batch.mask_row))
                for m in range(batch.mask_seeds.shape[2])]
    return torch.stack(per_draw, dim=1)


class MetricSum:
    """Accumulates loss metrics over micro-batches on the compute device: `loss*` terms add up, everything else is a
    row-weighted mean (sums and row counts; divided once, when reported)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.rows = 0

    def add(self, metrics: dict[str, torch.Tensor], rows: int) -> None:
        self.rows += rows
        for key, value in metrics.items():
            value = value.detach().to(self.device, torch.float64)
            if rows == 0:  # an empty micro-batch: means over no rows are NaN; the key must exist on every rank
                value = torch.zeros_like(value)
            total = value if key.startswith("loss") else value * rows
            self.sums[key] = self.sums[key] + total if key in self.sums else total

    def vector(self, keys: list[str]) -> torch.Tensor:
        """float64 [len(keys) + 1] on the device: the sums in `keys` order, then the row count (0 for a key a rank
        never saw: it had only empty micro-batches)."""
        zero = torch.zeros((), dtype=torch.float64, device=self.device)
        rows = torch.tensor(float(self.rows), dtype=torch.float64, device=self.device)
        return torch.stack([self.sums.get(k, zero) for k in keys] + [rows])


def s_variant_of(spec: LossSpec) -> SVariant:
    """The S(x0) formula of a sequence-level loss (None only for the per-token and SPG kinds, never routed here)."""
    variant = spec.algorithm.s_variant
    if variant is None:
        raise ValueError(f"algorithm {spec.algorithm.name!r} has no sequence-level S(x0) formula")
    return variant


class SequencePath:
    """Sequence-level S(x0) losses. S_old comes from the actor (algorithm.teacher_source=rollout) or is recomputed
    here under no_grad from the sampling weights on exactly the micro-batches the gradient forwards use, so S_old and
    S_theta of the first inner iteration run the same forwards (their gap is exactly 0 on CPU). S_ref always comes
    from the actor (its frozen reference copy)."""

    def __init__(self, spec: LossSpec, cfg: RunConfig) -> None:
        if spec.algorithm.logp_kind not in ("gdsd", "tlc"):  # per-token and SPG losses take other arguments
            raise ValueError(f"SequencePath serves sequence-level S(x0) losses, not {spec.algorithm.logp_kind!r}")
        self.spec, self.cfg = spec, cfg
        self.kwargs = spec.kwargs_from(cfg.algorithm)
        self.group_size: int | None = None

    @torch.no_grad()
    def _teacher(self, policy: Denoiser, micro: RolloutBatch, version: int) -> torch.Tensor:
        """float32 [b, J, M] S_old on the device: the actor's (teacher_source=rollout) or recomputed here from the
        sampling weights on this very micro-batch (teacher_source=learner)."""
        if self.spec.algorithm.old_on(self.cfg.algorithm.teacher_source) == "actor":
            if torch.isnan(micro.old_logp).any():
                raise ValueError("algorithm.teacher_source=rollout but the batch carries no S_old (NaN); the actors "
                                 "must run with the same algorithm config")
            return micro.old_logp.to(policy.device)
        check_on_policy([micro], version)
        return torch.stack([sequence_logp(policy, micro, j, s_variant=s_variant_of(self.spec)).float()
                            for j in range(micro.mask_seeds.shape[1])], dim=1)  # [b, J, M]

    def prepare(self, policy: Denoiser, reference: Denoiser | None, micros: list[RolloutBatch], *, version: int,
                num_rows: int, scale: float) -> MicroFn:
        old = [self._teacher(policy, m, version) for m in micros] if self.spec.algorithm.needs_old else None

        def run(i: int, j: int) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
            metrics, logp = loss_on_micro_batch(policy, micros[i], j, spec=self.spec, loss_kwargs=self.kwargs,
                                                old=None if old is None else old[i][:, j], num_rows=num_rows,
                                                scale=scale)
            gap = None
            if j == 0 and old is not None:  # |S_theta - S_old| before any step: 0 unless actor and learner differ
                diff = (logp - old[i][:, 0]).abs().double().flatten()
                gap = torch.cat([diff, diff.new_zeros(1)]).amax()  # 0 for an empty micro-batch
            return metrics, gap

        return run


def loss_on_micro_batch(denoiser: Denoiser, micro: RolloutBatch, j: int, *, spec: LossSpec, loss_kwargs: dict,
                        old: torch.Tensor | None, num_rows: int, scale: float
                        ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Forward, loss, backward for one micro-batch at inner iteration j (`old` [b, M] S_old on the device, or None).
    Returns (metrics, S_theta detached [b, M])."""
    device = denoiser.device
    logp = sequence_logp(denoiser, micro, j, s_variant=s_variant_of(spec))  # [b, M]
    actor_ref = spec.algorithm.reference_on(loss_kwargs.get("beta", 0.0)) == "actor"  # S_ref in the batch
    ref = micro.ref_logp[:, j].to(device) if actor_ref else None
    loss, metrics = spec.fn(logp, old, ref, micro.advantage.to(device), micro.completion_ids.shape[1],
                            num_rows=num_rows, **loss_kwargs)
    (loss * scale).backward()
    return metrics, logp.detach()
