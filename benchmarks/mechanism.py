"""The mechanism study of issue 16 (docs/results.md, "The mechanism"): GDSD vs ESPO at equal rollout budget.

  python -m benchmarks.mechanism [--tasks sudoku,countdown] [--seeds 0,1,2] [--steps 10] [--jobs 2]
                                 [--probe-lrs 1e-4,3e-4,1e-3] [--out runs/mechanism] [--docs docs]

Arms, each method at its official settings otherwise (common/algorithms.py): gdsd mu=8 (the official GDSD), gdsd
mu=1, espo mu=1, espo mu=8, gdsd eps=1e-2 and gdsd eps=1e-1 (mu 8). Every run logs per inner iteration j the clamp
(GDSD) or clip (ESPO) fraction and ||theta_{j+1} - theta_j|| (learner.log_param_delta). The stability probe trains
gdsd and espo (official settings: GDSD mu=8, ESPO mu=2), gdsd mu=1 and espo mu=8 on the first task at rising learning
rates, one seed each.
Every run goes through the real Ray job (benchmarks.compare.run_one), `--jobs` at a time; the first run of each task
goes alone so that concurrent jobs never build the same SFT warm start. A finished run of the same resolved config is
reused. Writes runs/mechanism/<task>/, docs/mechanism.json, docs/mechanism_<task>.png and the study section of
docs/results.md (between the STUDY markers; created before the compare marker if absent).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.compare import KEEP_FROM, mean_se, replace_between, run_one
from common.algorithms import ALGORITHMS

# task -> (config, task-specific overrides). Countdown: 1500 SFT steps, because the 400-step start of
# countdown_tiny.yaml solves 0 of 64 held-out rows and 36 of a 10-step run's 40 prompt groups had zero reward
# variance (no learning signal for any method).
TASKS = {"sudoku": ("configs/sudoku_quick.yaml", []),
         "countdown": ("configs/countdown_tiny.yaml", ["sft.steps=1500"])}
# 64 held-out items per evaluation; no HF export (not needed, and it costs a model write per run)
COMMON = ["eval.num_prompts=64", "checkpoint.export_hf=false", "learner.log_param_delta=true"]
GDSD, ESPO = ALGORITHMS["gdsd"].overrides(), ALGORITHMS["espo"].overrides()
ARMS = {  # run name -> (label, overrides); later overrides win
    "gdsd_mu8": ("gdsd μ=8 (official)", GDSD),
    "gdsd_mu1": ("gdsd μ=1", [*GDSD, "algorithm.mu=1"]),
    "espo_mu1": ("espo μ=1", [*ESPO, "algorithm.mu=1"]),
    "espo_mu8": ("espo μ=8", [*ESPO, "algorithm.mu=8"]),
    "gdsd_eps1e-2": ("gdsd ε=1e-2", [*GDSD, "algorithm.eps=0.01"]),
    "gdsd_eps1e-1": ("gdsd ε=1e-1", [*GDSD, "algorithm.eps=0.1"]),
}
# the official methods (GDSD mu 8, ESPO mu 2), then each with the other's kind of inner loop: does the collapse lr
# follow the loss or the number of live optimizer steps per batch?
PROBE = {"gdsd": GDSD, "espo": ESPO, "gdsd-mu1": [*GDSD, "algorithm.mu=1"], "espo-mu8": [*ESPO, "algorithm.mu=8"]}
COLLAPSED_BELOW = 0.05  # mean training reward of the last 3 steps; a well-formed answer alone scores more on both tasks
STUDY_BEGIN, STUDY_END = "<!-- STUDY: begin (benchmarks.mechanism) -->", "<!-- STUDY: end -->"


def per_step(run_dir: Path) -> list[dict]:
    """The training steps' records of metrics.jsonl (not the evaluation records)."""
    return [r for r in map(json.loads, open(run_dir / "metrics.jsonl")) if "learner" in r]


def dips(rewards: list[float]) -> int:
    """Steps whose training reward fell below half the best reward of the steps before it (a relapse, not noise
    around a plateau): the study's measure of how steadily a method trains."""
    return sum(r < 0.5 * max(rewards[:i]) for i, r in enumerate(rewards) if i)


def summarise(result: dict, run_dir: Path, metric: str) -> dict:
    """Per-run numbers of the study: rewards, the per-iteration clamp/clip fraction and parameter movement."""
    if not result["ok"]:
        return result
    steps = per_step(run_dir)
    learner = [s["learner"] for s in steps]
    frac_key = "clamp_frac" if "clamp_frac" in learner[0] else "clip_frac"
    # the KL to the reference each loss logs: the sequence-level methods' k2, the token-level ones' per-token k3
    kl_key = "k2" if "k2" in learner[0] else "kl"
    mu = len(learner[0][frac_key])
    # mean over steps of each inner iteration's value (every step has mu iterations)
    by_j = {key: [statistics.mean(s[key][j] for s in learner) for j in range(mu)]
            for key in (frac_key, "param_delta", "grad_norm")}
    return {**result, "metric": metric, "before": result["before"][metric], "after": result["after"][metric],
            "after_se": result["after"].get(f"{metric}_se", 0.0), "frac_key": frac_key, "by_j": by_j,
            "moved_per_step": statistics.mean(sum(s["param_delta"]) for s in learner),
            "kl_key": kl_key, "kl_max": max(max(s[kl_key]) for s in learner),
            "zero_variance_groups": sum(s.get("zero_variance_groups", 0) for s in steps),
            "dips": dips(result["rewards"]), "collapsed": statistics.mean(result["rewards"][-3:]) < COLLAPSED_BELOW}


