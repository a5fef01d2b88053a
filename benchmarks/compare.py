"""GDSD vs the ELBO baselines at small scale, through the real Ray job (one `deploy.job` process per run).

  python -m benchmarks.compare [--quick] [--seeds 0,1,2] [--algorithms gdsd,gdsd_tlc,espo,diffu_grpo,spg,wd1]
                               [--steps 40]

Every run starts from the same SFT checkpoint (shared `cache_dir`), sees the same prompts (same task.seed, the same
prompts_per_step x group_size x steps rollout budget) and differs only in `algorithm.*` and the sampling seed.
Writes runs/compare/<alg>-s<seed>/ per run, and docs/results.md + docs/reward_curves.png + docs/test_accuracy.png.
A finished run whose saved config equals the one this command would run is reused, not trained again (--no-reuse to
force), so adding seeds or methods to an earlier comparison only trains what is new.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common.algorithms import ALGORITHMS

# Each method at its official settings (common/algorithms.py; task-specific ones, e.g. SPG's Sudoku eubo_beta, are
# applied for the compared task in main); the rollout budget is shared. wd1 reuses d1's one-step estimate,
# ratio-free and without a KL term.
METHODS = {name: spec.overrides() for name, spec in ALGORITHMS.items() if spec.trainable}


def finished(run_dir: Path, config: str, overrides: list[str]) -> bool:
    """True when run_dir holds a complete run (eval.json with the evaluation after training) of exactly this
    resolved config.

    The saved config goes through today's schema and validation first, so a field added since (at its default) does
    not count as a difference."""
    import yaml

    from common.config import ConfigError, build_config, load_config

    saved, evals = run_dir / "config.yaml", run_dir / "eval.json"
    if not evals.is_file() or not saved.is_file():
        return False
    if not any(name.startswith("after") for name in json.loads(evals.read_text())):
        return False  # stopped after the evaluation before training (eval.json is written at each evaluation)
    from deploy.run_dir import resolve_paths  # the job saves run_dir / cache_dir as absolute paths (older runs: not)

    wanted = resolve_paths(load_config(config, overrides)).model_dump(mode="json")
    try:
        return resolve_paths(build_config(yaml.safe_load(saved.read_text()))).model_dump(mode="json") == wanted
    except ConfigError:  # a config today's rules reject (e.g. an older run setting a key its algorithm ignores)
        return False


def run_one(method: str, seed: int, *, config: str, steps: int, out: Path, extra: list[str], reuse: bool,
            method_overrides: list[str] | None = None) -> dict:
    """Train (or reuse) out/<method>-s<seed> with `method_overrides` (default: METHODS[method]) + `extra`; returns
    its per-step training rewards and the evaluations before / after."""
    run_dir = out / f"{method}-s{seed}"
    chosen = METHODS[method] if method_overrides is None else method_overrides
    overrides = [f"seed={seed}", f"steps={steps}", f"run_dir={run_dir}", *chosen, *extra]
    log_path = out / f"{method}-s{seed}.log"
    reused = reuse and finished(run_dir, config, overrides)
    start = time.perf_counter()
    if not reused:
        with open(log_path, "w") as log:
            # --overwrite: an unfinished or differently configured earlier run in run_dir is started again
            proc = subprocess.run([sys.executable, "-m", "deploy.job", "--overwrite", "--config", config, *overrides],
                                  stdout=log, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            return {"method": method, "seed": seed, "ok": False, "seconds": time.perf_counter() - start,
                    "log": str(log_path)}
    seconds = time.perf_counter() - start
    rewards = [json.loads(line)["reward"]["mean"] for line in open(run_dir / "metrics.jsonl")
               if '"reward"' in line and '"eval"' not in line]
    evals = json.loads((run_dir / "eval.json").read_text())
    before, after = (v for k, v in evals.items() if k.startswith("before")), (v for k, v in evals.items()
                                                                               if k.startswith("after"))
    return {"method": method, "seed": seed, "ok": True, "reused": reused, "seconds": seconds, "rewards": rewards,
            "before": next(before), "after": next(after)}


KEEP_FROM = "<!-- kept by benchmarks.compare: everything below is written elsewhere -->"


def kept_sections(path: Path) -> str:
    """What results.md holds from the KEEP_FROM marker on (the mechanism study, written by benchmarks.mechanism, and
    hand-written analysis), so that regenerating the comparison table does not drop it."""
    text = path.read_text() if path.is_file() else ""
    return "\n" + text[text.index(KEEP_FROM):] if KEEP_FROM in text else ""


def replace_between(text: str, begin: str, end: str, section: str) -> str | None:
    """`text` with the part from `begin` to `end` (markers included) replaced by `section`; None without the markers.
    The generated sections of docs/results.md (the mechanism and eps studies) replace only themselves this way."""
    if begin not in text:
        return None
    return text[:text.index(begin)] + section + text[text.index(end) + len(end):]


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error over seeds (0 for a single seed)."""
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return statistics.mean(values), se


