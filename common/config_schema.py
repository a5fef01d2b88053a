"""The run configuration's section schemas: nested, frozen pydantic models (types, ranges, unknown keys).

Loading (YAML + `key.sub=value` overrides) is common/config.py, the cross-section rules common/validation.py; both
import this module, which imports neither. Defaults are the tiny CPU setting; the paper's official values are given
in each field's description.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from common.algorithms import ALGORITHM_NAMES
from common.families import get_family, lora_official_names
from common.tasks import PROMPT_FORMATS, TASKS

TASK_NAMES: tuple[str, ...] = tuple(TASKS)
if TYPE_CHECKING:  # Literals built from the registries at import: pydantic checks them, a type checker sees str
    TaskName: TypeAlias = str
    PromptFormat: TypeAlias = str
    AlgorithmName: TypeAlias = str
else:
    TaskName, PromptFormat, AlgorithmName = Literal[TASK_NAMES], Literal[PROMPT_FORMATS], Literal[ALGORITHM_NAMES]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def custom_resources(value: dict[str, float], *, cpu_key: str, gpu_key: str | None) -> dict[str, float]:
    """A `*.resources` dict: custom Ray resources only (CPU and GPU have keys of their own, which Ray insists on), each
    amount > 0 (a zero request places nothing) and at most 4 decimals (Ray's resource unit is 0.0001)."""
    for name in ("CPU", "GPU"):
        if name in value:
            instead = gpu_key if name == "GPU" else cpu_key
            fix = instead or "no GPU (this service runs on CPUs)"
            raise ValueError(f"{name!r} is not a custom resource: set {fix} instead")
    for name, amount in value.items():
        if amount <= 0 or round(amount, 4) != amount:
            raise ValueError(f"resource {name!r}: amount {amount:g} must be > 0 and a multiple of 0.0001")
    return value


class TinyModelConfig(_Section):
    """The built-in tiny dLLM: the native model (common/models/) saved in an official checkpoint layout, with a
    character tokenizer (common/tiny.py)."""

    family: str = Field("llada", description="checkpoint layout and config.json of the tiny model: an entry of "
                        "common/families.py (llada: unshifted, untied; dream: shifted, q/k/v bias, GQA)")

    hidden_size: int = Field(256, gt=0)
    num_layers: int = Field(4, gt=0)
    num_heads: int = Field(4, gt=0)
    num_kv_heads: int | None = Field(None, gt=0, description="None = num_heads; fewer = grouped-query attention")
    intermediate_size: int = Field(768, gt=0)
    max_positions: int = Field(512, gt=0)
    seed: int = Field(0, description="initialisation seed of the tiny model")

    @field_validator("family")
    @classmethod
    def _registered(cls, value: str) -> str:
        return get_family(value, key=None).name  # pydantic names the key


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
        official = lora_official_names()  # official peft target -> our projection (common/families.py)
        names = [official.get(v, v) for v in (value or [])]
        unknown = sorted(set(names) - set(official.values()))
        if unknown:
            raise ValueError(f"unknown LoRA target modules {unknown}; choose from {sorted(official.values())} "
                             f"(or the official {sorted(official)})")
        if not names:
            raise ValueError("target_modules must name at least one projection")
        return list(dict.fromkeys(names))


class ModelConfig(_Section):
    path: str | None = Field(None, description="local checkpoint directory in the LLaDA or Dream layout (or an "
                             "export of one, docs/models.md); None = the tiny built-in model")
    tiny: TinyModelConfig = TinyModelConfig()
    family: str | None = Field(
        None, description="checkpoint layout, an entry of common/families.py; None = config.json `model_type` "
        "(llada -> llada, Dream -> dream). The model code is ours (common/models/): a directory's own modeling code "
        "is never run")
    logits_shift: bool | None = Field(
        None, description="True for Dream-style models (position i predicted from i-1); None = from the family "
        "(dream: True, llada: False)")
    mask_token_id: int | None = Field(None, description="None = config.json `mask_token_id` (LLaDA 126336, Dream "
                                      "151666), else the tokenizer's mask token")
    eos_token_id: int | None = Field(None, description="None = config.json `eos_token_id` (LLaDA 126081, Dream "
                                     "151643), else the tokenizer's EOS")
    chat_template: bool = Field(False, description="wrap prompts with the tokenizer's chat template (LLaDA/Dream)")
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="compute dtype of rollout and learner; both must agree (docs/design.md, Numerical traps)")
    lora: LoRAConfig = LoRAConfig()

    @field_validator("family")
    @classmethod
    def _registered(cls, value: str | None) -> str | None:
        return None if value is None else get_family(value, key=None).name  # pydantic names the key


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
    top_k: int | None = Field(None, gt=0, description="dream schedule: keep the k most likely tokens before the "
                              "softmax that samples and scores (after top_p, as Dream's sample_tokens); None = off. "
                              "The official GDSD calls inherit 50 from Dream's model config (transformers 4.x)")
    schedule: Literal["blocks", "dream"] = Field(
        "blocks", description="blocks = LLaDA generate (official LLaDA rollouts and eval); dream = Dream's "
        "diffusion_generate (official Dream rollouts and eval): timesteps linspace(1, 1e-3, steps + 1) over the whole "
        "completion, reveal count per step from the schedule, all masked positions compete, block_length unused")
    logits_budget_mb: float = Field(
        4096, gt=0, description="largest logits tensor one sampler forward may produce (rows x positions x vocab in "
        "the model dtype); bigger rollout / evaluation batches are generated in row chunks that fit")
    draw_mask: bool = Field(
        False, description="True = the official loops (LLaDA generate, Dream diffusion_generate): argmax, sampling and "
        "the confidence softmax run over the whole vocabulary, MASK included; a position that draws MASK stays masked "
        "and is filled later (LLaDA: in a later block; it may end as MASK). False = MASK's logit is -inf (never drawn; "
        "every position of a block is revealed in it). Paper configs and --protocol gdsd: true (docs/recipe.md)")
    gumbel_dtype: Literal["float64", "model"] = Field(
        "float64", description="precision of the Gumbel noise (blocks schedule): float64 as LLaDA's generate.py, or "
        "the model dtype as the official GDSD training rollouts (bf16 noise samples much more sharply, "
        "docs/recipe.md); the dream schedule samples from softmax probabilities as Dream does")

    confidence_dtype: Literal["float32", "model"] = Field(
        "float32", description="precision of the probabilities that order the reveals (and, on the dream schedule, "
        "of Dream's whole sample_tokens: filters, softmax, draw): float32, or the model dtype as the official GDSD "
        "rollouts (LLaDA: softmax(logits.to(model.dtype)); Dream: its bf16 logits as they come). docs/recipe.md")

    @model_validator(mode="after")
    def _blocks_divide(self) -> "SamplerConfig":
        if self.schedule == "dream":
            return self
        if self.top_k is not None:
            raise ValueError("sampler.top_k applies to sampler.schedule=dream only (LLaDA's generate has no top_k)")
        if self.gen_length % self.block_length:
            raise ValueError(f"gen_length ({self.gen_length}) must be a multiple of block_length ({self.block_length})")
        blocks = self.gen_length // self.block_length
        if self.steps % blocks:
            raise ValueError(f"steps ({self.steps}) must be a multiple of the number of blocks ({blocks})")
        return self


