"""The algorithm registry: one `AlgorithmSpec` per `algorithm.name`, the only place algorithm names are listed.

Everything else derives from it: config validation (`common/validation.py`), the S(x0) variant the actors compute
teacher targets with (`s_variant`), who computes S_old and who holds the frozen reference policy (`old_on`,
`reference_on`: the one rule each), the learner's loss registry (`learner/losses/__init__.py` resolves `loss`
lazily), and the method list of `benchmarks/compare.py`. This module imports no torch (validating a YAML file must
not), in the spirit of torchtitan's `protocols/train_spec.py`. Adding an algorithm = one entry here + its loss
function in learner/losses.

Fields an algorithm reads are listed in `reads`; setting any other `algorithm.*` key explicitly is a config error.
`official` holds the official values of the method's paper / released code (docs/design.md, "Algorithms").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Two names, two concepts (docs/design.md, "The algorithm registry"):
#   SVariant: which S(x0) formula common/logprob.py computes (GDSD's ½-sum or TLC's 1/t-weighted ELBO);
#   LogpKind: what an algorithm's loss consumes (an S(x0) variant, d1's per-token one-step estimate, or SPG's
#   ELBO + EUBO); it decides the learner's update path and, through `s_variant`, the actors' teacher targets.
SVariant = Literal["gdsd", "tlc"]
LogpKind = Literal["gdsd", "tlc", "token_onestep", "tlc+eubo"]
TeacherSource = Literal["rollout", "learner"]
Holder = Literal["actor", "learner"]


@dataclass(frozen=True)
class AlgorithmSpec:
    """How one algorithm runs, end to end.

    Attributes:
        name: the config's ``algorithm.name``.
        loss: ``"module:function"`` of the loss in learner/losses (resolved by the learner, so no torch here).
        logp_kind: what the loss consumes: sequence-level S(x0) (``gdsd`` / ``tlc``), d1's one-step per-token
            estimate (``token_onestep``) or SPG's ELBO + EUBO from per-token log-probs of the same mask draws
            (``tlc+eubo``; S_old / S_ref are never needed).
        needs_old: the loss uses the sampling policy's log-probs (S_old); SPG and wd1 are ratio-free.
        needs_ref: the loss uses the reference policy's log-probs when ``algorithm.beta > 0``.
        teacher_sources: where S_old may be computed (``algorithm.teacher_source``); per-token targets are not in
            the RolloutBatch, so they are always recomputed on the learner.
        group_rows: the loss normalises within prompt groups (wd1): rows are split on group boundaries.
        trainable: the learner implements it (an untrainable entry is rejected at load time).
        loss_kwargs: ``algorithm.*`` fields passed to the loss function under the same keyword.
        reads: every ``algorithm.*`` field this algorithm reads (loss keywords included).
        official: the method's official settings (compared runs use them; see benchmarks/compare.py).
        official_by_task: per ``task.name``, official values that differ from ``official`` on that task.
        paper: the reference the loss implements.
    """

    name: str
    loss: str
    logp_kind: LogpKind
    needs_old: bool
    needs_ref: bool
    teacher_sources: tuple[TeacherSource, ...]
    loss_kwargs: tuple[str, ...]
    reads: tuple[str, ...]
    official: dict[str, float | int | str] = field(default_factory=dict)
    official_by_task: dict[str, dict[str, float | int | str]] = field(default_factory=dict)
    group_rows: bool = False
    trainable: bool = True
    paper: str = ""

    @property
    def s_variant(self) -> SVariant | None:
        """The S(x0) variant of the sequence-level teacher targets; None for per-token estimates."""
        return {"gdsd": "gdsd", "tlc": "tlc", "tlc+eubo": "tlc"}.get(self.logp_kind)  # type: ignore[return-value]

    @property
    def sequence_level(self) -> bool:
        return self.s_variant is not None

    def old_on(self, teacher_source: TeacherSource) -> Holder | None:
        """Who computes S_old (the sampling policy's log-probs): the actors for sequence-level S(x0) with
        ``algorithm.teacher_source=rollout`` (it travels in the RolloutBatch as ``old_logp``), else the learner
        (per-token targets are not in the RolloutBatch); None for the ratio-free losses (SPG, wd1)."""
        if not self.needs_old:
            return None
        return "actor" if self.sequence_level and teacher_source == "rollout" else "learner"

    def reference_on(self, beta: float) -> Holder | None:
        """Who holds the frozen reference policy and computes S_ref: the actors for sequence-level S(x0) (it travels
        in the RolloutBatch as ``ref_logp``), the learner for per-token estimates (not in the RolloutBatch); None
        when the loss has no KL term or ``algorithm.beta == 0``. The one rule: the actors' engine, the learner's
        update paths and deploy/plan.py all ask here."""
        if not (self.needs_ref and beta > 0):
            return None
        return "actor" if self.sequence_level else "learner"

    def overrides(self, task: str | None = None) -> list[str]:
        """`algorithm.key=value` overrides selecting this method at its official settings (on `task`, if given)."""
        values = {**self.official, **self.official_by_task.get(task or "", {})}
        return [f"algorithm.name={self.name}", *(f"algorithm.{k}={v}" for k, v in values.items())]


# fields every trainable algorithm reads: the name, inner iterations
_COMMON = ("name", "mu")
_SEQUENCE = (*_COMMON, "num_mc", "teacher_source")  # sequence-level S(x0): mc mask draws, where S_old comes from
_TOKEN = (*_COMMON, "p_mask_prompt")  # d1's one-step estimate masks prompt tokens

ALGORITHMS: dict[str, AlgorithmSpec] = {spec.name: spec for spec in (
    AlgorithmSpec(
        "gdsd", "learner.losses.gdsd:gdsd_loss", "gdsd", needs_old=True, needs_ref=True,
        teacher_sources=("rollout", "learner"), loss_kwargs=("psi", "beta", "eps", "eps_scope"),
        reads=(*_SEQUENCE, "psi", "beta", "eps", "eps_scope"),
        official={"beta": 1e-3, "eps": 4e-4, "mu": 8, "num_mc": 1, "psi": 1.0},
        paper="GDSD, arXiv 2605.29398 (docs/design.md, Algorithm); GSM8K/MATH use psi=10"),
    AlgorithmSpec(
        "gdsd_tlc", "learner.losses.gdsd:gdsd_loss", "tlc", needs_old=True, needs_ref=True,
        teacher_sources=("rollout", "learner"), loss_kwargs=("psi", "beta", "eps", "eps_scope"),
        reads=(*_SEQUENCE, "psi", "beta", "eps", "eps_scope"),
        official={"beta": 1e-3, "eps": 4e-4, "mu": 8, "num_mc": 1, "psi": 1.0},
        paper="GDSD-TLC: the GDSD loss on the 1/t-weighted ELBO (docs/design.md, Algorithm)"),
    AlgorithmSpec(
        "espo", "learner.losses.elbo_baselines:espo_loss", "tlc", needs_old=True, needs_ref=True,
        teacher_sources=("rollout", "learner"), loss_kwargs=("beta", "clip_eps"),
        reads=(*_SEQUENCE, "beta", "clip_eps"),
        official={"beta": 0.01, "clip_eps": 0.2, "mu": 2, "num_mc": 1},
        paper="ESPO, Ou et al., arXiv:2512.03759 (github.com/ML-GSAI/ESPO recipes/train.yaml)"),
    AlgorithmSpec(
        "diffu_grpo", "learner.losses.token_baselines:diffu_grpo_loss", "token_onestep", needs_old=True,
        needs_ref=True, teacher_sources=("learner",), loss_kwargs=("beta", "clip_eps"),
        reads=(*_TOKEN, "teacher_source", "beta", "clip_eps"),
        official={"beta": 0.04, "clip_eps": 0.2, "p_mask_prompt": 0.15, "teacher_source": "learner"},
        paper="d1 diffu-GRPO, Zhao et al., arXiv:2504.12216"),
    AlgorithmSpec(
        "spg", "learner.losses.elbo_baselines:spg_loss", "tlc+eubo", needs_old=False, needs_ref=False,
        teacher_sources=("rollout", "learner"), loss_kwargs=("mix_weight",),
        reads=(*_COMMON, "num_mc", "eubo_beta", "mix_weight"),
        official={"eubo_beta": 1.5, "mix_weight": 0.5, "mu": 4, "num_mc": 1},
        official_by_task={"sudoku": {"eubo_beta": 1.0}},
        paper="SPG w/ Mixture, Wang et al., arXiv:2510.09541 (github.com/facebookresearch/SPG, spg/spg_trainer.py, "
              "slurm_scripts/spg_mix); on-policy, no ratio, no KL"),
    AlgorithmSpec(
        "wd1", "learner.losses.token_baselines:wd1_loss", "token_onestep", needs_old=False, needs_ref=False,
        teacher_sources=("rollout", "learner"), loss_kwargs=("psi",), reads=(*_TOKEN, "psi"),
        official={"psi": 1.0}, group_rows=True,
        paper="wd1, Tang et al., arXiv:2507.08838 (github.com/xiaohangt/wd1); ratio-free, softmax(+-psi A) weights"),
)}

ALGORITHM_NAMES: tuple[str, ...] = tuple(ALGORITHMS)
TRAINABLE: tuple[str, ...] = tuple(n for n, s in ALGORITHMS.items() if s.trainable)


def get_algorithm(name: str) -> AlgorithmSpec:
    """The spec of ``algorithm.name``; a ValueError naming the key and the choices otherwise."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"algorithm.name: unknown algorithm {name!r}; choose one of "
                         f"[{', '.join(ALGORITHMS)}]") from None
