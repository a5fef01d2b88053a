"""The model-family registry: one `ModelFamily` per `model.family`, the only place family names are listed.

A family is a checkpoint layout our one transformer (common/models/transformer.py) loads: how its config.json reads
into ModelArgs and is written back (`config_reader` / `config_writer`, "module:function" resolved lazily, so this
module imports no torch: validating a YAML file must not), its safetensors key names, the LoRA target names of its
official recipe, its official sampler, the logit shift and the tiny model's settings. Everything else derives from
it: config validation (`model.family`, `model.tiny.family`), `family_of` (config.json `model_type` -> family), the key
map of common/models/weights.py, common/tiny.py and the official evaluation's sampler (deploy/evaluate_gdsd.py).
Adding a family = one entry here (plus a config reader / writer when its config.json has other field names);
tests/common/test_families.py adds a LLaDA clone under another name with one entry and samples from it.
In the style of common/algorithms.py.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

# our block projection -> the official (peft target) name: the GDSD recipe's lora_target_modules, the same for both
# released families (LLaDA's own module names differ: docs/lora.md). The one home of this map.
LORA_TARGETS: dict[str, str] = {"wq": "q_proj", "wk": "k_proj", "wv": "v_proj", "wo": "o_proj",
                                "w_gate": "gate_proj", "w_up": "up_proj", "w_down": "down_proj"}


@dataclass(frozen=True)
class TinySettings:
    """The built-in tiny model's per-family constants (common/tiny.py); sizes come from `model.tiny`."""

    rope_theta: float
    norm_eps: float
    qkv_bias: bool


@dataclass(frozen=True)
class ModelFamily:
    """One checkpoint family.

    Attributes:
        name: the config's ``model.family``.
        model_type: config.json ``model_type`` as the official checkpoints write it (matched case-insensitively).
        config_reader: ``"module:function"`` (config.json dict, family, where) -> ModelArgs; names missing fields.
        config_writer: ``"module:function"`` ModelArgs -> config.json dict in the family's own field names.
        block_prefix: the safetensors prefix of block N (``f"{block_prefix}.{N}."``).
        top_keys: our top-level module -> its official key stem (``.weight`` appended).
        block_keys: our block submodule -> its official key stem under the block prefix.
        shift: Dream-style logits (position n predicted from hidden n-1).
        lora_targets: our projection -> the official peft target name.
        sampler: the official evaluation's sampler settings for this family (SamplerConfig fields).
        sampler_name: what that sampler is called in the official code.
        tiny: the tiny model's constants.
    """

    name: str
    model_type: str
    config_reader: str
    config_writer: str
    block_prefix: str
    top_keys: dict[str, str]
    block_keys: dict[str, str]
    shift: bool
    sampler: dict[str, Any]
    sampler_name: str
    tiny: TinySettings
    lora_targets: dict[str, str] = field(default_factory=lambda: dict(LORA_TARGETS))

    def reader(self) -> Callable[..., Any]:
        return _resolve(self.config_reader)

    def writer(self) -> Callable[..., dict]:
        return _resolve(self.config_writer)


def _resolve(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (
    ModelFamily(  # LLaDA-8B-Instruct / Base / 1.5: OLMo-style config and keys, unshifted, untied
        "llada", model_type="llada", config_reader="common.models.args:olmo_args",
        config_writer="common.models.args:olmo_config", block_prefix="model.transformer.blocks",
        top_keys={"body.embed": "model.transformer.wte", "body.norm": "model.transformer.ln_f",
                  "head": "model.transformer.ff_out"},
        block_keys={"attn_norm": "attn_norm", "wq": "q_proj", "wk": "k_proj", "wv": "v_proj", "wo": "attn_out",
                    "ffn_norm": "ff_norm", "w_gate": "ff_proj", "w_up": "up_proj", "w_down": "ff_out"},
        shift=False,
        # LLaDA's generate as eval.py runs it: low_confidence, softmax in float32 under autocast, MASK kept
        sampler=dict(schedule="blocks", remasking="low_confidence", confidence_dtype="float32", draw_mask=True),
        sampler_name="LLaDA generate", tiny=TinySettings(rope_theta=5e5, norm_eps=1e-5, qkv_bias=False)),
    ModelFamily(  # Dream-v0-Instruct/Base-7B: Qwen2-style config and keys, shifted, q/k/v bias, GQA
        "dream", model_type="Dream", config_reader="common.models.args:qwen2_args",
        config_writer="common.models.args:qwen2_config", block_prefix="model.layers",
        top_keys={"body.embed": "model.embed_tokens", "body.norm": "model.norm", "head": "lm_head"},
        block_keys={"attn_norm": "input_layernorm", "wq": "self_attn.q_proj", "wk": "self_attn.k_proj",
                    "wv": "self_attn.v_proj", "wo": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
                    "w_gate": "mlp.gate_proj", "w_up": "mlp.up_proj", "w_down": "mlp.down_proj"},
        shift=True,
        # Dream's diffusion_generate(alg="entropy", alg_temp=0) with top_k 50 inherited from its model config, all
        # on its bf16 logits, MASK kept (docs/recipe.md sections 2-4 and 7)
        sampler=dict(schedule="dream", remasking="entropy", top_k=50, confidence_dtype="model", draw_mask=True),
        sampler_name="Dream diffusion_generate", tiny=TinySettings(rope_theta=1e6, norm_eps=1e-6, qkv_bias=True)),
)}


def get_family(name: str, *, key: str | None = "model.family") -> ModelFamily:
    """The spec of family `name`; a ValueError naming `key` (None: the caller names it) and the registered families
    otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"{key + ': ' if key else ''}unknown family {name!r}; choose one of "
                         f"[{', '.join(FAMILIES)}]") from None


def family_by_model_type(model_type: str) -> ModelFamily | None:
    """The family whose config.json `model_type` this is (case-insensitive), or None."""
    return next((f for f in FAMILIES.values() if f.model_type.lower() == model_type.lower()), None)


def lora_official_names() -> dict[str, str]:
    """Official peft target name -> our projection, over every registered family (config accepts either name)."""
    return {official: ours for f in FAMILIES.values() for ours, official in f.lora_targets.items()}