class TaskConfig(_Section):
    name: TaskName = Field("sudoku", description="an entry of the task registry (common/tasks)")
    prompt_format: PromptFormat = Field(
        "compact", description="gdsd = GDSD's prompts (training; the evaluation variant with the worked example and "
        "the '<reasoning>' prefill for test sets), the paper configs' choice; d1 = d1's prompts; compact = short, for "
        "the tiny model")
    seed: int = 0
    source: str | None = Field(None, description="dataset of the dataset-backed tasks: a hub name or a local path "
                               "(None = official: openai/gsm8k, ankner/math-500; code has no default)")
    test_path: str | None = Field(None, description="test set file for evaluation (data/4x4_test_sudoku.csv, "
                                  "data/countdown_cd3_test.jsonl are the paper's); None = the generated test split, "
                                  "and the shipped paper file under --protocol gdsd")


class RolloutConfig(_Section):
    num_actors: int = Field(1, gt=0, description="RolloutActors; scaled independently of learner.num_ranks")
    prompts_per_step: int = Field(4, gt=0, description="B prompts drawn per training step")
    group_size: int = Field(6, gt=1, description="G completions per prompt (official: 6; GSM8K 16)")
    cpus_per_actor: float = Field(1, gt=0)
    gpus_per_actor: float = Field(0, ge=0)
    resources: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources per actor, e.g. {rollout_node: 1} to keep actors on "
                                          "the rollout node type (deploy/cluster.yaml)")
    torch_threads: int = Field(1, gt=0, description="intra-op threads per actor on CPU")

    @field_validator("resources")
    @classmethod
    def _custom(cls, value: dict[str, float]) -> dict[str, float]:
        return custom_resources(value, cpu_key="rollout.cpus_per_actor", gpu_key="rollout.gpus_per_actor")


