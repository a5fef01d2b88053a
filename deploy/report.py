"""The end-of-run report of `make run`: the before/after table with standard errors, and one PNG of the run.

  python -m deploy.report RUN_DIR     # the same report for a finished run directory

The standard error of an evaluation's headline metric is `<metric>_se`, the standard deviation of the per-item values
over sqrt(n), which the trainer stores with every evaluation (`metric_se`); for an evaluation without it (an older
run) the report falls back to sqrt(p (1 - p) / n): exact for a 0/1 metric (Countdown accuracy) and an upper bound for
any metric in [0, 1] averaged over items (Sudoku cell accuracy), since such a variable has variance at most p (1 - p).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import yaml

from common.tasks import get_task


def standard_error(p: float, n: int) -> float:
    return math.sqrt(max(p * (1.0 - p), 0.0) / max(n, 1))


def metric_se(rows: list[dict[str, Any]], task: str) -> float | None:
    """Standard error of the task's headline metric over scored rows: each row summarised alone (the task's own
    metric definition), sample standard deviation / sqrt(n). None for fewer than 2 rows (undefined)."""
    t = get_task(task)
    values = [t.summarize([row])[t.metric] for row in rows]
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def _se(res: dict[str, float], metric: str) -> float:
    se = res.get(f"{metric}_se")
    return float(se) if se is not None and math.isfinite(se) else standard_error(res[metric], int(res["n"]))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summary(evals: dict[str, dict[str, float]], metric: str) -> str:
    """Markdown: one row per evaluation (metric ± SE), then the gain of the last over the first in points and in
    units of the standard error of the difference, sqrt(SE_first^2 + SE_last^2)."""
    lines = [f"| model | n | {metric} | ± SE |", "|---|---|---|---|"]
    for name, res in evals.items():
        lines.append(f"| {name} | {res['n']:.0f} | {res[metric]:.3f} | {_se(res, metric):.3f} |")
    if len(evals) >= 2:
        first, last = next(iter(evals.values())), list(evals.values())[-1]
        gain = last[metric] - first[metric]
        # the two evaluations' errors added in quadrature: the SE of the difference of independent evaluations (an
        # upper bound here, where both score the same items and the item difficulty cancels)
        se = math.hypot(_se(first, metric), _se(last, metric))
        lines.append(f"\ngain: {100 * gain:+.1f} points = {gain / se if se else float('inf'):.1f} standard errors "
                     "of the difference (sqrt(SE_before^2 + SE_after^2))")
    return "\n".join(lines)


def busy_shares(records: list[dict[str, Any]]) -> tuple[float, dict[str, float]] | None:
    """(wall seconds of the training loop, each service's busy seconds / wall) from metrics.jsonl. The loop starts
    when the step-0 evaluation was logged (else when the first step began) and ends at the last step; a step logged
    twice (a resumed run) counts once. None for a run without the `busy` records."""
    steps = {r["step"]: r for r in records if "busy" in r}
    if not steps:
        return None
    before = [r["timestamp"] for r in records if r.get("step") == 0 and "eval" in r]
    first = steps[min(steps)]
    start = before[-1] if before else first["timestamp"] - sum(first.get("time", {}).values())
    wall = max(r["timestamp"] for r in steps.values()) - start
    busy: dict[str, float] = {}
    for r in steps.values():
        for name, seconds in r["busy"].items():
            busy[name] = busy.get(name, 0.0) + seconds
    return wall, {name: seconds / wall for name, seconds in busy.items()} if wall > 0 else {}


def busy_line(records: list[dict[str, Any]]) -> str | None:
    """e.g. "busy share of the training loop's 173 s wall time: actor0 85 % (generate 28 %, score 0 %, teacher 57 %),
    learner 96 %"."""
    shares = busy_shares(records)
    if shares is None:
        return None
    wall, share = shares
    actors = sorted({name.split("/")[0] for name in share if "/" in name})
    parts = [f"{a} {100 * sum(v for k, v in share.items() if k.startswith(a + '/')):.0f} % ("
             + ", ".join(f"{k.split('/')[1]} {100 * v:.0f} %" for k, v in share.items() if k.startswith(a + "/"))
             + ")" for a in actors]
    if "learner" in share:
        parts.append(f"learner {100 * share['learner']:.0f} %")
    return f"busy share of the training loop's {wall:.0f} s wall time: " + ", ".join(parts)


def plot(run_dir: Path, metric: str) -> Path | None:
    """run_dir/training.png: training reward per step (and a 5-step mean), the held-out metric at each evaluation,
    and the clamp fraction at the first and the later inner iterations where the loss logs one."""
    records = read_metrics(run_dir)
    steps = [r for r in records if "reward" in r]
    if not steps:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    x = [r["step"] for r in steps]
    y = [r["reward"]["mean"] for r in steps]
    ax1.plot(x, y, ".", alpha=0.4, label="training reward (step)")
    w = 5
    ax1.plot(x[w - 1:], [sum(y[i - w + 1:i + 1]) / w for i in range(w - 1, len(y))],
             label=f"training reward ({w}-step mean)")
    evals = [r for r in records if "eval" in r]
    if evals:
        ax1.errorbar([r["step"] for r in evals], [r["eval"][metric] for r in evals],
                     yerr=[_se(r["eval"], metric) for r in evals], fmt="o-",
                     capsize=3, label=f"held-out {metric} (± SE)")
    ax1.set_xlabel("step")
    ax1.legend()
    ax1.set_title(run_dir.name)
    clamp = [r["learner"].get("clamp_frac") for r in steps]
    if all(isinstance(c, list) and c for c in clamp):
        ax2.plot(x, [c[0] for c in clamp], ".-", label="clamp fraction, inner iteration 1")
        if len(clamp[0]) > 1:
            ax2.plot(x, [sum(c[1:]) / len(c[1:]) for c in clamp], ".-", label="clamp fraction, iterations 2..mu")
        ax2.set_ylim(-0.05, 1.05)
    grad = [r["learner"].get("grad_norm") for r in steps]
    if all(isinstance(g, list) and g for g in grad):
        ax3 = ax2.twinx()
        ax3.plot(x, [g[0] for g in grad], color="gray", alpha=0.5, label="grad norm, iteration 1")
        ax3.set_yscale("log")
        ax3.legend(loc="lower right")
    ax2.set_xlabel("step")
    ax2.legend(loc="upper left")
    fig.tight_layout()
    out = run_dir / "training.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def report(run_dir: str | Path, task: str) -> str:
    """The text `make run` ends with: the table, the gain, and where the plot and the metrics are."""
    run_dir = Path(run_dir)
    metric = get_task(task).metric
    lines = []
    eval_path = run_dir / "eval.json"
    if eval_path.is_file():
        lines.append(summary(json.loads(eval_path.read_text()), metric))
    busy = busy_line(read_metrics(run_dir))
    if busy is not None:
        lines.append(busy)
    png = plot(run_dir, metric)
    lines.append("")
    if png is not None:
        lines.append(f"plot:    {png}")
    lines.append(f"metrics: {run_dir / 'metrics.jsonl'} (one JSON line per step; eval.md / eval.json: the evaluations)")
    if (run_dir / "tensorboard").is_dir():
        lines.append(f"         tensorboard --logdir {run_dir / 'tensorboard'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="before/after table and plot of a finished run directory")
    parser.add_argument("run_dir")
    args = parser.parse_args()
    run_dir = Path(args.run_dir)
    task = yaml.safe_load((run_dir / "config.yaml").read_text())["task"]["name"]
    print(report(run_dir, task))


if __name__ == "__main__":
    main()