def plot(results: list[dict], docs: Path, metric: str, task: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for method in METHODS:
        runs = [r["rewards"] for r in results if r["method"] == method and r["ok"]]
        if not runs:
            continue
        n = min(map(len, runs))
        mean = [statistics.mean(r[i] for r in runs) for i in range(n)]
        ax.plot(range(1, n + 1), mean, label=f"{method} ({len(runs)} seeds)")
        if len(runs) > 1:
            ax.fill_between(range(1, n + 1), [min(r[i] for r in runs) for i in range(n)],
                            [max(r[i] for r in runs) for i in range(n)], alpha=0.2)
    ax.set(xlabel="step", ylabel="mean training reward", title=f"Reward during RL ({task}, tiny dLLM)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(docs / "reward_curves.png", dpi=120)

    fig, ax = plt.subplots(figsize=(7, 4))
    names = [m for m in METHODS if any(r["method"] == m and r["ok"] for r in results)]
    after = [statistics.mean(r["after"][metric] for r in results if r["method"] == m and r["ok"]) for m in names]
    start = statistics.mean(r["before"][metric] for r in results if r["ok"])
    ax.bar(names, after, color="tab:blue")
    ax.axhline(start, color="gray", linestyle="--", label=f"SFT start ({start:.3f})")
    ax.set(ylabel=f"test {metric}", title="Held-out accuracy after RL (greedy)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(docs / "test_accuracy.png", dpi=120)


def report(results: list[dict], docs: Path, *, command: str, metric: str, wall: float, task: str) -> str:
    lines = [f"# GDSD vs ELBO baselines on the tiny dLLM ({task}, CPU)", "",
             f"Command: `{command}`  ", f"Hardware: {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, no GPU  ",
             f"Wall time: {wall / 60:.1f} min for the {sum(not r.get('reused') for r in results)} runs trained by this "
             f"command; {sum(bool(r.get('reused')) for r in results)} finished runs of the same config were reused", "",
             f"Test {metric}: greedy decoding on held-out prompts, mean ± standard error over seeds. Final train "
             "reward: mean of the last 5 steps.", "",
             f"| method | seeds | test {metric} before | after | gain | per seed | final train reward |",
             "|---|---|---|---|---|---|---|"]
    for method in METHODS:
        runs = [r for r in results if r["method"] == method]
        if not runs:  # not compared by this command (--algorithms)
            continue
        ok = [r for r in runs if r["ok"]]
        if not ok:
            lines.append(f"| {method} | 0/{len(runs)} failed | | | | | |")
            continue
        before = statistics.mean(r["before"][metric] for r in ok)
        after = [r["after"][metric] for r in ok]
        (a_mean, a_se), (g_mean, g_se) = mean_se(after), mean_se([a - r["before"][metric] for a, r in zip(after, ok)])
        f_mean, f_se = mean_se([statistics.mean(r["rewards"][-5:]) for r in ok])
        lines.append(f"| {method} | {len(ok)} | {before:.3f} | {a_mean:.3f} ± {a_se:.3f} | {g_mean:+.3f} ± {g_se:.3f} "
                     f"| {', '.join(f'{a:.3f}' for a in after)} | {f_mean:.3f} ± {f_se:.3f} |")
    lines += ["", "![reward curves](reward_curves.png)", "", "![test accuracy](test_accuracy.png)", ""]
    text = "\n".join(lines)
    (docs / "results.md").write_text(text + kept_sections(docs / "results.md"))
    (docs / "results.json").write_text(json.dumps(results, indent=1))
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/sudoku_tiny.yaml")
    parser.add_argument("--quick", action="store_true", help="1 seed, 15 steps, 32 eval prompts (a few minutes)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--algorithms", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--docs", default="docs")
    parser.add_argument("--no-reuse", dest="reuse", action="store_false", help="train every run again")
    parser.add_argument("overrides", nargs="*", help="extra key=value for every run")
    args = parser.parse_args()
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    steps = 15 if args.quick else args.steps
    extra = (["eval.num_prompts=32"] if args.quick else []) + args.overrides
    out, docs = Path(args.out), Path(args.docs)
    out.mkdir(parents=True, exist_ok=True)
    docs.mkdir(parents=True, exist_ok=True)
    from common.config import load_config
    from common.tasks import get_task

    task = load_config(args.config).task.name
    metric = get_task(task).metric  # the task's headline metric (cell_accuracy for Sudoku, accuracy otherwise)
    start = time.perf_counter()
    results = []
    for seed in seeds:
        for method in args.algorithms.split(","):
            results.append(run_one(method, seed, config=args.config, steps=steps, out=out, extra=extra,
                                   reuse=args.reuse, method_overrides=ALGORITHMS[method].overrides(task)))
            print(json.dumps({k: v for k, v in results[-1].items() if k != "rewards"}), flush=True)
    plot(results, docs, metric, task)
    command = "python -m benchmarks.compare " + " ".join(sys.argv[1:])
    print(report(results, docs, command=command, metric=metric, wall=time.perf_counter() - start, task=task))


if __name__ == "__main__":
    main()
