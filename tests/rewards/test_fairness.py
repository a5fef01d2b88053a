"""CPU fairness (issue 23, class 5): a program that forks busy children, each trying to start a session of its own,
must not starve an honest run scored beside it. Each run is one session (bwrap --new-session; setsid/setpgid are
refused by the seccomp filter), and with the kernel's autogroup scheduling one session is one CPU share."""
from __future__ import annotations

import statistics
import subprocess
import threading
import time
from pathlib import Path

import pytest

from rewards.sandbox import Sandbox
from tests.rewards.conftest import private_config, range_processes

HOG_CHILDREN = 48  # the issue saw 15 starve honest runs; more make the effect stand out above other load on the node
HOG = f"""import os, time
for _ in range({HOG_CHILDREN}):
    if os.fork() == 0:
        try:
            os.setsid()
        except OSError:
            pass
        while True:
            pass
def hog():
    time.sleep(30)
"""


def honest_loops(cpu_s: float) -> int:
    """Loop count of `sum(i * i for i in range(n))` that takes about `cpu_s` CPU seconds in the sandbox's
    interpreter on this machine (measured in CPU time, so other load does not change it)."""
    probe = ("import time\nn = 200000\nstart = time.process_time()\nsum(i * i for i in range(n))\n"
             "print(n / (time.process_time() - start))")
    rate = float(subprocess.run(["/usr/bin/python3", "-c", probe], capture_output=True, text=True,
                                check=True).stdout)
    return int(rate * cpu_s)


@pytest.mark.skipif(not Path("/proc/sys/kernel/sched_autogroup_enabled").exists()
                    or Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() != "1",
                    reason="the per-run CPU share comes from the kernel's autogroup scheduling, off on this kernel")
def test_forking_hog_does_not_starve_an_honest_run():
    """Honest runs needing 0.15 s of CPU, alone and then beside the hog: beside it they must all pass and take at
    most 5x their wall time alone. (The node is shared with other work whose load we do not control, hence the
    relative bound and a 3 s timeout: measured 1.1-2.9x on a 2-core box at load 5; before the fix each of the hog's
    children was a CPU share of its own and the honest runs timed out, > 13x.)"""
    config = private_config(max_processes=HOG_CHILDREN + 8)
    box = Sandbox(config)
    honest = f"def work():\n    return sum(i * i for i in range({honest_loops(0.15)}))\n"

    def honest_runs(count: int) -> tuple[list[bool], list[float]]:
        results = [box.run(honest, ["assert work() > 0"], test_timeout_s=3.0) for _ in range(count)]
        return [r.passed[0] for r in results], [round(r.seconds, 2) for r in results]

    try:
        box.check_ready()
        alone_verdicts, alone = honest_runs(4)
        hog_result: list = []
        hog = threading.Thread(target=lambda: hog_result.append(box.run(HOG, ["assert hog() == 1"],
                                                                        test_timeout_s=10.0)))
        hog.start()
        time.sleep(1.0)  # the hog's children are spinning now
        verdicts, beside = honest_runs(4)
        still_hogging = hog.is_alive()
        hog.join()
        assert verdicts == [True] * 4, f"honest runs beside a forking hog: {verdicts}, {beside}s (alone: {alone}s)"
        assert statistics.median(beside) <= 5 * statistics.median(alone), (beside, alone)
        assert still_hogging, "the hog ended before the honest runs did: the check proved nothing"
        assert alone_verdicts == [True] * 4
        assert hog_result[0].passed == [False]
        cpu = hog_result[0].cpu_seconds
        if cpu is not None:  # per-run CPU accounting where the host has a cpuacct / cgroup v2 hierarchy
            assert cpu > 0.5, f"the hog's children burnt CPU but the run was charged {cpu}s"
    finally:
        box.close()
    assert range_processes(config) == []
