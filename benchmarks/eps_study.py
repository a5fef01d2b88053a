"""Issue 24's pre-registered comparison: is GDSD's ε meant per token? (docs/results.md, "Is ε per token?").

  python -m benchmarks.eps_study [--tasks countdown,sudoku] [--seeds 0,1,2,3,4] [--steps 20] [--jobs 2]
                                 [--out runs/eps_study] [--docs docs]

Arms (each method's official settings from common/algorithms.py otherwise): gdsd with ε = 4e-4 on the sequence sum
(official), gdsd with ε = 4e-4 per token (`algorithm.eps_scope=token`), gdsd with ε = 1e-1 on the sum (the mechanism
study's best Countdown arm), espo (official μ) and diffu_grpo. The same SFT starts, tasks and lr as the mechanism study
(benchmarks/mechanism.py TASKS; the Countdown start is the shipped output of its command, data/starts/); 128 held-out
items per evaluation. Primary metric: held-out accuracy after minus before, paired by seed.
Decision rule (fixed before the runs): token-ε "helps" when its paired gain over the official arm is at least 2 SE
above 0 on Countdown and not 2 SE or more below 0 on Sudoku.

Runs go through the real Ray job (benchmarks.compare.run_one via mechanism.run_all); a finished run of the same
resolved config is reused, so an interrupted study resumes where it stopped. Writes runs/eps_study/<task>/,
docs/eps_study.json, docs/eps_study.png and the section of docs/results.md between the EPS markers.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from benchmarks.compare import mean_se, replace_between
from benchmarks.mechanism import TASKS as STUDY_TASKS
from benchmarks.mechanism import fmt, run_all
from common.algorithms import ALGORITHMS
from common.machine import cpu_name

GDSD = ALGORITHMS["gdsd"].overrides()
ARMS = {  # run name -> (label, overrides); later overrides win
    "gdsd_seq": ("gdsd, ε 4e-4 on the sum (official)", GDSD),
    "gdsd_tok": ("gdsd, ε 4e-4 per token", [*GDSD, "algorithm.eps_scope=token"]),
    "gdsd_seq1e-1": ("gdsd, ε 1e-1 on the sum", [*GDSD, "algorithm.eps=0.1"]),
    "espo": ("espo (official)", ALGORITHMS["espo"].overrides()),
    "diffu_grpo": ("diffu_grpo (official)", ALGORITHMS["diffu_grpo"].overrides()),
}
# The mechanism study's starts. Countdown: the output of its start's command (configs/countdown_tiny.yaml,
# sft.steps=1500) shipped in data/starts/ -- the same recipe, identical on every machine, no 13-min build.
TASKS = {"sudoku": STUDY_TASKS["sudoku"],
         "countdown": ("configs/countdown_tiny.yaml",
                       ["model.path=data/starts/countdown_tiny_sft1500", "sft.enabled=false"])}
OFFICIAL, TOKEN = "gdsd_seq", "gdsd_tok"
COMMON = ["eval.num_prompts=128", "checkpoint.export_hf=false", "learner.log_param_delta=true"]
SE_RULE = 2.0
EPS_BEGIN, EPS_END = "<!-- EPS: begin (benchmarks.eps_study) -->", "<!-- EPS: end -->"


def paired(rows: list[dict], task: str, arm: str, base: str | None = None) -> list[float]:
    """Per seed: the arm's held-out gain (after − before), minus the `base` arm's gain of the same seed if given.
    Seeds where either run failed are left out (and show in the table's run count)."""
    def gains(name: str) -> dict[int, float]:
        return {r["seed"]: r["after"] - r["before"] for r in rows
                if r["task"] == task and r["name"] == name and r.get("ok")}
    mine = gains(arm)
    if base is None:
        return [mine[s] for s in sorted(mine)]
    other = gains(base)
    return [mine[s] - other[s] for s in sorted(mine) if s in other]


def decide(countdown: list[float], sudoku: list[float]) -> tuple[str, str]:
    """The pre-registered rule on the paired differences token − official (per seed). Returns (verdict, reason)."""
    if len(countdown) < 2 or len(sudoku) < 2:
        return "undecided", "fewer than 2 paired seeds on a task"
    (c, c_se), (s, s_se) = mean_se(countdown), mean_se(sudoku)
    helps_countdown = c > 0 and c >= SE_RULE * c_se
    hurts_sudoku = s < 0 and -s >= SE_RULE * s_se
    reason = (f"Countdown {c:+.3f} ± {c_se:.3f} ({'≥' if helps_countdown else '<'} {SE_RULE:g} SE above 0), "
              f"Sudoku {s:+.3f} ± {s_se:.3f} ({'≥' if hurts_sudoku else '<'} {SE_RULE:g} SE below 0)")
    return ("helps" if helps_countdown and not hurts_sudoku else "does not help"), reason


def arm_table(rows: list[dict], task: str) -> list[str]:
    lines = ["| arm | runs ok | gain after − before (mean ± SE) | per seed | vs official, paired | "
             "clamp / clip fraction per j | KL max (k2; diffu_grpo: per-token k3) | relapses |",
             "|---|---|---|---|---|---|---|---|"]
    for name, (label, _) in ARMS.items():
        runs = [r for r in rows if r["task"] == task and r["name"] == name]
        ok = [r for r in runs if r.get("ok")]
        if not ok:
            lines.append(f"| {label} | 0/{len(runs)} | | | | | | |")
            continue
        gain = paired(rows, task, name)
        g, g_se = mean_se(gain)
        vs = "" if name == OFFICIAL else "{:+.3f} ± {:.3f}".format(*mean_se(paired(rows, task, name, OFFICIAL) or [0]))
        mu = len(ok[0]["by_j"][ok[0]["frac_key"]])
        frac = [statistics.mean(r["by_j"][r["frac_key"]][j] for r in ok) for j in range(mu)]
        lines.append(f"| {label} | {len(ok)}/{len(runs)} | {g:+.3f} ± {g_se:.3f} | {fmt(gain, 3)} | {vs} "
                     f"| {fmt(frac)} | {max(r['kl_max'] for r in ok):.3g} | {sum(r['dips'] for r in ok)} |")
    return lines


def run_seconds(run_dir: Path) -> float | None:
    """How long a run took, from its run directory: config.yaml is written when the job starts, eval.json last
    rewritten by the evaluation after training. A reused run's own timing is 0, so the study's time is summed from
    these (None for a run without both files)."""
    saved, evals = run_dir / "config.yaml", run_dir / "eval.json"
    if not (saved.is_file() and evals.is_file()):
        return None
    return os.path.getmtime(evals) - os.path.getmtime(saved)


def time_line(rows: list[dict], *, wall: float, jobs: int, machine: str) -> str:
    """The study's time: summed over the runs (a resumed invocation reuses most of them), and on which CPU."""
    times = [r["run_seconds"] for r in rows if r.get("run_seconds") is not None]
    trained = sum(not r.get("reused") for r in rows)
    if not times:
        return f"Wall time of this invocation: {wall / 60:.1f} min ({trained} runs trained)."
    total = sum(times)
    return (f"Time: {len(times)} runs of {min(times):.0f}-{max(times):.0f} s each, {total / 3600:.1f} h of run time "
            f"in all (from the run directories' timestamps), i.e. about {total / jobs / 3600:.1f} h of wall time with "
            f"{jobs} runs at a time on {machine} (the machine that wrote this section); this invocation: "
            f"{wall / 60:.1f} min, {trained} runs trained, {len(rows) - trained} reused.")


def plot(rows: list[dict], docs: Path) -> str:
    """docs/eps_study.png: per task (rows), the held-out gain of every seed and its mean ± SE per arm, the clamp /
    clip fraction per inner iteration, and the training reward per step (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(len(tasks), 3, figsize=(16, 4.2 * len(tasks)), squeeze=False)
    for ax_row, task in zip(axes, tasks):
        for x, (name, (label, _)) in enumerate(ARMS.items()):
            ok = [r for r in rows if r["task"] == task and r["name"] == name and r.get("ok")]
            if not ok:
                continue
            gain = paired(rows, task, name)
            g, g_se = mean_se(gain)
            line = ax_row[0].errorbar([x], [g], yerr=[g_se], fmt="s", capsize=4, label=label)
            ax_row[0].scatter([x + 0.15] * len(gain), gain, s=12, color=line[0].get_color(), alpha=0.6)
            mu = len(ok[0]["by_j"][ok[0]["frac_key"]])
            ax_row[1].plot(range(1, mu + 1), [statistics.mean(r["by_j"][r["frac_key"]][j] for r in ok)
                                              for j in range(mu)], "o-", label=label)
            n = min(len(r["rewards"]) for r in ok)
            ax_row[2].plot(range(1, n + 1), [statistics.mean(r["rewards"][i] for r in ok) for i in range(n)],
                           label=label)
        ax_row[0].axhline(0, color="grey", lw=0.8)
        ax_row[0].set(xticks=range(len(ARMS)), xticklabels=list(ARMS), ylabel="held-out after − before",
                      title=f"{task}: gain per seed, mean ± SE")
        ax_row[0].tick_params(axis="x", labelsize=7)
        ax_row[1].set(xlabel="inner iteration j", ylabel="clamp (GDSD) / clip fraction", title="silenced share")
        ax_row[2].set(xlabel="step", ylabel="mean training reward (over seeds)", title="training reward")
    axes[0][2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(docs / "eps_study.png", dpi=100)
    plt.close(fig)
    return "eps_study.png"


def write_section(docs: Path, rows: list[dict], *, command: str, wall: float, steps: int, jobs: int = 2,
                  machine: str | None = None) -> str:
    verdict, reason = decide(paired(rows, "countdown", TOKEN, OFFICIAL), paired(rows, "sudoku", TOKEN, OFFICIAL))
    image = plot(rows, docs)
    lines = [EPS_BEGIN, "", "### Results (written by `benchmarks/eps_study.py`)", "", f"Command: `{command}`  ",
             time_line(rows, wall=wall, jobs=jobs, machine=machine or cpu_name()) + f" {steps} steps per run.", "",
             f"**Decision (pre-registered rule): token-ε {verdict}** — {reason}.", ""]
    for task in dict.fromkeys(r["task"] for r in rows):
        lines += [f"**{task}** (`{TASKS[task][0]}`" + "".join(f", `{o}`" for o in TASKS[task][1]) + ")", "",
                  *arm_table(rows, task), ""]
    lines += [f"![gain per seed, clamp fraction per inner iteration, training reward]({image})", "", EPS_END]
    section = "\n".join(lines)
    path = docs / "results.md"
    text = path.read_text() if path.is_file() else ""
    replaced = replace_between(text, EPS_BEGIN, EPS_END, section)
    path.write_text(replaced if replaced is not None else text.rstrip("\n") + "\n\n" + section + "\n")
    (docs / "eps_study.json").write_text(json.dumps(rows, indent=1))
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="countdown,sudoku")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2, help="Ray jobs at a time")
    parser.add_argument("--out", default="runs/eps_study")
    parser.add_argument("--docs", default="docs")
    args = parser.parse_args()
    from common.tasks import get_task

    tasks, seeds = args.tasks.split(","), [int(s) for s in args.seeds.split(",")]
    jobs = [(t, name, s, ARMS[name][1], get_task(t).metric) for t in tasks for s in seeds
            for name in args.arms.split(",")]
    start = time.perf_counter()
    rows = run_all(jobs, steps=args.steps, out=Path(args.out), parallel=args.jobs, common=COMMON,
                   tasks=TASKS)
    rows = [{**row, "seed": job[2], "run_seconds": run_seconds(Path(args.out) / job[0] / f"{job[1]}-s{job[2]}")}
            for row, job in zip(rows, jobs)]
    command = " ".join(["python -m benchmarks.eps_study", *sys.argv[1:]])
    print(write_section(Path(args.docs), rows, command=command, wall=time.perf_counter() - start, steps=args.steps,
                        jobs=args.jobs))


if __name__ == "__main__":
    main()
