"""Loss functions of the learner and the registry that maps ``algorithm.name`` to them.

Pure tensor functions: no Ray, no model, no device assumptions (CPU and GPU tensors alike). Every loss returns
``(loss, metrics)`` with ``metrics`` a dict of 0-dim *detached* tensors (no host sync per call; ``.item()`` them once
when logging). Every loss takes ``num_rows``: a learner rank holding a shard of the rows passes the global row count,
so the ranks' losses (and gradients) sum to the full-batch ones.

Which log-probabilities each loss consumes is ``LossSpec.logp_variant``:
  * ``"gdsd"``  — S from ``common/logprob.py::denoise_logprob(..., variant="gdsd")``, ``[B, M]``
  * ``"tlc"``   — the 1/t-weighted ELBO, ``denoise_logprob(..., variant="tlc")``, ``[B, M]``
  * ``"token_onestep"`` — d1's one-step per-token log-probs ``[B, L]`` (completion fully masked, prompt tokens masked
    by ``diffu_grpo_prompt_mask``)
  * ``"tlc+eubo"`` — SPG: per-draw ELBOs ``[B, D]`` and a per-row EUBO ``[B]`` (``spg_elbo_draws`` / ``spg_eubo``
    of the per-token log-probs of the D = 2M masked forwards of the ELBO's mask pairs; learner/spg_update.py)
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from torch import Tensor

from common.algorithms import ALGORITHMS, AlgorithmSpec, LogpKind, get_algorithm
from learner.losses.elbo_baselines import (
    ESPO_DEFAULTS,
    SPG_DEFAULTS,
    espo_loss,
    spg_elbo_draws,
    spg_eubo,
    spg_loss,
)
from learner.losses.gdsd import GDSD_DEFAULTS, gdsd_loss
from learner.losses.token_baselines import (
    DIFFU_GRPO_DEFAULTS,
    WD1_DEFAULTS,
    diffu_grpo_loss,
    diffu_grpo_prompt_mask,
    wd1_loss,
)

LogpVariant = LogpKind
LossFn = Callable[..., tuple[Tensor, dict[str, Tensor]]]


@dataclass(frozen=True)
class LossSpec:
    """How the learner runs one algorithm: its registry entry (common/algorithms.py) with the loss function bound.

    Attributes:
        algorithm: the registry entry.
        fn: the loss function (``algorithm.loss`` resolved).
    """

    algorithm: AlgorithmSpec
    fn: LossFn

    @property
    def name(self) -> str:
        return self.algorithm.name

    @property
    def logp_variant(self) -> LogpVariant:
        """Which log-probabilities ``fn`` consumes (see the module docstring)."""
        return self.algorithm.logp

    @property
    def needs_ref(self) -> bool:
        return self.algorithm.needs_ref

    @property
    def needs_old(self) -> bool:
        return self.algorithm.needs_old

    @property
    def paper(self) -> str:
        return self.algorithm.paper

    @property
    def config_fields(self) -> tuple[tuple[str, str], ...]:
        """``(fn keyword, AlgorithmConfig field)`` pairs the learner passes from the config."""
        return tuple((k, k) for k in self.algorithm.loss_kwargs)

    def kwargs_from(self, algorithm_config: Any) -> dict[str, Any]:
        """The keyword arguments of ``fn`` read from an ``AlgorithmConfig`` (or any object with those attributes)."""
        return {kw: getattr(algorithm_config, field) for kw, field in self.config_fields}


def _resolve(target: str) -> LossFn:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


# derived from the algorithm registry: no algorithm name is listed here
LOSSES: dict[str, LossSpec] = {name: LossSpec(spec, _resolve(spec.loss)) for name, spec in ALGORITHMS.items()}


def get_loss(name: str) -> LossSpec:
    """The registry entry for ``algorithm.name``; a ValueError naming the key and the choices otherwise."""
    get_algorithm(name)  # the error naming the key and the choices
    return LOSSES[name]


__all__ = [
    "DIFFU_GRPO_DEFAULTS", "ESPO_DEFAULTS", "GDSD_DEFAULTS", "LOSSES", "LossSpec", "SPG_DEFAULTS", "WD1_DEFAULTS",
    "diffu_grpo_loss", "diffu_grpo_prompt_mask", "espo_loss", "gdsd_loss", "get_loss", "spg_elbo_draws", "spg_eubo",
    "spg_loss", "wd1_loss",
]
