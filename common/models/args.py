"""ModelArgs: the shape of one bidirectional dLLM, read from the official config.json of its family.

Two families share one transformer (common/models/transformer.py); they differ only in config field names,
checkpoint key names, q/k/v bias and the logit shift, all given by their entry in the family registry
(common/families.py), which names the reader / writer below for each:
- llada (LLaDA-8B-Instruct / Base / 1.5, `model_type: llada`, OLMo-style config): d_model, n_layers, n_heads,
  n_kv_heads, mlp_hidden_size, embedding_size, rope_theta (500000), rms_norm_eps (1e-5), weight_tying (false),
  include_qkv_bias; mask 126336, EOS 126081. Unshifted: position n is predicted from hidden n.
- dream (Dream-v0-Instruct/Base-7B, `model_type: Dream`, Qwen2-style config): hidden_size, num_hidden_layers,
  num_attention_heads, num_key_value_heads (GQA), intermediate_size, rope_theta (1e6), rms_norm_eps (1e-6),
  tie_word_embeddings, q/k/v bias always on (Qwen2); mask 151666, pad/EOS 151643. Shifted: position n is predicted
  from hidden n-1 (official: logits = cat(logits[:, :1], logits[:, :-1])).
Options of the official code that these checkpoints do not use (ALiBi, qk layer norm, scaled logits, rope scaling,
another activation) are rejected by name rather than silently ignored.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from common.families import FAMILIES, ModelFamily, family_by_model_type, get_family


@dataclass(frozen=True)
class ModelArgs:
    family: str  # a common/families.py entry: which key map and config names
    vocab_size: int  # rows of the embedding and of the LM head
    dim: int  # hidden size H
    n_layers: int
    n_heads: int
    n_kv_heads: int  # < n_heads: grouped-query attention
    ffn_dim: int  # SwiGLU inner size
    rope_theta: float
    norm_eps: float
    qkv_bias: bool
    tied: bool  # LM head shares the embedding matrix
    shift: bool  # Dream-style: position n read from hidden n-1
    mask_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int | None

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)


def read_hf_config(path: str | Path) -> dict:
    file = Path(path) / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"model.path: {str(path)!r} is not a local model directory (no config.json)")
    return json.loads(file.read_text())


def family_of(config: dict, override: str | None, *, where: str = "config.json") -> str:
    """The family from our config's `model.family` if set, else from config.json `model_type` (the registry's)."""
    if override is not None:
        return get_family(override).name
    model_type = str(config.get("model_type", ""))
    family = family_by_model_type(model_type)
    if family is None:
        raise ValueError(f"{where}: model_type {model_type!r} is not a supported family (model types: "
                         f"{', '.join(f'{f.model_type} -> {f.name}' for f in FAMILIES.values())}); set model.family "
                         "to read it as one of them")
    return family.name


def _first_id(value) -> int | None:
    return int(value[0]) if isinstance(value, list) else (None if value is None else int(value))


def _reject(config: dict, where: str, **unsupported) -> None:
    """Raise if config.json turns on an option this implementation does not have (name it)."""
    for key, allowed in unsupported.items():
        value = config.get(key)
        if value not in allowed:
            raise ValueError(f"{where}: {key}={value!r} is not supported by the native model (supported: {allowed})")


def args_from_hf(config: dict, family: str, *, where: str = "config.json") -> ModelArgs:
    """ModelArgs from a family's official config.json fields (missing required fields are named)."""
    spec = get_family(family)
    config = {k: v for k, v in config.items() if v is not None}  # a null field counts as missing
    try:
        return spec.reader()(config, spec, where)
    except KeyError as err:
        raise ValueError(f"{where}: the {family} config has no {err.args[0]!r} field") from None