def run_all(jobs: list[tuple[str, str, int, list[str], str]], *, steps: int, out: Path, parallel: int,
            common: list[str] = COMMON, tasks: dict[str, tuple[str, list[str]]] = TASKS) -> list[dict]:
    """jobs: (task, name, seed, overrides, metric). First run of each task alone (its SFT warm start), then the rest.
    `common`: overrides of every run (the eps study, benchmarks/eps_study.py, evaluates on more items); `tasks`: task
    -> (config, overrides), default this study's TASKS."""
    from common.config import load_config

    def one(job):
        task, name, seed, overrides, metric = job
        task_out = out / task
        task_out.mkdir(parents=True, exist_ok=True)
        config, task_overrides = tasks[task]
        result = run_one(name, seed, config=config, steps=steps, out=task_out, extra=[*common, *task_overrides],
                         reuse=True, method_overrides=overrides)
        row = summarise({**result, "task": task, "name": name,
                         "lr": load_config(config, [*overrides, *task_overrides]).learner.lr},
                        task_out / f"{name}-s{seed}", metric)
        print(json.dumps({k: v for k, v in row.items() if k not in ("rewards", "by_j")}), flush=True)
        return row

    first = {}
    for i, job in enumerate(jobs):
        first.setdefault(job[0], i)
    waves = [list(first.values()), [i for i in range(len(jobs)) if i not in first.values()]]
    results: list[dict] = [{}] * len(jobs)
    with ThreadPoolExecutor(parallel) as pool:
        for wave in waves:  # the second wave starts when the first has finished
            for i, row in zip(wave, pool.map(one, [jobs[i] for i in wave])):
                results[i] = row
    return results


