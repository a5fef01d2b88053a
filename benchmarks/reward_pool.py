"""Rows/s of the reward pool with 1, 2 and 4 concurrent callers (issue 23: the pool used to serve one call at a time).

    .venv/bin/python -m benchmarks.reward_pool [--workers 2] [--rows-per-call 32] [--callers 1,2,4] [--repeats 1]
                                               [--slow-row-s 3]

Each caller is a thread of the driver making one `pool.score.remote(...)` call of `--rows-per-call` HumanEval rows
(canonical solutions, as code-task rows through the real sandbox), all callers at once; rows/s = all rows / wall
seconds until the last call returns; call_s_mean / call_s_max = seconds each call took. Two scenarios: `cpu` (only
those rows) and `slow_row` (the first caller's batch also holds one program that sleeps `--slow-row-s` seconds, as a
program waiting out its timeout does: wall time on a worker, no CPU). The naive reference, in the same run and on the
same rows: the same pool actor created with `max_concurrency=1`, which serves the calls one after another (the old
behaviour). Prints one JSON line per (scenario, callers, pool) and a summary line; every row must score 2.0
(format 1 + tests 1) or the run fails.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import ray

from common.machine import cpu_name
from benchmarks.humaneval import as_row, load_problems
from rewards.service.pool import MAX_CONCURRENT_CALLS, RemoteRewardPool


def measure(pool, rows: list[tuple[dict, str]], callers: int, rows_per_call: int, slow_row_s: float) -> dict:
    batches = [(rows[(c * rows_per_call) % len(rows):] + rows)[:rows_per_call] for c in range(callers)]
    if slow_row_s > 0:
        slow = ({"tests": ["assert late() == 1"], "timeout_s": slow_row_s + 2.0},
                f"```python\nimport time\ntime.sleep({slow_row_s})\ndef late():\n    return 1\n```\n")
        batches[0] = [slow] + batches[0]

    def call(batch):
        metas, texts = zip(*batch)
        start = time.monotonic()
        out = ray.get(pool.score.remote(list(texts), list(metas), ["code"] * len(batch)))
        return out, time.monotonic() - start

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=callers) as threads:
        outs = list(threads.map(call, batches))
    seconds = time.monotonic() - start
    totals = [r.total for (results, _), _ in outs for r in results]
    if totals != [2.0] * len(totals):
        raise SystemExit(f"rows scored wrong: {sum(t != 2.0 for t in totals)} of {len(totals)}")
    call_s = [s for _, s in outs]
    return {"rows": len(totals), "seconds": round(seconds, 2), "rows_per_s": round(len(totals) / seconds, 2),
            "call_s_mean": round(sum(call_s) / len(call_s), 2), "call_s_max": round(max(call_s), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rows-per-call", type=int, default=32)
    parser.add_argument("--callers", default="1,2,4")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--slow-row-s", type=float, default=3.0)
    args = parser.parse_args()
    rows = [as_row(p, p["canonical_solution"]) for p in load_problems()]
    ray.init(num_cpus=args.workers + 2, include_dashboard=False, log_to_driver=False)
    config = {"threads": 1}
    pools = {"concurrent": RemoteRewardPool.remote(args.workers, config=config),
             "serial_reference": RemoteRewardPool.options(max_concurrency=1).remote(args.workers, config=config)}
    for pool in pools.values():
        ray.get(pool.check_ready.remote())
        measure(pool, rows, 1, 4, 0.0)  # warm: checkers started, interpreters cached
    summary: dict[str, dict[str, list[float]]] = {}
    for _ in range(args.repeats):
        for scenario, slow_s in (("cpu", 0.0), ("slow_row", args.slow_row_s)):
            for callers in map(int, args.callers.split(",")):
                for name, pool in pools.items():  # interleaved, so load changes hit both alike
                    line = {"benchmark": "reward_pool", "scenario": scenario, "pool": name, "callers": callers,
                            "workers": args.workers, **measure(pool, rows, callers, args.rows_per_call, slow_s)}
                    summary.setdefault(f"{scenario}/{name}", {}).setdefault(str(callers), []).append(
                        line["rows_per_s"])
                    print(json.dumps(line), flush=True)
    print(json.dumps({"benchmark": "reward_pool_summary", "cpu": cpu_name(), "logical_cpus": os.cpu_count(),
                      "load_average": [round(x, 2) for x in os.getloadavg()],
                      "max_concurrent_calls": MAX_CONCURRENT_CALLS, "rows_per_call": args.rows_per_call,
                      "workers": args.workers, "slow_row_s": args.slow_row_s,
                      "rows_per_s_best": {key: {c: max(v) for c, v in per.items()} for key, per in summary.items()}}))
    for pool in pools.values():
        ray.get(pool.shutdown.remote())
    ray.shutdown()


if __name__ == "__main__":
    main()
