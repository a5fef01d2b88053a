"""CPU milliseconds per HumanEval program through the sandbox, all processes counted (host, checkers, test
children, programs), next to programs/s. On a shared machine wall-clock rates swing with other load; CPU per program
does not, so it is what to compare between two versions of rewards/ (run this in both trees, interleaved).

    (as root) .venv/bin/python -m benchmarks.humaneval_cpu [--body canonical|pass] [--threads 2]

The process moves itself into a cgroup v1 cpuacct group of its own (`/sys/fs/cgroup/cpuacct/humaneval-bench-<pid>`;
the per-run cgroups nest in it and cpuacct charges every ancestor), so the group's `cpuacct.usage` over the scoring
is the CPU of everything it started. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

CPUACCT = Path("/sys/fs/cgroup/cpuacct")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--body", choices=("canonical", "pass"), default="canonical")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not (CPUACCT / "cpuacct.usage").exists():
        raise SystemExit(f"needs a cgroup v1 cpuacct hierarchy at {CPUACCT} (and root)")
    group = CPUACCT / f"humaneval-bench-{os.getpid()}"
    group.mkdir()
    (group / "cgroup.procs").write_text(str(os.getpid()))
    try:
        from benchmarks.humaneval import as_row, load_problems, score_all
        from rewards.sandbox import Sandbox, SandboxConfig

        problems = load_problems()
        rows = [as_row(p, p["canonical_solution"] if args.body == "canonical" else "    pass\n") for p in problems]
        box = Sandbox(SandboxConfig())
        box.check_ready()
        score_all(rows[:8], box, args.threads)  # warm: checkers started
        usage = lambda: int((group / "cpuacct.usage").read_text()) / 1e9  # noqa: E731
        before = usage()
        results, wall = score_all(rows, box, args.threads)
        cpu = usage() - before
        box.close()
        if args.body == "canonical" and not all(r.total == 1.0 for r in results):
            raise SystemExit("a canonical solution did not score 1.0")
        print(json.dumps({"benchmark": "humaneval_cpu", "body": args.body, "threads": args.threads,
                          "programs": len(rows), "programs_per_s": round(len(rows) / wall, 1),
                          "cpu_ms_per_program": round(cpu / len(rows) * 1000, 1),
                          "load_average": [round(x, 2) for x in os.getloadavg()]}))
    finally:
        (CPUACCT / "cgroup.procs").write_text(str(os.getpid()))
        for _ in range(100):  # killed sandbox processes may take a moment to leave the group
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.05)


if __name__ == "__main__":
    main()