class RewardConfig(_Section):
    num_workers: int = Field(1, gt=0)
    cpus_per_worker: float = Field(0.5, gt=0)
    resources: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources that each RewardWorker and the RewardPool actor "
        "coordinating them ask for (reward.num_workers + 1 times in all), e.g. {reward_node: 1} to keep the reward "
        "service on a node of its own (deploy/README.md); empty = workers anywhere with CPUs, the pool anywhere")

    @field_validator("resources")
    @classmethod
    def _custom(cls, value: dict[str, float]) -> dict[str, float]:
        return custom_resources(value, cpu_key="reward.cpus_per_worker", gpu_key=None)
    service: dict[str, Any] = Field(
        default_factory=dict, description="the reward service's own settings (rewards/README.md: reward_functions, "
        "sandbox, math_processes, ...), validated by rewards.service.registry.RewardServiceConfig when the job starts")


class AlgorithmConfig(_Section):
    """GDSD and baselines. Official GDSD defaults: beta=1e-3, eps=4e-4, mu=8, num_mc=1, psi=1 (GSM8K/MATH psi=10)."""

    name: AlgorithmName = Field("gdsd", description="an entry of common/algorithms.py (the registry)")
    beta: float = Field(1e-3, ge=0, description="weight of the k2 KL term to the reference")
    eps: float = Field(4e-4, gt=0, lt=1, description="clamp of the log-ratio to [log(1-eps), log(1+eps)]")
    eps_scope: Literal["sequence", "token"] = Field(
        "sequence", description="gdsd/gdsd_tlc: where eps applies. sequence (official): to the summed log-ratio "
        "S_theta - S_old; token: to the length-normalised log-ratio (S_theta - S_old)/L, i.e. a band L times wider "
        "on the sum (docs/design.md, Formulas). Measured (issue 24, 5 seeds x 20 steps, tiny model): token opens the "
        "clamp but gains no more than sequence on Countdown (-0.6 +- 1.2 points, paired) and one of 5 Sudoku seeds "
        "collapsed with it (docs/results.md)")
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


    @field_validator("resources")
    @classmethod
    def _custom(cls, value: dict[str, float]) -> dict[str, float]:
        return custom_resources(value, cpu_key="learner.cpus_per_rank", gpu_key="learner.gpus_per_rank")

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
    torch_threads: int | None = Field(None, gt=0, description="intra-op threads of each rollout actor while it "
                                      "evaluates on CPU (None = rollout.torch_threads); the evaluations before the "
                                      "first and after the last step run while the learner waits, so its cores are "
                                      "free (evaluations with `every` overlap training)")


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
    gpu_mem_gib: float | None = Field(
        None, gt=0, description="memory of one GPU (GiB) for the start-up memory plan (deploy/plan.py); None = the "
        "driver's own GPU if it has one, else the cluster's accelerator_type when its memory is known (H200: 140), "
        "else the plan is logged but not checked")
    plan_prompt_tokens: int = Field(
        512, gt=0, description="prompt width (tokens, chat template included) the memory plan assumes: the longest "
        "left-padded prompt batch of the task")


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
