"""The built-in tiny dLLM: the native model class LLaDA-8B and Dream-7B run on (common/models/), at toy size, with a
character-level `tokenizers` tokenizer with MASK/EOS/PAD specials, saved as an official-layout checkpoint
(config.json + model.safetensors + tokenizer files) so every CPU test loads it the way an 8B checkpoint is loaded."""
from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

from common.config import TinyModelConfig
from common.families import get_family
from common.models import DiffusionLM, args_from_hf, export_checkpoint, hf_config_from_args
from common.models.args import ModelArgs

SPECIALS = {"pad": "<|pad|>", "eos": "<|eos|>", "mask": "<|mask|>", "unk": "<|unk|>"}
CHARS = string.printable[:95] + "\n"  # digits, letters, punctuation, space, newline
FILLER = "<|fill{}|>"  # padding tokens up to a requested vocabulary size (the id in the name)
INIT_STD = 0.02  # LLaDA `init_std`, Qwen2 `initializer_range`


def make_tokenizer(vocab_size: int | None = None) -> PreTrainedTokenizerFast:
    """One token per character; BPE with no merges splits text into characters, Fuse joins them back.

    `vocab_size`: pad the vocabulary with filler tokens up to that size (a checkpoint at a real model's vocabulary,
    e.g. LLaDA-8B's 126464, for benchmarks/gpu_check.py). Encoding never produces a filler (no merges build one),
    so every text encodes as without them; the sampler of an untrained model may draw them, and they decode as
    their names."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS.values())}
    for ch in CHARS:
        vocab.setdefault(ch, len(vocab))
    if vocab_size is not None:
        if vocab_size < len(vocab):
            raise ValueError(f"make_tokenizer: vocab_size {vocab_size} is below the {len(vocab)} character and "
                             "special tokens")
        vocab.update({FILLER.format(i): i for i in range(len(vocab), vocab_size)})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=SPECIALS["unk"]))
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=SPECIALS["pad"], eos_token=SPECIALS["eos"],
                                   mask_token=SPECIALS["mask"], unk_token=SPECIALS["unk"])


def tiny_args(cfg: TinyModelConfig, tokenizer: PreTrainedTokenizerFast) -> ModelArgs:
    """Sizes from `model.tiny`, the family's constants from its registry entry (common/families.py)."""
    family = get_family(cfg.family, key="model.tiny.family")
    return ModelArgs(
        family=family.name, vocab_size=len(tokenizer), dim=cfg.hidden_size, n_layers=cfg.num_layers,
        n_heads=cfg.num_heads, n_kv_heads=cfg.num_kv_heads or cfg.num_heads, ffn_dim=cfg.intermediate_size,
        rope_theta=family.tiny.rope_theta, norm_eps=family.tiny.norm_eps, qkv_bias=family.tiny.qkv_bias, tied=False,
        shift=family.shift, mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)


@torch.no_grad()
def random_init_(model: torch.nn.Module, generator: torch.Generator) -> torch.nn.Module:
    """Initialise every parameter in place, in `named_parameters` order: norm weights 1, biases 0, the rest normal
    (0, INIT_STD) from `generator` (never the global RNG, so the same seed gives the same model anywhere; a generator
    on the parameters' device). Fills every value, so it also initialises a model materialised with `to_empty`."""
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            param.fill_(1.0)
        elif name.endswith(".bias"):
            param.zero_()
        else:
            param.normal_(0.0, INIT_STD, generator=generator)
    return model


def make_tiny_model(cfg: TinyModelConfig, path: str | Path) -> Path:
    """Create, initialise (seeded) and save the tiny model + tokenizer to `path` in the official layout of
    `cfg.family`; returns the path."""
    tokenizer = make_tokenizer()
    args = tiny_args(cfg, tokenizer)
    config = hf_config_from_args(args, max_sequence_length=cfg.max_positions, torch_dtype="float32")
    if args_from_hf(config, cfg.family) != args:  # the saved config.json must read back as the same model
        raise RuntimeError(f"tiny model: config.json {config} does not read back as {args}")
    model = DiffusionLM(args)
    random_init_(model, torch.Generator().manual_seed(cfg.seed))
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    export_checkpoint(model.state_dict(), args, path, source_dir=None)
    (path / "config.json").write_text(json.dumps(config, indent=2))  # with the tiny's extra fields
    tokenizer.save_pretrained(path)
    return path
