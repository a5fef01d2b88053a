"""Greedy evaluation on held-out prompts through the rollout actors; a markdown table and JSON in the run dir.

  python -m deploy.evaluate --config configs/sudoku_tiny.yaml model.path=runs/sudoku_tiny/final [--grid]

Accuracy: Sudoku, the fraction of originally empty cells solved (the paper's metric) and the fraction of puzzles
fully solved; Countdown, the fraction of correct expressions. The paper's test sets are read when `task.test_path`
is given (../shared/data/...).
"""
from __future__ import annotations

from common import cluster

cluster.local_env()  # before anything imports ray (common/cluster.py)
# ruff: noqa: E402

import argparse
import json
from pathlib import Path
from typing import Any

from common.config import EvalConfig, RunConfig, SamplerConfig, load_config
from common.messages import PromptItem
from common.tasks import countdown, make_prompts, sudoku


def eval_sampler(cfg: RunConfig, ecfg: EvalConfig | None = None) -> SamplerConfig:
    """Official evaluation: temperature 0, steps = gen_len / 2, block 32 (our block when the completion is shorter)."""
    ecfg = ecfg or cfg.eval
    gen = ecfg.gen_length or cfg.sampler.gen_length
    block = ecfg.block_length or min(cfg.sampler.block_length, gen)
    steps = ecfg.steps or max(gen // 2, gen // block)
    return SamplerConfig(gen_length=gen, steps=steps, block_length=block, temperature=0.0,
                         remasking=cfg.sampler.remasking)


def eval_prompts(cfg: RunConfig) -> list[PromptItem]:
    if cfg.task.test_path:
        if cfg.task.name == "sudoku":
            items = sudoku.load_csv(cfg.task.test_path, cfg.task.prompt_format)
        else:
            items = countdown.load_jsonl(cfg.task.test_path, cfg.task.prompt_format)
        return items[: cfg.eval.num_prompts or None]
    return make_prompts(task=cfg.task.name, prompt_format=cfg.task.prompt_format, split="test",
                        num=cfg.eval.num_prompts, seed=cfg.task.seed)


def summarize(rows: list[dict[str, Any]], task: str) -> dict[str, float]:
    n = max(len(rows), 1)
    out = {"n": len(rows), "reward": sum(r["reward"] for r in rows) / n,
           "errors": sum(r["error"] is not None for r in rows)}
    if task == "sudoku":
        out["cell_accuracy"] = sum(r["parts"].get("sudoku", r["reward"]) for r in rows) / n
        out["solved"] = sum(r["parts"].get("sudoku", r["reward"]) >= 1.0 for r in rows) / n
    else:
        out["accuracy"] = sum(r["reward"] >= 1.0 for r in rows) / n
    return out


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    keys = [k for k in next(iter(results.values())) if k != "n"]
    lines = ["| model | n | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for name, res in results.items():
        lines.append(f"| {name} | {res['n']} | " + " | ".join(f"{res[k]:.3f}" for k in keys) + " |")
    return "\n".join(lines)


def main() -> None:
    from deploy.fleet import RolloutFleet

    parser = argparse.ArgumentParser(description="Greedy evaluation of a local model directory")
    parser.add_argument("--config", default=None)
    parser.add_argument("--grid", action="store_true", help="gen_length x steps grid (block from config)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
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
