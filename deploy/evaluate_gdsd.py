"""The official GDSD evaluation (GaryBall/GDSD eval/eval.py + eval/parse_and_get_acc.py) for any local model directory.

  python -m deploy.evaluate --protocol gdsd MODEL_DIR TASK [--config C] [--limit N] [key=value ...]

Exactly as the official scripts: the task's test set (data/, or task.test_path), `num_items` items drawn with
`np.random.seed(42); np.random.choice(n, num_items, replace=False)` (all 256 Countdown rows, 256 of the 500 Sudoku
puzzles); GDSD's evaluation prompt through the tokenizer's chat template and "<reasoning>" prefilled (whatever the
config's task.prompt_format; only --prompt-format changes it, and the result says so); greedy, steps = gen_length / 2,
block 32, the sampler of the checkpoint's family as eval.py picks it by model (config.json `model_type`, or
model.family: LLaDA's generate, or Dream's diffusion_generate with alg entropy and the inherited top_k 50;
`ModelFamily.sampler` in common/families.py; the config's sampler settings do not apply); every gen length of the
protocol (Sudoku 128 and 256, Countdown 128); the completion decoded whole with special tokens, parsed and scored by the
task's official parser; the metric micro-averaged (Sudoku: correct cells / empty cells). Batch size 1 as run_eval.sh (no
padding) unless --batch-size says otherwise. Runs in this process on one device (no Ray): it is a measurement, not a
service."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actors.sampling import sample
from common.config import RunConfig, SamplerConfig
from common.denoiser import load_denoiser
from common.families import get_family
from common.messages import PromptItem
from common.tasks import Task, get_task
from common.tokenize import encode_prompts

OFFICIAL_SEED = 42  # eval/eval.py init_seed(42) before the dataset draws its subsample
OFFICIAL_BLOCK = 32


def official_items(task: Task, *, test_path: str | None, prompt_format: str) -> list[PromptItem]:
    """The protocol's test items in the official order (numpy RandomState(42).choice without replacement)."""
    if task.official is None:
        raise SystemExit(f"--protocol gdsd: task {task.name!r} has no official evaluation in the GDSD repository's "
                         "eval/ (GSM8K and MATH are evaluated with lm-eval there); use the config protocol")
    path = test_path or task.default_test_path
    if not path or not Path(path).is_file():
        raise SystemExit(f"--protocol gdsd: test set {path!r} not found (task.test_path=FILE, or data/ in the clone)")
    items = task.load_test(path, prompt_format)
    n = task.official.num_items
    if n > len(items):
        raise SystemExit(f"--protocol gdsd: {path} has {len(items)} items, the protocol draws {n}")
    order = np.random.RandomState(OFFICIAL_SEED).choice(len(items), n, replace=False)
    return [items[i] for i in order]


def protocol_sampler(family: str, gen_length: int, *, logits_budget_mb: float | None = None) -> SamplerConfig:
    """Greedy, steps = gen_length / 2, block 32 (the completion when shorter), the family's official sampler as
    eval/eval.py runs it (it picks by model; `ModelFamily.sampler` in common/families.py, docs/recipe.md sections
    2-4 and 7)."""
    try:
        official = get_family(family).sampler
    except ValueError as err:
        raise SystemExit(f"--protocol gdsd: no official sampler: {err}") from None
    budget = {} if logits_budget_mb is None else {"logits_budget_mb": logits_budget_mb}
    return SamplerConfig(gen_length=gen_length, steps=max(gen_length // 2, 1), temperature=0.0,
                         block_length=min(OFFICIAL_BLOCK, gen_length), **official, **budget)


def describe(family: str, sampler: SamplerConfig) -> str:
    """One line saying which sampler the protocol ran and why."""
    what = get_family(family).sampler_name
    keys = ["schedule", "remasking", "top_k", "draw_mask", "confidence_dtype"]
    return (f"sampler: {what} as the official evaluation runs it for a {family} checkpoint (from config.json "
            f"model_type / model.family): " + ", ".join(f"{k}={getattr(sampler, k)}" for k in keys))


def evaluate_protocol(cfg: RunConfig, model_dir: str, task_name: str, *, limit: int | None = None,
                      batch_size: int = 1, gen_lengths: list[int] | None = None,
                      device: str = "cpu") -> list[dict[str, Any]]:
    """One result per gen length: {task, model, gen_length, steps, block_length, n, correct, total, metric, value,
    seconds, generations}."""
    task = get_task(task_name)
    items = official_items(task, test_path=cfg.task.test_path, prompt_format=cfg.task.prompt_format)
    items = items[:limit] if limit else items
    den = load_denoiser(cfg.model, model_dir, device=device)
    family = den.net.args.family  # config.json model_type, or model.family
    template = bool(getattr(den.tokenizer, "chat_template", None))  # the official eval always applies it
    results = []
    for gen in gen_lengths or list(task.official.gen_lengths):
        sampler = protocol_sampler(family, gen, logits_budget_mb=cfg.sampler.logits_budget_mb)
        correct = total = 0
        generations = []
        start = time.perf_counter()
        for lo in range(0, len(items), batch_size):
            batch = items[lo:lo + batch_size]
            ids, lens = encode_prompts(den.tokenizer, [it.prompt for it in batch], chat_template=template,
                                    systems=[it.system for it in batch], prefills=[it.prefill for it in batch])
            out = sample(den, ids.to(den.device), sampler, prompt_len=lens)  # pads masked out of attention
            for it, row in zip(batch, out.completion_ids.cpu()):
                text = den.tokenizer.decode(row.tolist(), skip_special_tokens=False)  # whole, as batch_decode
                c, t = task.official.score(text, it)
                correct, total = correct + c, total + t
                generations.append({"uid": it.uid, "prompt": it.prompt, "generation": text, "correct": c,
                                    "total": t})
        results.append({"task": task.name, "model": model_dir, "gen_length": gen, "steps": sampler.steps,
                        "block_length": sampler.block_length, "schedule": sampler.schedule, "family": family,
                        "sampler": describe(family, sampler), "prompt_format": cfg.task.prompt_format,
                        "n": len(items),
                        "correct": correct, "total": total, "metric": task.official.metric,
                        "value": correct / max(total, 1), "seconds": time.perf_counter() - start,
                        "generations": generations})
    return results


def table(results: list[dict[str, Any]]) -> str:
    """The paper's table row(s): accuracy in percent, one row per gen length; above them the sampler used, and a
    warning when the prompts are not GDSD's."""
    lines = sorted({r["sampler"] for r in results})
    lines += [f"prompts: {f!r} (--prompt-format), NOT the official GDSD prompts" for f in
              sorted({r["prompt_format"] for r in results}) if f != "gdsd"]
    lines += ["| task | model | gen | steps | block | n | metric | % |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['task']} | {r['model']} | {r['gen_length']} | {r['steps']} | {r['block_length']} | "
                     f"{r['n']} | {r['metric']} | {100 * r['value']:.2f} |")
    return "\n".join(lines)


def write(results: list[dict[str, Any]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))


def device_default() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