def fmt(values: list[float], digits: int = 2) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def study_table(rows: list[dict], task: str) -> list[str]:
    lines = ["| arm | seeds | held-out before | after (mean ± SE over seeds) | per seed "
             "| training reward, last 3 steps | dips | clamp / clip fraction per j (mean) | ‖Δθ_j‖ per j, x1e-2 "
             "| Σ_j ‖Δθ_j‖ per step | KL max (k2; token losses: k3) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, (label, _) in ARMS.items():
        runs = [r for r in rows if r["task"] == task and r["name"] == name]
        ok = [r for r in runs if r["ok"]]
        if not ok:
            lines.append(f"| {label} | 0/{len(runs)} ran | | | | | | | | | |")
            continue
        (a, a_se), (f, f_se) = mean_se([r["after"] for r in ok]), mean_se([statistics.mean(r["rewards"][-3:])
                                                                          for r in ok])
        mu = len(ok[0]["by_j"]["param_delta"])
        frac = [statistics.mean(r["by_j"][r["frac_key"]][j] for r in ok) for j in range(mu)]
        moved = [100 * statistics.mean(r["by_j"]["param_delta"][j] for r in ok) for j in range(mu)]
        (m, m_se) = mean_se([r["moved_per_step"] for r in ok])
        lines.append(f"| {label} | {len(ok)} | {statistics.mean(r['before'] for r in ok):.3f} | {a:.3f} ± {a_se:.3f} "
                     f"| {fmt([r['after'] for r in ok], 3)} | {f:.3f} ± {f_se:.3f} | {sum(r['dips'] for r in ok)} "
                     f"| {fmt(frac)} | {fmt(moved)} "
                     f"| {m:.3f} ± {m_se:.3f} | {max(r['kl_max'] for r in ok):.3g} |")
    return lines


def probe_table(rows: list[dict]) -> list[str]:
    lines = ["| method | lr | training reward per step | last 3 steps | held-out before -> after | KL max (k2) "
             "| collapsed |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["name"].split("_")[1], r["lr"])):
        if not r["ok"]:
            lines.append(f"| {r['name']} | | failed: {r.get('log')} | | | | |")
            continue
        lines.append(f"| {r['name'].split('_')[1]} | {r['lr']:g} | {fmt(r['rewards'])} | "
                     f"{statistics.mean(r['rewards'][-3:]):.3f} | {r['before']:.3f} -> {r['after']:.3f} | "
                     f"{r['kl_max']:.3g} | {'yes' if r['collapsed'] else 'no'} |")
    return lines


def plot(rows: list[dict], task: str, docs: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, (label, _) in ARMS.items():
        ok = [r for r in rows if r["task"] == task and r["name"] == name and r["ok"]]
        if not ok:
            continue
        n = min(len(r["rewards"]) for r in ok)
        axes[0].plot(range(1, n + 1), [statistics.mean(r["rewards"][i] for r in ok) for i in range(n)], label=label)
        mu = len(ok[0]["by_j"]["param_delta"])
        js = range(1, mu + 1)
        axes[1].plot(js, [statistics.mean(r["by_j"][r["frac_key"]][j] for r in ok) for j in range(mu)], "o-",
                     label=label)
        axes[2].plot(js, [statistics.mean(r["by_j"]["param_delta"][j] for r in ok) for j in range(mu)], "o-",
                     label=label)
    axes[0].set(xlabel="step", ylabel="mean training reward (over seeds)", title=f"{task}: training reward")
    axes[1].set(xlabel="inner iteration j", ylabel="clamp (GDSD) / clip (ESPO) fraction", title="silenced share")
    axes[2].set(xlabel="inner iteration j", ylabel="‖Δθ_j‖ (mean over steps, seeds)",
                title="parameter movement", yscale="log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    name = f"mechanism_{task}.png"
    fig.savefig(docs / name, dpi=110)
    plt.close(fig)
    return name


def write_section(docs: Path, rows: list[dict], probe: list[dict], *, command: str, wall: float, steps: int) -> str:
    trained, reused = sum(not r.get("reused") for r in rows + probe), sum(bool(r.get("reused")) for r in rows + probe)
    lines = [STUDY_BEGIN, "", "### The study (written by `benchmarks/mechanism.py`)", "",
             f"Command: `{command}`  ",
             (f"Wall time: {wall / 60:.1f} min for {trained} runs trained ({reused} reused), 2-core CPU box.  "
              if trained else f"{reused} runs, all reused from earlier invocations of the same command.  "),
             f"Every run: {steps} RL steps from the task's shared SFT start, the same prompts in the same order (the "
             "seed changes sampling noise and mask draws), " + ", ".join(f"`{o}`" for o in COMMON) + ". Held-out: "
             "greedy, 64 items; SE over seeds.", ""]
    for task in dict.fromkeys(r["task"] for r in rows):
        config, task_overrides = TASKS[task]
        settings = ", ".join([f"`{config}`", *(f"`{o}`" for o in task_overrides)])
        lines += [f"**{task}** ({settings}, lr {rows[[r['task'] for r in rows].index(task)]['lr']:g})", "",
                  *study_table(rows, task), "", f"![{task}]({plot(rows, task, docs)})", ""]
    if probe:
        lines += [f"**Stability probe** ({probe[0]['task']}, seed 0; gdsd = μ 8 and espo = μ 2, their official "
                  "settings, gdsd-mu1 / espo-mu8 the same with μ changed; "
                  f"'collapsed' = mean training reward of the last 3 steps below {COLLAPSED_BELOW})", "",
                  *probe_table(probe), ""]
    lines.append(STUDY_END)
    section = "\n".join(lines)
    path = docs / "results.md"
    text = path.read_text() if path.is_file() else ""
    replaced = replace_between(text, STUDY_BEGIN, STUDY_END, section)
    if replaced is not None:
        text = replaced
    elif KEEP_FROM in text:
        text = text + "\n" + section + "\n"
    else:
        text = text + f"\n{KEEP_FROM}\n\n" + section + "\n"
    path.write_text(text)
    (docs / "mechanism.json").write_text(json.dumps(rows + probe, indent=1))
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2, help="Ray jobs at a time")
    parser.add_argument("--probe-lrs", default="1e-4,3e-4,1e-3", help="'' = no stability probe")
    parser.add_argument("--out", default="runs/mechanism")
    parser.add_argument("--docs", default="docs")
    args = parser.parse_args()
    from common.tasks import get_task

    tasks, seeds = args.tasks.split(","), [int(s) for s in args.seeds.split(",")]
    metric = {t: get_task(t).metric for t in tasks}
    jobs = [(t, name, s, ARMS[name][1], metric[t]) for t in tasks for s in seeds for name in args.arms.split(",")]
    lrs = [float(x) for x in args.probe_lrs.split(",") if x]
    probe_jobs = [(tasks[0], f"probe_{m}_lr{lr:g}", 0, [*o, f"learner.lr={lr}"], metric[tasks[0]])
                  for lr in lrs for m, o in PROBE.items()]
    start = time.perf_counter()
    out, docs = Path(args.out), Path(args.docs)
    rows = run_all(jobs + probe_jobs, steps=args.steps, out=out, parallel=args.jobs)
    command = "python -m benchmarks.mechanism " + " ".join(sys.argv[1:])
    print(write_section(docs, rows[:len(jobs)], rows[len(jobs):], command=command, wall=time.perf_counter() - start,
                        steps=args.steps))


if __name__ == "__main__":
    main()
