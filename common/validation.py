"""Config errors and the cross-section rules of a RunConfig (anchor: torchtitan `config/validation.py`).

`validate(cfg)` runs every rule at once and raises one ConfigError listing each violated rule with the keys it names
and the fix; the section schemas themselves (types, ranges, unknown keys) live in common/config_schema.py (imported
here; it imports neither this module nor common/config.py, the loader above both), and `explain` turns their pydantic
errors into the same one-line-per-key form.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from common.algorithms import TRAINABLE, get_algorithm
from common.config_schema import RunConfig


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
                      f"'{spec.logp_kind}' estimate is missing); choose one of [{', '.join(TRAINABLE)}]")
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
        elif spec.old_on(alg.teacher_source) == "actor":
            errors += _exact_teacher_rules(cfg)
        elif alg.teacher_source == "learner" and cfg.pipeline.max_staleness > 0:
            errors.append("algorithm.teacher_source=learner recomputes the teacher targets from the learner's current "
                          "weights, which only sampled the batch in synchronous mode; set pipeline.max_staleness=0 "
                          f"(got {cfg.pipeline.max_staleness})"
                          + (" or algorithm.teacher_source=rollout" if "rollout" in spec.teacher_sources else ""))
    return errors


def _exact_teacher_rules(cfg: RunConfig) -> list[str]:
    """algorithm.teacher_source=rollout: the actor's S_old must equal the learner's first S_theta exactly (GDSD's
    clamp band is +-4e-4 on a sum of ~256 log-probs: docs/design.md, "Numerical traps"). Both run the same forwards
    (learner/micro.py) in the same dtype; these settings break that, so they are refused rather than left to close
    the clamp silently."""
    errors = []
    where = "algorithm.teacher_source=rollout needs the learner to rerun the actors' exact forwards, but "
    if cfg.learner.filter_zero_advantage:
        errors.append(where + "learner.filter_zero_advantage=true removes rows from the actors' row chunks (other "
                      "forward shapes, other rounding); set learner.filter_zero_advantage=false or "
                      "algorithm.teacher_source=learner")
    if (cfg.rollout.gpus_per_actor > 0) != (cfg.learner.gpus_per_rank > 0):
        errors.append(where + f"rollout.gpus_per_actor={cfg.rollout.gpus_per_actor} and learner.gpus_per_rank="
                      f"{cfg.learner.gpus_per_rank} put actors and learner on different device types (other kernels, "
                      "other rounding); put both on GPUs or both on CPUs, or set algorithm.teacher_source=learner")
    return errors


def _batch_rules(cfg: RunConfig) -> list[str]:
    """The learner forwards units of learner.micro_batch_rows rows of one actor's batch (learner/micro.py), pooled
    across the actors' batches and dealt to ranks; a rank short of units runs empty ones (so every rank joins the same
    collectives), but a rank with *only* empty units would idle: the step must have at least num_ranks units. Actor
    a gets prompts_per_step * (a+1) // num_actors - prompts_per_step * a // num_actors prompts. Group-normalised losses
    (wd1) need whole groups in a unit: micro_batch_rows a multiple of group_size."""
    errors = []
    r, lr = cfg.rollout, cfg.learner
    spec = get_algorithm(cfg.algorithm.name)
    rows = [(r.prompts_per_step * (a + 1) // r.num_actors - r.prompts_per_step * a // r.num_actors) * r.group_size
            for a in range(r.num_actors)]
    units = sum(-(-n // lr.micro_batch_rows) for n in rows)
    if units < lr.num_ranks:
        errors.append(
            f"learner: a step has {sum(rows)} rows in {units} micro-batches of learner.micro_batch_rows="
            f"{lr.micro_batch_rows} (rollout.prompts_per_step={r.prompts_per_step} x rollout.group_size="
            f"{r.group_size} over rollout.num_actors={r.num_actors}), fewer than learner.num_ranks={lr.num_ranks}: "
            "some ranks would have nothing to train; lower learner.micro_batch_rows or learner.num_ranks, or raise "
            "rollout.prompts_per_step")
    if spec.group_rows and lr.micro_batch_rows % r.group_size:
        errors.append(f"algorithm.name={cfg.algorithm.name} normalises within prompt groups: learner.micro_batch_rows="
                      f"{lr.micro_batch_rows} must be a multiple of rollout.group_size={r.group_size}")
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
