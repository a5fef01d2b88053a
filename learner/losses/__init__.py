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
  * ``"tlc+eubo"`` — SPG: the ``tlc`` ELBO ``[B, M]`` plus a per-row EUBO ``[B]`` (estimator not part of this module)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

from torch import Tensor

from learner.losses.elbo_baselines import ESPO_DEFAULTS, SPG_DEFAULTS, espo_loss, spg_loss
from learner.losses.gdsd import GDSD_DEFAULTS, gdsd_loss
from learner.losses.token_baselines import (
    DIFFU_GRPO_DEFAULTS,
    WD1_DEFAULTS,
    diffu_grpo_loss,
    diffu_grpo_prompt_mask,
    wd1_loss,
)

LogpVariant = Literal["gdsd", "tlc", "token_onestep", "tlc+eubo"]
LossFn = Callable[..., tuple[Tensor, dict[str, Tensor]]]


@dataclass(frozen=True)
class LossSpec:
    """How the learner runs one algorithm.

    Attributes:
        name: the config's ``algorithm.name``.
        fn: the loss function.
        logp_variant: which log-probabilities ``fn`` consumes (see the module docstring).
        needs_ref: whether ``fn`` uses reference-policy log-probs (only when its β > 0; SPG and wd1 never do).
        needs_old: whether ``fn`` uses the sampling policy's log-probs (SPG and wd1 are ratio-free).
        config_fields: ``(fn keyword, AlgorithmConfig field)`` pairs the learner passes from the config.
        paper: the reference the loss implements.
    """

    name: str
    fn: LossFn
    logp_variant: LogpVariant
    needs_ref: bool
    needs_old: bool
    config_fields: tuple[tuple[str, str], ...]
    paper: str

    def kwargs_from(self, algorithm_config: Any) -> dict[str, Any]:
        """The keyword arguments of ``fn`` read from an ``AlgorithmConfig`` (or any object with those attributes)."""
        return {kw: getattr(algorithm_config, field) for kw, field in self.config_fields}


_GDSD_FIELDS = (("psi", "psi"), ("beta", "beta"), ("eps", "eps"))
_CLIP_FIELDS = (("beta", "beta"), ("clip_eps", "clip_eps"))

LOSSES: dict[str, LossSpec] = {
    "gdsd": LossSpec("gdsd", gdsd_loss, "gdsd", True, True, _GDSD_FIELDS,
                     "GDSD (DESIGN.md, Algorithm); official defaults β=1e-3, ε=4e-4, μ=8, num_mc=1, ψ=1"),
    "gdsd_tlc": LossSpec("gdsd_tlc", gdsd_loss, "tlc", True, True, _GDSD_FIELDS,
                         "GDSD-TLC: GDSD loss on the 1/t-weighted ELBO (DESIGN.md, Algorithm)"),
    "espo": LossSpec("espo", espo_loss, "tlc", True, True, _CLIP_FIELDS,
                     "ESPO, Ou et al., arXiv:2512.03759; official β=0.01, ε=0.2, μ=2"),
    "diffu_grpo": LossSpec("diffu_grpo", diffu_grpo_loss, "token_onestep", True, True, _CLIP_FIELDS,
                           "d1 diffu-GRPO, Zhao et al., arXiv:2504.12216; official β=0.04, ε=0.2, p_mask=0.15"),
    "spg": LossSpec("spg", spg_loss, "tlc+eubo", False, False, (),
                    "SPG, Wang et al., arXiv:2510.09541; official mixture ω=0.5, no KL"),
    "wd1": LossSpec("wd1", wd1_loss, "token_onestep", False, False, (),
                    "wd1, Tang et al., arXiv:2507.08838; ratio-free, softmax(±A) weights"),
}


def get_loss(name: str) -> LossSpec:
    """The registry entry for ``algorithm.name``; a ValueError naming the key and the choices otherwise."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"algorithm.name: unknown algorithm {name!r}; choose one of [{', '.join(LOSSES)}]") from None


__all__ = [
    "DIFFU_GRPO_DEFAULTS", "ESPO_DEFAULTS", "GDSD_DEFAULTS", "LOSSES", "LossSpec", "SPG_DEFAULTS", "WD1_DEFAULTS",
    "diffu_grpo_loss", "diffu_grpo_prompt_mask", "espo_loss", "gdsd_loss", "get_loss", "spg_loss", "wd1_loss",
]
