"""Run configuration: nested pydantic models, loaded from YAML with `key.sub=value` overrides.

Validated once at load time and frozen afterwards (no component mutates config). Errors name the key and say how to
fix it. Defaults are the tiny CPU setting; the paper's official values are given in each field's description.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TinyModelConfig(_Section):
    """The built-in tiny dLLM: a transformers Gemma with bidirectional attention and a character tokenizer."""

    hidden_size: int = Field(256, gt=0)
    num_layers: int = Field(4, gt=0)
    num_heads: int = Field(4, gt=0)
    intermediate_size: int = Field(768, gt=0)
    max_positions: int = Field(512, gt=0)
    seed: int = Field(0, description="initialisation seed of the tiny model")


class ModelConfig(_Section):
    path: str | None = Field(None, description="local HF directory (LLaDA, Dream, or an export); None = tiny built-in")
    tiny: TinyModelConfig = TinyModelConfig()
    trust_remote_code: bool = Field(False, description="allow the model directory's own modeling code (LLaDA, Dream)")
    logits_shift: bool | None = Field(
        None, description="True for Dream-style models (position i predicted from i-1); None = read "
        "`logits_shift` from the model config, else False (LLaDA-style)")
    mask_token_id: int | None = Field(None, description="None = model config `mask_token_id`, else tokenizer mask")
    eos_token_id: int | None = Field(None, description="None = tokenizer / model config EOS")
    chat_template: bool = Field(False, description="wrap prompts with the tokenizer's chat template (LLaDA/Dream)")
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="compute dtype of rollout and learner; both must agree (DESIGN.md, numerical trap)")


class SamplerConfig(_Section):
    """Diffusion sampling (LLaDA low_confidence remasking; Dream uses entropy and top_p 0.95)."""

    gen_length: int = Field(32, gt=0, description="completion length L (official training: 256)")
    steps: int = Field(16, gt=0, description="denoising steps over the whole completion (official: 64; GSM8K 256)")
    block_length: int = Field(32, gt=0, description="semi-autoregressive block size (official: 32)")
    temperature: float = Field(1.0, ge=0, description="Gumbel-max temperature; 0 = greedy (official eval)")
    remasking: Literal["low_confidence", "entropy", "random"] = "low_confidence"
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus filter before sampling (Dream: 0.95)")

    @model_validator(mode="after")
    def _blocks_divide(self) -> "SamplerConfig":
        if self.gen_length % self.block_length:
            raise ValueError(f"gen_length ({self.gen_length}) must be a multiple of block_length ({self.block_length})")
        blocks = self.gen_length // self.block_length
        if self.steps % blocks:
            raise ValueError(f"steps ({self.steps}) must be a multiple of the number of blocks ({blocks})")
        return self


class TaskConfig(_Section):
    name: Literal["sudoku", "countdown"] = "sudoku"
    prompt_format: Literal["official", "compact"] = Field(
        "compact", description="official = the paper's prompt (LLaDA/Dream); compact = short, for the tiny model")
    seed: int = 0
    test_path: str | None = Field(None, description="optional paper test set (../shared/data/...) for evaluation")


class RolloutConfig(_Section):
    num_actors: int = Field(1, gt=0, description="RolloutActors; scaled independently of learner.num_ranks")
    prompts_per_step: int = Field(4, gt=0, description="B prompts drawn per training step")
    group_size: int = Field(6, gt=1, description="G completions per prompt (official: 6; GSM8K 16)")
    cpus_per_actor: float = Field(1, gt=0)
    gpus_per_actor: float = Field(0, ge=0)
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources per actor, e.g. "
                                        "{rollout_node: 1} to keep actors on the rollout node type (deploy/cluster.yaml)")
    torch_threads: int = Field(1, gt=0, description="intra-op threads per actor on CPU")
    logprob_rows: int = Field(64, gt=0, description="rows per forward when computing teacher targets")


class RewardConfig(_Section):
    num_workers: int = Field(1, gt=0)
    cpus_per_worker: float = Field(0.5, gt=0)
    service: dict[str, Any] = Field(
        default_factory=dict, description="the reward service's own settings (rewards/README.md: reward_functions, "
        "sandbox, math_processes, ...), validated by rewards.registry.RewardServiceConfig when the job starts")


class AlgorithmConfig(_Section):
    """GDSD and baselines. Official GDSD defaults: beta=1e-3, eps=4e-4, mu=8, num_mc=1, psi=1 (GSM8K/MATH psi=10)."""

    name: Literal["gdsd", "gdsd_tlc", "espo", "diffu_grpo", "spg", "wd1"] = "gdsd"
    beta: float = Field(1e-3, ge=0, description="weight of the k2 KL term to the reference")
    eps: float = Field(4e-4, gt=0, lt=1, description="clamp of the log-ratio to [log(1-eps), log(1+eps)]")
    mu: int = Field(8, gt=0, description="inner iterations per rollout batch")
    num_mc: int = Field(1, gt=0, description="Monte-Carlo mask draws per inner iteration")
    psi: float = Field(1.0, description="advantage scale of the guided teacher pi_old * exp(psi * A)")
    clip_eps: float = Field(0.2, gt=0, description="PPO clip range of the ratio-based baselines")
    teacher_source: Literal["rollout", "learner"] = Field(
        "rollout", description="S_old from the actor (async-safe) or recomputed on the learner (sync only)")
    p_mask_prompt: float = Field(
        0.15, ge=0, le=1, description="d1 one-step estimate (diffu_grpo, wd1): probability of masking each prompt "
        "token (official: 0.15)")


class LearnerConfig(_Section):
    num_ranks: int = Field(1, gt=0)
    gpus_per_rank: float = Field(0, ge=0)
    cpus_per_rank: float = Field(1, gt=0)
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources per rank, e.g. "
                                        "{learner_node: 1} to keep ranks on the learner node type")
    torch_threads: int = Field(1, gt=0, description="intra-op threads per rank on CPU")
    lr: float = Field(3e-6, gt=0, description="official: 3e-6 (MATH 1e-5)")
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = Field(0.2, gt=0)
    warmup_steps: int = Field(0, ge=0)
    grad_accum: int = Field(1, gt=0, description="micro-batches per inner iteration on each rank")
    filter_zero_advantage: bool = Field(
        False, description="drop rows of groups with zero reward variance before the forward (they are counted)")
    max_restarts: int = Field(
        0, ge=0, description="times the driver rebuilds the learner group after a rank died and continues from the "
        "last checkpoint (or from the start without one); 0 = the job ends (then recover with --resume)")


class SFTConfig(_Section):
    """Warm start by masked-diffusion SFT on generated solutions (learner/sft.py), cached in the run directory."""

    enabled: bool = False
    steps: int = Field(300, ge=0)
    batch_size: int = Field(32, gt=0)
    lr: float = Field(1e-3, gt=0)
    num_examples: int = Field(4000, gt=0, description="generated training pairs (disjoint from the test split)")
    seed: int = 1


class PipelineConfig(_Section):
    max_staleness: int = Field(0, ge=0, description="0 = synchronous; k = actors may run k versions ahead (AReaL)")
    weight_sync: Literal["object_store", "broadcast"] = Field(
        "object_store", description="how learner rank 0 sends weights to the actors: one copy in the Ray object "
        "store that every actor reads, or a bucketed broadcast over a process group of its own (NCCL on GPUs, gloo "
        "on CPU); use broadcast on GPU clusters")
    weight_bucket_mb: float = Field(256, gt=0, description="broadcast: largest bucket of flattened tensors")
    weight_sync_timeout_s: float = Field(120, gt=0, description="broadcast: how long a member waits for the others "
                                         "(a dead actor is noticed after at most this long, then the group is rebuilt)")


class EvalConfig(_Section):
    """Greedy evaluation on held-out prompts (official: temperature 0, steps = gen_len / 2, block 32)."""

    num_prompts: int = Field(64, ge=0)
    every: int = Field(0, ge=0, description="evaluate every k steps (0 = only before and after training)")
    gen_length: int | None = Field(None, description="None = sampler.gen_length")
    steps: int | None = Field(None, description="None = gen_length / 2")
    block_length: int | None = Field(None, description="None = sampler.block_length")


class CheckpointConfig(_Section):
    every: int = Field(0, ge=0, description="save every k steps (0 = only at the end)")
    export_hf: bool = Field(True, description="write an HF directory of the final policy")


class ClusterConfig(_Section):
    address: str | None = Field(None, description="Ray address; None = the submitting cluster or a local instance")
    num_cpus: int | None = Field(None, description="CPUs of a local instance (None = all)")


class RunConfig(_Section):
    seed: int = 0
    run_dir: str = "runs/default"
    cache_dir: str = Field("runs/cache", description="the tiny base model and SFT warm starts, keyed by their settings "
                           "and shared across runs")
    steps: int = Field(1, gt=0, description="training steps (rollout batches)")
    model: ModelConfig = ModelConfig()
    sampler: SamplerConfig = SamplerConfig()
    task: TaskConfig = TaskConfig()
    rollout: RolloutConfig = RolloutConfig()
    reward: RewardConfig = RewardConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    learner: LearnerConfig = LearnerConfig()
    cluster: ClusterConfig = ClusterConfig()
    sft: SFTConfig = SFTConfig()
    pipeline: PipelineConfig = PipelineConfig()
    eval: EvalConfig = EvalConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()

    @model_validator(mode="after")
    def _teacher_source_fits(self) -> "RunConfig":
        from common.logprob import LOGP_VARIANT  # lazy: common.logprob imports this module

        alg = self.algorithm
        if LOGP_VARIANT.get(alg.name, "") is None and alg.teacher_source == "rollout":
            raise ValueError(f"algorithm.teacher_source: algorithm.name={alg.name} uses per-token one-step estimates "
                             "that the actors do not compute; set algorithm.teacher_source=learner")
        if alg.teacher_source == "learner" and self.pipeline.max_staleness > 0:
            raise ValueError(f"algorithm.teacher_source=learner recomputes the teacher targets from the learner's "
                             f"current weights, which only sampled the batch in synchronous mode; set "
                             f"pipeline.max_staleness=0 (got {self.pipeline.max_staleness}) or "
                             "algorithm.teacher_source=rollout")
        return self


class ConfigError(ValueError):
    """A bad config key or value; the message names the key."""


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


def _explain(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            section = RunConfig
            for part in e["loc"][:-1]:
                section = section.model_fields[str(part)].annotation  # type: ignore[assignment]
            lines.append(f"unknown config key '{key}' (valid keys here: {', '.join(section.model_fields)})")
        else:
            lines.append(f"config key '{key}': {e['msg']} (got {e.get('input')!r})")
    return "; ".join(lines)


def build_config(data: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_explain(err)) from None


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
