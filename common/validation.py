"""Config errors and the cross-section rules of a RunConfig (anchor: torchtitan `config/validation.py`).

`validate(cfg)` runs every rule at once and raises one ConfigError listing each violated rule with the keys it names
and the fix; the section schemas themselves (types, ranges, unknown keys) live in common/config.py, and `explain`
turns their pydantic errors into the same one-line-per-key form.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from common.algorithms import TRAINABLE, get_algorithm

if TYPE_CHECKING:
    from common.config import RunConfig


class ConfigError(ValueError):
    """A bad config key or value; the message names the key."""


def explain(err: ValidationError, *, root: type[BaseModel] | None = None, prefix: str = "") -> str:
    """One line per pydantic error, naming the dotted config key (`prefix` + location) and, for an unknown key,
    the valid keys of its section. Used for RunConfig and for sections other packages validate (reward.service)."""
    lines = []
    for e in err.errors():
        key = prefix + (".".join(str(p) for p in e["loc"]) or "<root>")
        if e["type"] == "extra_forbidden" and root is not None:
            section: Any = root
            for part in e["loc"][:-1]:
                section = section.model_fields[str(part)].annotation
            lines.append(f"unknown config key '{key}' (valid keys here: {', '.join(section.model_fields)})")
        elif e["type"] == "extra_forbidden":
            lines.append(f"unknown config key '{key}'")
        else:
            lines.append(f"config key '{key}': {e['msg']} (got {e.get('input')!r})")
    return "; ".join(lines)


def _algorithm_rules(cfg: RunConfig) -> list[str]:
    alg, spec = cfg.algorithm, get_algorithm(cfg.algorithm.name)
    errors = []
    if not spec.trainable:
        errors.append(f"algorithm.name={alg.name}: the learner does not implement it ({spec.paper}; its "
                      f"'{spec.logp}' estimate is missing); choose one of [{', '.join(TRAINABLE)}]")
    ignored = sorted(k for k in alg.model_fields_set if k not in spec.reads)
    if ignored:
        errors.append(f"algorithm.name={alg.name} ignores " + ", ".join(f"algorithm.{k}" for k in ignored)
                      + f"; remove {'it' if len(ignored) == 1 else 'them'} (it reads: "
                      + ", ".join(f"algorithm.{k}" for k in spec.reads) + ")")
    if "teacher_source" in spec.reads:
        if alg.teacher_source not in spec.teacher_sources:
            errors.append(f"algorithm.teacher_source={alg.teacher_source}: algorithm.name={alg.name} computes its "
                          f"teacher targets on the {' or '.join(spec.teacher_sources)} only (per-token estimates are "
                          f"not in the RolloutBatch); set algorithm.teacher_source={spec.teacher_sources[0]}")
        elif alg.teacher_source == "learner" and cfg.pipeline.max_staleness > 0:
            errors.append("algorithm.teacher_source=learner recomputes the teacher targets from the learner's current "
                          "weights, which only sampled the batch in synchronous mode; set pipeline.max_staleness=0 "
                          f"(got {cfg.pipeline.max_staleness})"
                          + (" or algorithm.teacher_source=rollout" if "rollout" in spec.teacher_sources else ""))
    return errors


def _batch_rules(cfg: RunConfig) -> list[str]:
    """The learner trains each actor's RolloutBatch separately: it splits the batch's rows (wd1: whole prompt groups)
    over learner.num_ranks ranks, then each rank's share into learner.grad_accum micro-batches, all of them non-empty
    (every rank runs the same forwards). Actor a gets prompts_per_step * (a+1) // num_actors - prompts_per_step * a //
    num_actors prompts, so the smallest batch has floor(prompts_per_step / num_actors) prompts (when that is >= 1).
    Uneven splits are fine: losses are normalised by the global row count."""
    errors = []
    r, lr = cfg.rollout, cfg.learner
    spec = get_algorithm(cfg.algorithm.name)
    prompts = max(1, r.prompts_per_step // r.num_actors)
    units, what = (prompts, "prompt groups") if spec.group_rows else (prompts * r.group_size, "rows")
    need = lr.num_ranks * lr.grad_accum
    if units < need:
        errors.append(
            f"rollout: the smallest rollout batch has {units} {what} (rollout.prompts_per_step={r.prompts_per_step} "
            f"over rollout.num_actors={r.num_actors} actors" + ("" if spec.group_rows else
                                                             f", x rollout.group_size={r.group_size}")
            + f"), fewer than learner.num_ranks={lr.num_ranks} x learner.grad_accum={lr.grad_accum} = {need} "
            f"micro-batches that each need one; raise rollout.prompts_per_step to at least "
            f"{r.num_actors * -(-need // (1 if spec.group_rows else r.group_size))} or lower learner.grad_accum / "
            "learner.num_ranks")
    if r.num_actors > r.prompts_per_step:
        errors.append(f"rollout.num_actors={r.num_actors} > rollout.prompts_per_step={r.prompts_per_step}: some actors "
                      "would never get a prompt; lower rollout.num_actors or raise rollout.prompts_per_step")
    if cfg.sft.enabled and cfg.sft.steps:
        if cfg.sft.batch_size < lr.num_ranks:
            errors.append(f"sft.batch_size={cfg.sft.batch_size} < learner.num_ranks={lr.num_ranks}: every rank needs "
                          "at least one SFT row; raise sft.batch_size")
        if cfg.sft.batch_size > cfg.sft.num_examples:
            errors.append(f"sft.batch_size={cfg.sft.batch_size} > sft.num_examples={cfg.sft.num_examples} (a batch is "
                          "drawn without replacement); raise sft.num_examples or lower sft.batch_size")
    return errors


def validate(cfg: RunConfig) -> RunConfig:
    """Every cross-section rule, in one place (run by `load_config` / `build_config`); raises one ConfigError listing
    every violated rule, each naming the keys and the fix (anchor: torchtitan `config/validation.py`)."""
    errors = _algorithm_rules(cfg) + _batch_rules(cfg)
    if errors:
        raise ConfigError("; ".join(errors))
    return cfg
