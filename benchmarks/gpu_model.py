"""What benchmarks/gpu_check.py runs on: checkpoints written on the fly at LLaDA-8B's widths, the run config of the
checks (configs/sudoku_llada.yaml, the LLaDA paper setting). FLOP counts: benchmarks/common.py.

A checkpoint here is an official-layout LLaDA directory (config.json + safetensors + tokenizer files) with the real
widths (hidden 4096, 32 heads, FFN 12288, vocabulary 126464, untied head), `layers` blocks and random bf16 weights
(normal 0.02, norms 1), drawn on the device from a seeded generator; the tokenizer is common/tiny.py's character
tokenizer padded with filler tokens to the model's vocabulary. PolicyEngine and LearnerWorker load it through
`load_denoiser` exactly as they load LLaDA-8B.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.common import Widths, model_args
from common.config import RunConfig, load_config
from common.models import DiffusionLM, export_checkpoint, hf_config_from_args
from common.tiny import make_tokenizer, random_init_

REPO = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO / "configs" / "sudoku_llada.yaml"  # LLaDA-8B paper setting: bf16, LoRA r 128, T = 1, gumbel model


# LLaDA-8B-Instruct config.json: d_model 4096, n_heads 32 (no GQA), mlp_hidden_size 12288, embedding_size 126464
LLADA_8B = Widths(dim=4096, heads=32, kv_heads=32, ffn=12288, vocab=126464)
# Dream-v0-Instruct-7B config.json (deploy/shapes/dream-7b-instruct.json): hidden 3584, 28 heads / 4 kv heads, FFN
# 18944, vocabulary 152064, tie_word_embeddings false, rope_theta 1e6, rms_norm_eps 1e-6
DREAM_7B = Widths(dim=3584, heads=28, kv_heads=4, ffn=18944, vocab=152064, family="dream", rope_theta=1e6,
                  norm_eps=1e-6)
TOY = Widths(dim=64, heads=4, kv_heads=4, ffn=128, vocab=512)
TOY_DREAM = Widths(dim=64, heads=4, kv_heads=2, ffn=336, vocab=512, family="dream", rope_theta=1e6, norm_eps=1e-6)


def param_count(w: Widths, layers: int) -> int:
    hd = w.dim // w.heads
    bias = (w.heads + 2 * w.kv_heads) * hd if w.family == "dream" else 0
    block = 2 * w.dim + w.dim * (w.heads + 2 * w.kv_heads) * hd + w.dim * w.dim + 3 * w.dim * w.ffn + bias
    return layers * block + 2 * w.vocab * w.dim + w.dim


def checkpoint_dir(w: Widths, layers: int, override: str | None) -> Path:
    """A fresh directory with room for the checkpoint: `override`, else /dev/shm (RAM, no disk traffic) when it has
    the space, else the temp directory."""
    need = 2 * param_count(w, layers) * 1.1 + 2**27
    candidates = [override] if override else ["/dev/shm", tempfile.gettempdir()]
    for base in candidates:
        if Path(base).is_dir() and shutil.disk_usage(base).free > need:
            return Path(tempfile.mkdtemp(prefix="gpu_check_", dir=base))
    raise RuntimeError(f"no room for a {need / 2**30:.1f} GiB checkpoint in {candidates} (--ckpt-dir)")


@torch.no_grad()
def write_checkpoint(w: Widths, layers: int, path: Path, *, device: torch.device, seed: int) -> Path:
    """Random bf16 LLaDA checkpoint at widths `w` with `layers` blocks, in the official layout, at `path`."""
    tokenizer = make_tokenizer(w.vocab)
    args = model_args(w, layers, mask_id=tokenizer.mask_token_id, eos_id=tokenizer.eos_token_id,
                      pad_id=tokenizer.pad_token_id)
    with torch.device("meta"):
        net = DiffusionLM(args)
    net = net.to(torch.bfloat16).to_empty(device=device)
    random_init_(net, torch.Generator(device=device).manual_seed(seed))
    path.mkdir(parents=True, exist_ok=True)
    export_checkpoint(net.state_dict(), args, path, source_dir=None)
    del net
    config = hf_config_from_args(args, max_sequence_length=4096, torch_dtype="bfloat16")
    (path / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save_pretrained(path)
    return path


@dataclass(frozen=True)
class RunShape:
    """What one run of the checks uses besides the checkpoint (rows are prompts x the config's group size)."""

    prompts: int
    gen: int
    block: int
    steps: int
    mu: int
    lora_r: int | None = None  # None: the config's (official 128, alpha 64)
    lr: float | None = None  # None: the config's (official 3e-6)


def run_config(model_path: Path, shape: RunShape, *, device: torch.device, threads: int) -> RunConfig:
    """configs/sudoku_llada.yaml (bf16, LoRA r 128 on wq/wk/wv/w_up, T = 1 with Gumbel noise in the model dtype,
    teacher_source rollout, micro-batches of 6 rows, activation checkpointing) on one actor and one learner rank on
    `device`, with the checkpoint's own token ids, no chat template (the tokenizer has none) and `shape`."""
    gpus = 0 if device.type == "cpu" else 1
    overrides = [f"model.path={model_path}", "model.mask_token_id=null", "model.eos_token_id=null",
                 "model.chat_template=false", f"sampler.gen_length={shape.gen}", f"sampler.block_length={shape.block}",
                 f"sampler.steps={shape.steps}", "rollout.num_actors=1", f"rollout.prompts_per_step={shape.prompts}",
                 f"rollout.gpus_per_actor={gpus}", f"rollout.torch_threads={threads}", "learner.num_ranks=1",
                 f"learner.gpus_per_rank={gpus}", f"learner.torch_threads={threads}", f"algorithm.mu={shape.mu}",
                 "pipeline.weight_sync_timeout_s=60"]
    if shape.lora_r is not None:
        overrides += [f"model.lora.r={shape.lora_r}", f"model.lora.alpha={shape.lora_r // 2}"]
    if shape.lr is not None:
        overrides.append(f"learner.lr={shape.lr}")
    return load_config(BASE_CONFIG, overrides)
