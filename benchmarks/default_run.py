"""Issue 22's check of the `make run` default: its held-out gain in every seed and on more than one CPU kernel path.

  python -m benchmarks.default_run [--config configs/countdown_quick.yaml] [--seeds 0,1,2] [--isa avx2,default]
                                   [--jobs 1] [--out runs/default_check] [--json docs/default_run.json]

Each run is the real job (`python -m deploy.job --config C seed=S run_dir=OUT/<isa>-s<S>`) in its own process with
`ATEN_CPU_CAPABILITY=<isa>`, `MKL_ENABLE_INSTRUCTIONS=<ISA>` and `ONEDNN_MAX_CPU_ISA=<ISA>` ('default' leaves them
unset: the machine's widest kernels), so GEMMs and reductions round differently per path and the runs show whether the
gain depends on the float rounding. A finished run (its eval.json has the after evaluation) is reused, so an interrupted
check resumes. Prints one markdown row per run and writes the JSON: before and after with their standard errors, the
gain in points and in standard errors of the difference, the busy share of each service (deploy/report.py), the run's
wall time and the 1-minute load average when it started and ended (times from runs that overlapped each other, --jobs >
1, are not the wall time of a run alone).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from deploy.report import busy_shares, read_metrics
from deploy.warmstart import cpu_name

DEFAULT_CONFIG = "configs/countdown_quick.yaml"
# One kernel path for every library that picks its own: ATen's vectorised ops, MKL's GEMMs (torch's CPU BLAS) and
# oneDNN. ATEN_CPU_CAPABILITY alone would leave the matmuls on MKL's widest path (AVX-512 / AMX on a Xeon).
KERNEL_ENV = {"ATEN_CPU_CAPABILITY": "{isa}", "MKL_ENABLE_INSTRUCTIONS": "{isa_upper}",
              "ONEDNN_MAX_CPU_ISA": "{isa_upper}"}


def finished(run_dir: Path) -> dict | None:
    path = run_dir / "eval.json"
    if not path.is_file():
        return None
    evals = json.loads(path.read_text())
    return evals if len(evals) >= 2 and any(k.startswith("after") for k in evals) else None


def run_one(config: str, seed: int, isa: str, out: Path, extra: list[str]) -> dict:
    run_dir = out / f"{isa}-s{seed}"
    row: dict = {"seed": seed, "isa": isa, "run_dir": str(run_dir)}
    timing = run_dir / "timing.json"
    if finished(run_dir) is None:
        env = {k: v for k, v in os.environ.items() if k not in KERNEL_ENV}
        if isa != "default":
            env.update({k: v.format(isa=isa, isa_upper=isa.upper()) for k, v in KERNEL_ENV.items()})
        cmd = [sys.executable, "-m", "deploy.job", "--config", config, f"seed={seed}", f"run_dir={run_dir}",
               "--overwrite", *extra]
        load0, start = os.getloadavg()[0], time.time()
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(f"{run_dir}.log", "w") as log:
            rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        timing.write_text(json.dumps({"rc": rc, "wall_s": time.time() - start, "load_start": load0,
                                      "load_end": os.getloadavg()[0], "command": " ".join(cmd)}))
    if timing.is_file():
        row.update(json.loads(timing.read_text()))
    evals = finished(run_dir)
    if evals is None:
        return {**row, "ok": False}
    metric = next(k for k in ("accuracy", "cell_accuracy") if k in next(iter(evals.values())))
    before, after = list(evals.values())[0], list(evals.values())[-1]
    gain = after[metric] - before[metric]
    se = math.hypot(before[f"{metric}_se"], after[f"{metric}_se"])
    busy = busy_shares(read_metrics(run_dir))
    return {**row, "ok": True, "metric": metric, "n": before["n"], "before": before[metric],
            "before_se": before[f"{metric}_se"], "after": after[metric], "after_se": after[f"{metric}_se"],
            "gain": gain, "gain_se": gain / se if se else float("inf"),
            "loop_s": busy[0] if busy else None, "busy": busy[1] if busy else None}


def table(rows: list[dict]) -> str:
    lines = ["| kernel path | seed | n | before ± SE | after ± SE | gain (points) | gain / SE | wall (s) | "
             "busy: actor, learner |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r["ok"]:
            lines.append(f"| {r['isa']} | {r['seed']} | failed (rc {r.get('rc')}, see {r['run_dir']}.log) |")
            continue
        busy = r["busy"] or {}
        actor = sum(v for k, v in busy.items() if k.startswith("actor"))
        lines.append(f"| {r['isa']} | {r['seed']} | {r['n']:.0f} | {r['before']:.3f} ± {r['before_se']:.3f} | "
                     f"{r['after']:.3f} ± {r['after_se']:.3f} | {100 * r['gain']:+.1f} | {r['gain_se']:.1f} | "
                     f"{r.get('wall_s', float('nan')):.0f} | {100 * actor:.0f} %, "
                     f"{100 * busy.get('learner', float('nan')):.0f} % |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--isa", default="avx2,default", help="ATEN_CPU_CAPABILITY values; 'default' = unset")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (their wall times then overlap)")
    parser.add_argument("--out", default="runs/default_check")
    parser.add_argument("--json", default=None, help="also write the rows here (e.g. docs/default_run.json)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides for every run")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    jobs = [(int(s), isa) for isa in args.isa.split(",") for s in args.seeds.split(",")]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(lambda j: run_one(args.config, j[0], j[1], out, args.overrides), jobs))
    print(table(rows))
    report = {"config": args.config, "config_resolved": yaml.safe_load(
        (Path(rows[0]["run_dir"]) / "config.yaml").read_text()) if rows and rows[0]["ok"] else None,
        "overrides": args.overrides, "machine": cpu_name(), "cpus": os.cpu_count(), "jobs": args.jobs, "runs": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    ok = all(r["ok"] and r["gain"] >= 0.10 and r["gain_se"] >= 5.0 for r in rows)
    print(f"every run >= 10 points and >= 5 SE: {'yes' if ok else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
