"""Run configuration: nested pydantic models, loaded from YAML with `key.sub=value` overrides.

Validated once at load time (section schemas here, cross-section rules in common/validation.py) and frozen
afterwards (no component mutates config). Errors name the key and say how to fix it. Defaults are the tiny CPU setting; the paper's official values are given in each field's description.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.algorithms import ALGORITHM_NAMES, get_algorithm
from common.validation import ConfigError, explain, validate  # noqa: F401  (re-exported)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TinyModelConfig(_Section):
    """The built-in tiny dLLM: the native model (common/models/) saved in an official checkpoint layout, with a
    character tokenizer (common/tiny.py)."""

    family: Literal["llada", "dream"] = Field("llada", description="checkpoint layout and config.json of the tiny "
                                               "model (llada: unshifted, untied; dream: shifted, q/k/v bias, GQA)")

    hidden_size: int = Field(256, gt=0)
    num_layers: int = Field(4, gt=0)
    num_heads: int = Field(4, gt=0)
    num_kv_heads: int | None = Field(None, gt=0, description="None = num_heads; fewer = grouped-query attention")
    intermediate_size: int = Field(768, gt=0)
    max_positions: int = Field(512, gt=0)
    seed: int = Field(0, description="initialisation seed of the tiny model")


_LORA_NAMES = {"q_proj": "wq", "k_proj": "wk", "v_proj": "wv", "o_proj": "wo", "gate_proj": "w_gate",
               "up_proj": "w_up", "down_proj": "w_down"}  # official peft target -> our projection (docs/lora.md)


class LoRAConfig(_Section):
    enabled: bool = Field(False, description="train LoRA adapters instead of all weights (official recipe: on); the "
                          "reference policy is the same model with adapters off (docs/lora.md)")
    r: int = Field(128, gt=0, description="adapter rank (official lora_r 128)")
    alpha: float = Field(64.0, gt=0, description="scale alpha / r (official lora_alpha 64)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter input, seeded from the mask seed "
                           "(official lora_dropout 0.05)")
    target_modules: list[str] = Field(
        ["wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"],
        description="our block projections; the official names q_proj k_proj v_proj o_proj gate_proj up_proj "
        "down_proj are accepted and mapped (official lora_target_modules: all seven)")
    init_seed: int = Field(0, description="seed of the adapters' A init (a torch.Generator): actors and learner "
                           "build the same adapters, so version 0 agrees bit for bit")

    @field_validator("target_modules", mode="before")
    @classmethod
    def _ours(cls, value):
        names = [_LORA_NAMES.get(v, v) for v in (value or [])]
        unknown = sorted(set(names) - set(_LORA_NAMES.values()))
        if unknown:
            raise ValueError(f"unknown LoRA target modules {unknown}; choose from {sorted(_LORA_NAMES.values())} "
                             f"(or the official {sorted(_LORA_NAMES)})")
        if not names:
            raise ValueError("target_modules must name at least one projection")
        return list(dict.fromkeys(names))


class ModelConfig(_Section):
    path: str | None = Field(None, description="local checkpoint directory in the LLaDA or Dream layout (or an "
                             "export of one, docs/models.md); None = the tiny built-in model")
    tiny: TinyModelConfig = TinyModelConfig()
    family: Literal["llada", "dream"] | None = Field(
        None, description="checkpoint layout; None = config.json `model_type` (llada -> llada, Dream -> dream). "
        "The model code is ours (common/models/): a directory's own modeling code is never run")
    logits_shift: bool | None = Field(
        None, description="True for Dream-style models (position i predicted from i-1); None = from the family "
        "(dream: True, llada: False)")
    mask_token_id: int | None = Field(None, description="None = config.json `mask_token_id` (LLaDA 126336, Dream "
                                      "151666), else the tokenizer's mask token")
    eos_token_id: int | None = Field(None, description="None = config.json `eos_token_id` (LLaDA 126081, Dream "
                                     "151643), else the tokenizer's EOS")
    chat_template: bool = Field(False, description="wrap prompts with the tokenizer's chat template (LLaDA/Dream)")
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="compute dtype of rollout and learner; both must agree (docs/design.md, Numerical traps)")
    lora: LoRAConfig = LoRAConfig()


class SamplerConfig(_Section):
    """Diffusion sampling: LLaDA's blocks with low_confidence remasking, or Dream's schedule (entropy, top_p 0.95)."""

    gen_length: int = Field(32, gt=0, description="completion length L (official training: 256)")
    steps: int = Field(16, gt=0, description="denoising steps over the whole completion (official: 64; GSM8K 256)")
    block_length: int = Field(32, gt=0, description="semi-autoregressive block size (official: 32); blocks only")
    temperature: float = Field(1.0, ge=0, description="sampling temperature; 0 = greedy (official eval)")
    remasking: Literal["low_confidence", "maskgit_plus", "entropy", "topk_margin", "random"] = Field(
        "low_confidence", description="confidence that orders the reveal: p(x^) (low_confidence; Dream calls it "
        "maskgit_plus), -entropy (entropy: official Dream rollouts), top1 - top2 probability (topk_margin), random")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus filter before sampling (Dream: 0.95)")
    schedule: Literal["blocks", "dream"] = Field(
        "blocks", description="blocks = LLaDA generate (official LLaDA rollouts and eval); dream = Dream's "
        "diffusion_generate (official Dream rollouts and eval): timesteps linspace(1, 1e-3, steps + 1) over the whole "
        "completion, reveal count per step from the schedule, all masked positions compete, block_length unused")
    logits_budget_mb: float = Field(
        4096, gt=0, description="largest logits tensor one sampler forward may produce (rows x positions x vocab in "
        "the model dtype); bigger rollout / evaluation batches are generated in row chunks that fit")
    gumbel_dtype: Literal["float64", "model"] = Field(
        "float64", description="precision of the Gumbel noise (blocks schedule): float64 as LLaDA's generate.py, or "
        "the model dtype as the official GDSD training rollouts (bf16 noise samples much more sharply, "
        "docs/recipe.md); the dream schedule samples from softmax probabilities as Dream does")

    @model_validator(mode="after")
    def _blocks_divide(self) -> "SamplerConfig":
        if self.schedule == "dream":
            return self
        if self.gen_length % self.block_length:
            raise ValueError(f"gen_length ({self.gen_length}) must be a multiple of block_length ({self.block_length})")
        blocks = self.gen_length // self.block_length
        if self.steps % blocks:
            raise ValueError(f"steps ({self.steps}) must be a multiple of the number of blocks ({blocks})")
        return self


class TaskConfig(_Section):
    name: Literal["sudoku", "countdown", "gsm8k", "math", "code"] = "sudoku"
    prompt_format: Literal["gdsd", "d1", "compact"] = Field(
        "compact", description="gdsd = GDSD's prompts (training; the evaluation variant with the worked example and "
        "the '<reasoning>' prefill for test sets), the paper configs' choice; d1 = d1's prompts; compact = short, for "
        "the tiny model")
    seed: int = 0
    source: str | None = Field(None, description="dataset of the dataset-backed tasks: a hub name or a local path "
                               "(None = official: openai/gsm8k, ankner/math-500; code has no default)")
    test_path: str | None = Field(None, description="test set file for evaluation (data/4x4_test_sudoku.csv, "
                                  "data/countdown_cd3_test.jsonl are the paper's); None = the generated test split, "
                                  "and the shipped paper file under --protocol gdsd")

    @field_validator("prompt_format", mode="before")
    @classmethod
    def _renamed(cls, value: Any) -> Any:
        if value == "official":
            raise ValueError("'official' was ambiguous and is gone: use 'd1' for d1's prompt (the old 'official') or "
                             "'gdsd' for GDSD's")
        return value


class RolloutConfig(_Section):
    num_actors: int = Field(1, gt=0, description="RolloutActors; scaled independently of learner.num_ranks")
    prompts_per_step: int = Field(4, gt=0, description="B prompts drawn per training step")
    group_size: int = Field(6, gt=1, description="G completions per prompt (official: 6; GSM8K 16)")
    cpus_per_actor: float = Field(1, gt=0)
    gpus_per_actor: float = Field(0, ge=0)
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources per actor, e.g. "
                                        "{rollout_node: 1} to keep actors on the rollout node type (deploy/cluster.yaml)")
    torch_threads: int = Field(1, gt=0, description="intra-op threads per actor on CPU")


class RewardConfig(_Section):
    num_workers: int = Field(1, gt=0)
    cpus_per_worker: float = Field(0.5, gt=0)
    service: dict[str, Any] = Field(
        default_factory=dict, description="the reward service's own settings (rewards/README.md: reward_functions, "
        "sandbox, math_processes, ...), validated by rewards.registry.RewardServiceConfig when the job starts")


class AlgorithmConfig(_Section):
    """GDSD and baselines. Official GDSD defaults: beta=1e-3, eps=4e-4, mu=8, num_mc=1, psi=1 (GSM8K/MATH psi=10)."""

    name: Literal[ALGORITHM_NAMES] = Field("gdsd", description="an entry of common/algorithms.py (the registry)")
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
    eubo_beta: float = Field(1.5, gt=0, description="SPG: beta of the Renyi-type EUBO of the negative-advantage rows "
                             "(official: Sudoku 1.0, Countdown / GSM8K / MATH 1.5)")
    mix_weight: float = Field(0.5, ge=0, le=1, description="SPG w/ Mixture: weight of the EUBO against the ELBO for "
                              "the negative-advantage rows (official: 0.5; 1 = SPG w/ EUBO)")


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
    micro_batch_rows: int = Field(
        24, gt=0, description="rows per forward: the learner's micro-batches and the row chunks in which the actors "
        "compute S_old / S_ref (the same forwards on both sides: bit-equal teacher targets in bf16 too); micro-batches "
        "are pooled across the actors' batches and dealt to ranks (official per-device batch: GSM8K 10, MATH 8, "
        "Sudoku / Countdown 1)")
    placement: Literal["STRICT_PACK", "PACK"] = Field(
        "STRICT_PACK", description="the learner's Ray placement group: STRICT_PACK keeps every rank on one node "
        "(FSDP over NVLink); PACK lets ranks span nodes (a multi-node learner)")
    filter_zero_advantage: bool = Field(
        False, description="drop rows of groups with zero reward variance before the forward (they are counted)")
    max_restarts: int = Field(
        0, ge=0, description="times the driver rebuilds the learner group after a rank died and continues from the "
        "last checkpoint (or from the start without one); 0 = the job ends (then recover with --resume)")
    log_param_delta: bool = Field(
        False, description="log ||theta after - theta before|| of every inner iteration (learner/param_delta; costs a "
        "copy of the parameters per optimizer step; for the mechanism study of docs/results.md)")
    activation_checkpointing: bool = Field(
        False, description="recompute each transformer block in backward instead of keeping its activations "
        "(needed for 7-8B models at L=256 on one GPU; costs about one extra forward)")


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
    keep_last: int = Field(0, ge=0, description="keep only the newest k step directories under checkpoint/ (0 = all; "
                           "the latest is never removed; a full 8B checkpoint with AdamW is ~96 GB)")
    export_hf_each: bool = Field(False, description="also write an HF directory (<step dir>/hf) at every checkpoint; "
                                 "pruned with its step by keep_last")


class MetricsConfig(_Section):
    """Where the driver's metrics go besides metrics.jsonl (deploy/metrics.py, deploy/README.md "Metrics")."""

    run_name: str | None = Field(None, description="the `run` tag of every Ray metric and the wandb run name; None = "
                                 "the run_dir's last path component")
    tensorboard: bool = Field(True, description="TensorBoard event files under <run_dir>/tensorboard")
    wandb: bool = Field(False, description="also log to Weights & Biases (pip install 'gdsd-rl[wandb]')")
    wandb_project: str = Field("gdsd-rl", description="wandb project")
    wandb_mode: Literal["online", "offline"] = Field(
        "online", description="offline writes <run_dir>/wandb only (sync later with `wandb sync`)")


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
    metrics: MetricsConfig = MetricsConfig()


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
