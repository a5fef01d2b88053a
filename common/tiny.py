"""The built-in tiny dLLM: a standard transformers class (Gemma with bidirectional attention) and a character-level
`tokenizers` tokenizer with MASK/EOS/PAD specials, saved with save_pretrained like any real model."""
from __future__ import annotations

import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models
from transformers import GemmaConfig, GemmaForCausalLM, PreTrainedTokenizerFast

from common.config import TinyModelConfig

SPECIALS = {"pad": "<|pad|>", "eos": "<|eos|>", "mask": "<|mask|>", "unk": "<|unk|>"}
CHARS = string.printable[:95] + "\n"  # digits, letters, punctuation, space, newline


def make_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character; BPE with no merges splits text into characters, Fuse joins them back."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS.values())}
    for ch in CHARS:
        vocab.setdefault(ch, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=SPECIALS["unk"]))
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=SPECIALS["pad"], eos_token=SPECIALS["eos"],
                                   mask_token=SPECIALS["mask"], unk_token=SPECIALS["unk"])


def make_tiny_model(cfg: TinyModelConfig, path: str | Path) -> Path:
    """Create, initialise (seeded) and save the tiny model + tokenizer to `path`; returns the path."""
    tokenizer = make_tokenizer()
    config = GemmaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        head_dim=cfg.hidden_size // cfg.num_heads, max_position_embeddings=cfg.max_positions,
        # a denoiser sees the whole sequence: no causal mask anywhere (mask creation and the attention kernels)
        use_bidirectional_attention=True, is_causal=False,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
        mask_token_id=tokenizer.mask_token_id, logits_shift=False,
    )
    # seeded init from our own generator (never the global RNG), so the same seed gives the same model anywhere
    model = GemmaForCausalLM(config)
    generator = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.zero_()  # Gemma RMSNorm scales by (1 + w)
            else:
                param.normal_(0.0, config.initializer_range, generator=generator)
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
