"""Loss functions of the learner and the registry that maps ``algorithm.name`` to them.

Pure tensor functions: no Ray, no model, no device assumptions (CPU and GPU tensors alike). Every loss returns
``(loss, metrics)`` with ``metrics`` a dict of 0-dim *detached* tensors (no host sync per call; ``.item()`` them once
when logging). Every loss takes ``num_rows``: a learner rank holding a shard of the rows passes the global row count,
so the ranks' losses (and gradients) sum to the full-batch ones.

Which log-probabilities each loss consumes is its registry entry's ``AlgorithmSpec.logp_kind``:
  * ``"gdsd"``  — S from ``common/logprob.py::denoise_logprob(..., s_variant="gdsd")``, ``[B, M]``
  * ``"tlc"``   — the 1/t-weighted ELBO, ``denoise_logprob(..., s_variant="tlc")``, ``[B, M]``
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

from common.algorithms import ALGORITHMS, AlgorithmSpec, get_algorithm
from learner.losses.elbo_baselines import espo_loss, spg_elbo_draws, spg_eubo, spg_loss
from learner.losses.gdsd import gdsd_loss
from learner.losses.token_baselines import diffu_grpo_loss, diffu_grpo_prompt_mask, wd1_loss

LossFn = Callable[..., tuple[Tensor, dict[str, Tensor]]]


@dataclass(frozen=True)
class LossSpec:
    """How the learner runs one algorithm: its registry entry (common/algorithms.py) with the loss function bound.
    Only the loss function is added here; everything else (name, logp_kind, needs_old, reference_on, ...) is read
    from ``algorithm``.

    Attributes:
        algorithm: the registry entry.
        fn: the loss function (``algorithm.loss`` resolved).
    """

    algorithm: AlgorithmSpec
    fn: LossFn

    def kwargs_from(self, algorithm_config: Any) -> dict[str, Any]:
        """The keyword arguments of ``fn`` (``algorithm.loss_kwargs``, each passed under its config field's name) read
        from an ``AlgorithmConfig`` (or any object with those attributes)."""
        return {k: getattr(algorithm_config, k) for k in self.algorithm.loss_kwargs}


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
    "LOSSES", "LossSpec", "diffu_grpo_loss", "diffu_grpo_prompt_mask", "espo_loss", "gdsd_loss", "get_loss",
    "spg_elbo_draws", "spg_eubo", "spg_loss", "wd1_loss",
]