def olmo_args(config: dict, family: ModelFamily, where: str) -> ModelArgs:
    """LLaDA's OLMo-style config.json (nulls already dropped) -> ModelArgs."""
    _reject(config, where, alibi=(None, False), rope=(None, True), block_type=(None, "llama"),
            activation_type=(None, "silu"), attention_layer_norm=(None, False), input_emb_norm=(None, False),
            scale_logits=(None, False), layer_norm_type=(None, "rms"), include_bias=(None, False))
    dim, n_heads = int(config["d_model"]), int(config["n_heads"])
    ffn = config.get("mlp_hidden_size") or int(config.get("mlp_ratio", 4)) * dim
    kv = config.get("n_kv_heads") or (1 if config.get("multi_query_attention") else n_heads)
    return ModelArgs(
        family=family.name, vocab_size=int(config.get("embedding_size") or config["vocab_size"]), dim=dim,
        n_layers=int(config["n_layers"]), n_heads=n_heads, n_kv_heads=int(kv), ffn_dim=int(ffn),
        rope_theta=float(config.get("rope_theta", 10000.0)), norm_eps=float(config.get("rms_norm_eps", 1e-5)),
        qkv_bias=bool(config.get("include_qkv_bias", False)), tied=bool(config.get("weight_tying", False)),
        shift=family.shift, mask_token_id=_first_id(config.get("mask_token_id")),
        eos_token_id=_first_id(config.get("eos_token_id")), pad_token_id=_first_id(config.get("pad_token_id")))


def qwen2_args(config: dict, family: ModelFamily, where: str) -> ModelArgs:
    """Dream's Qwen2-style config.json (nulls already dropped) -> ModelArgs; q/k/v bias always on (Qwen2)."""
    _reject(config, where, rope_scaling=(None,), hidden_act=(None, "silu"))  # null rope_scaling dropped above
    n_heads = int(config["num_attention_heads"])
    return ModelArgs(
        family=family.name, vocab_size=int(config["vocab_size"]), dim=int(config["hidden_size"]),
        n_layers=int(config["num_hidden_layers"]), n_heads=n_heads,
        n_kv_heads=int(config.get("num_key_value_heads") or n_heads), ffn_dim=int(config["intermediate_size"]),
        rope_theta=float(config.get("rope_theta", 10000.0)), norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        qkv_bias=True, tied=bool(config.get("tie_word_embeddings", False)), shift=family.shift,
        mask_token_id=_first_id(config.get("mask_token_id")),
        eos_token_id=_first_id(config.get("eos_token_id")), pad_token_id=_first_id(config.get("pad_token_id")))


def olmo_config(args: ModelArgs) -> dict:
    return {"model_type": "llada", "architectures": ["LLaDAModelLM"], "d_model": args.dim,
            "n_layers": args.n_layers, "n_heads": args.n_heads, "n_kv_heads": args.n_kv_heads,
            "mlp_hidden_size": args.ffn_dim, "vocab_size": args.vocab_size, "embedding_size": args.vocab_size,
            "rope_theta": args.rope_theta, "rms_norm_eps": args.norm_eps, "include_qkv_bias": args.qkv_bias,
            "include_bias": False, "weight_tying": args.tied, "activation_type": "silu", "block_type": "llama",
            "rope": True, "alibi": False, "layer_norm_type": "rms", "scale_logits": False}


def qwen2_config(args: ModelArgs) -> dict:
    return {"model_type": "Dream", "architectures": ["DreamModel"], "hidden_size": args.dim,
            "num_hidden_layers": args.n_layers, "num_attention_heads": args.n_heads,
            "num_key_value_heads": args.n_kv_heads, "intermediate_size": args.ffn_dim,
            "vocab_size": args.vocab_size, "rope_theta": args.rope_theta, "rms_norm_eps": args.norm_eps,
            "tie_word_embeddings": args.tied, "hidden_act": "silu", "rope_scaling": None}


def hf_config_from_args(args: ModelArgs, **extra) -> dict:
    """A config.json in the family's official field names (what the tiny model is saved with); `model_type` is the
    registry's, so the file reads back as the same family."""
    spec = get_family(args.family)
    config = spec.writer()(args)
    config.update(model_type=spec.model_type, mask_token_id=args.mask_token_id, eos_token_id=args.eos_token_id,
                  pad_token_id=args.pad_token_id)
    config.update(extra)
    return config
