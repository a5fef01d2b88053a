"""Greedy evaluation on held-out prompts; a markdown table and JSON.

  python -m deploy.evaluate --config configs/sudoku_tiny.yaml model.path=runs/sudoku_tiny/final [--grid]
  python -m deploy.evaluate --protocol gdsd MODEL_DIR TASK [--config C] [--limit N] [key=value ...]

The default protocol runs through the rollout actors and scores with the training reward; each task's metrics come
from its Task record (common/tasks), e.g. Sudoku cell accuracy and puzzles solved, Countdown accuracy. The paper's
test set is read when `task.test_path` is given (data/...), else the generated test split.
`--protocol gdsd` reproduces the official GDSD evaluation instead (deploy/evaluate_gdsd.py) and prints the paper's
table row.
"""
from __future__ import annotations

from common import cluster

cluster.local_env()  # before anything imports ray (common/cluster.py)
# ruff: noqa: E402

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from common.config import EvalConfig, RunConfig, SamplerConfig, load_config
from common.messages import PromptItem
from common.tasks import get_task, make_prompts


def eval_sampler(cfg: RunConfig, ecfg: EvalConfig | None = None) -> SamplerConfig:
    """Official evaluation: temperature 0, steps = gen_len / 2, block 32 (our block when the completion is shorter)."""
    ecfg = ecfg or cfg.eval
    gen = ecfg.gen_length or cfg.sampler.gen_length
    block = ecfg.block_length or min(cfg.sampler.block_length, gen)
    steps = ecfg.steps or max(gen // 2, gen // block)
    return SamplerConfig(gen_length=gen, steps=steps, block_length=block, temperature=0.0,
                         remasking=cfg.sampler.remasking, schedule=cfg.sampler.schedule, top_k=cfg.sampler.top_k,
                         draw_mask=cfg.sampler.draw_mask, confidence_dtype=cfg.sampler.confidence_dtype,
                         logits_budget_mb=cfg.sampler.logits_budget_mb)


def eval_prompts(cfg: RunConfig) -> list[PromptItem]:
    if cfg.task.test_path:
        items = get_task(cfg.task.name).load_test(cfg.task.test_path, cfg.task.prompt_format)
        return items[: cfg.eval.num_prompts or None]
    return make_prompts(task=cfg.task.name, prompt_format=cfg.task.prompt_format, split="test",
                        num=cfg.eval.num_prompts, seed=cfg.task.seed, source=cfg.task.source)


def summarize(rows: list[dict[str, Any]], task: str) -> dict[str, float]:
    """The task's own metrics of scored rows (Task.summarize)."""
    return get_task(task).summarize(rows)


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    keys = [k for k in next(iter(results.values())) if k != "n"]
    lines = ["| model | n | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for name, res in results.items():
        lines.append(f"| {name} | {res['n']} | " + " | ".join(f"{res[k]:.3f}" for k in keys) + " |")
    return "\n".join(lines)


def main_gdsd(args: argparse.Namespace) -> None:
    from deploy.evaluate_gdsd import device_default, evaluate_protocol, table, write

    if len(args.overrides) < 2 or "=" in args.overrides[0] or "=" in args.overrides[1]:
        raise SystemExit("usage: python -m deploy.evaluate --protocol gdsd MODEL_DIR TASK [key=value ...]")
    model_dir, task, overrides = args.overrides[0], args.overrides[1], args.overrides[2:]
    # the protocol's prompts are GDSD's evaluation prompts, whatever the config says; only --prompt-format (an
    # explicit deviation, e.g. the tiny model's short prompts) changes them, and the table says so
    given = load_config(args.config, [f"task.name={task}", *overrides]).task.prompt_format
    prompt_format = args.prompt_format or "gdsd"
    if given != prompt_format and not args.prompt_format:
        print(f"--protocol gdsd: task.prompt_format={given} (from the config) replaced by gdsd, the official prompts",
              file=sys.stderr)
    cfg = load_config(args.config, [f"task.name={task}", *overrides, f"task.prompt_format={prompt_format}"])
    gens = [int(g) for g in args.gen_lengths.split(",")] if args.gen_lengths else None
    results = evaluate_protocol(cfg, model_dir, task, limit=args.limit, batch_size=args.batch_size,
                                gen_lengths=gens, device=args.device or device_default())
    if args.out:
        write(results, Path(args.out))
    print(table(results))


def main() -> None:
    from deploy.fleet import RolloutFleet

    parser = argparse.ArgumentParser(description="Greedy evaluation of a local model directory")
    parser.add_argument("--config", default=None)
    parser.add_argument("--protocol", choices=["config", "gdsd"], default="config",
                        help="config: the run's eval settings through the rollout actors; gdsd: the official "
                        "GDSD evaluation (positional MODEL_DIR TASK)")
    parser.add_argument("--grid", action="store_true", help="gen_length x steps grid (block from config)")
    parser.add_argument("--limit", type=int, default=None, help="gdsd: only the first N protocol items (smoke runs)")
    parser.add_argument("--batch-size", type=int, default=1, help="gdsd: rows per sampler call (official: 1)")
    parser.add_argument("--gen-lengths", default=None, help="gdsd: comma-separated, instead of the protocol's")
    parser.add_argument("--prompt-format", default=None, help="gdsd: instead of GDSD's prompts (e.g. compact, tiny "
                        "model); the table marks the result as not the official prompts")
    parser.add_argument("--device", default=None, help="gdsd: torch device (default cuda when available)")
    parser.add_argument("--out", default=None, help="gdsd: write results and generations as JSON here")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.protocol == "gdsd":
        main_gdsd(args)
        return
    cfg = load_config(args.config, args.overrides)
    if not cfg.model.path:
        raise SystemExit("model.path=DIR is required (a local HF directory, e.g. runs/<run>/final)")
    cluster.init_ray(address=cfg.cluster.address, num_cpus=cfg.cluster.num_cpus)
    fleet = RolloutFleet(cfg, cfg.model.path)
    prompts = eval_prompts(cfg)
    gen = cfg.eval.gen_length or cfg.sampler.gen_length
    grid = [(g, s) for g in (gen, 2 * gen) for s in (g // 2, g)] if args.grid else [(gen, None)]
    results = {}
    for g, s in grid:
        block = min(cfg.eval.block_length or cfg.sampler.block_length, g)
        sampler = eval_sampler(cfg, cfg.eval.model_copy(update={"gen_length": g, "steps": s, "block_length": block}))
        name = f"gen{sampler.gen_length}/steps{sampler.steps}/block{sampler.block_length}"
        results[name] = summarize(fleet.evaluate(prompts, sampler), cfg.task.name)
    table = markdown_table(results)
    out = Path(cfg.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval_grid.md").write_text(table + "\n")
    (out / "eval_grid.json").write_text(json.dumps(results, indent=1))
    print(table)
    fleet.shutdown()


if __name__ == "__main__":
    main()
