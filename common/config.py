"""Run configuration: the section schemas (common/config_schema.py), loaded from YAML with `key.sub=value` overrides.

Validated once at load time (section schemas in common/config_schema.py, cross-section rules in common/validation.py)
and frozen afterwards (no component mutates config). Errors name the key and say how to fix it. This module sits
above both and re-exports the sections, so `from common.config import RunConfig, load_config` is the one import
callers need; neither of the two imports it back.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from common.algorithms import get_algorithm
from common.config_schema import (AlgorithmConfig, CheckpointConfig, ClusterConfig, EvalConfig, LearnerConfig,
                                  LoRAConfig, MetricsConfig, ModelConfig, PipelineConfig, RewardConfig, RolloutConfig,
                                  RunConfig, SamplerConfig, SFTConfig, TaskConfig, TinyModelConfig)
from common.validation import ConfigError, explain, validate

__all__ = [  # the sections and the errors are re-exported: callers import the config from here alone
    "AlgorithmConfig", "CheckpointConfig", "ClusterConfig", "ConfigError", "EvalConfig", "LearnerConfig", "LoRAConfig",
    "MetricsConfig", "ModelConfig", "PipelineConfig", "RewardConfig", "RolloutConfig", "RunConfig", "SamplerConfig",
    "SFTConfig", "TaskConfig", "TinyModelConfig", "build_config", "dump_config", "explain", "load_config",
    "parse_overrides", "validate"]


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node, keys = tree, dotted.split(".")
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key '{dotted}': '{key}' is a value, not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["sampler.steps=8", "model.path=/x"]` -> nested dict; values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        _set_path(tree, key.strip(), yaml.safe_load(raw))
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def dump_config(cfg: RunConfig) -> dict[str, Any]:
    """The resolved config as plain data (the run directory's config.yaml), without the `algorithm.*` fields the
    algorithm ignores, so that `build_config(dump_config(cfg)) == cfg` passes validation."""
    data = cfg.model_dump(mode="json")
    reads = get_algorithm(cfg.algorithm.name).reads
    data["algorithm"] = {k: v for k, v in data["algorithm"].items() if k in reads}
    return data


# keys that were replaced: a config that still sets one gets the new key's name, not only "unknown key"
REPLACED = {
    "learner.grad_accum": "learner.micro_batch_rows (rows per forward; micro-batches per rank follow from the rows "
                          "of the step)",
    "rollout.logprob_rows": "learner.micro_batch_rows (the actors compute teacher targets in the learner's "
                            "micro-batch chunks)",
}


def _replaced_keys(data: dict[str, Any]) -> list[str]:
    found = []
    for dotted, instead in REPLACED.items():
        section, key = dotted.split(".")
        if isinstance(data.get(section), dict) and key in data[section]:
            found.append(f"config key '{dotted}' was replaced by {instead}")
    return found


def build_config(data: dict[str, Any]) -> RunConfig:
    """Plain data -> a validated, frozen RunConfig (section schemas, then `validate`)."""
    replaced = _replaced_keys(data)
    if replaced:
        raise ConfigError("; ".join(replaced))
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(explain(err, root=RunConfig)) from None
    return validate(cfg)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """YAML file (or defaults) + dotted overrides -> validated, frozen RunConfig."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(path)!r}: top level must be a mapping")
    return build_config(_merge(data, parse_overrides(overrides or [])))
