"""Checker lifecycle (issue 23, class 1): a checker and everything it started are gone when its run ends or times
out, even when the test is stuck inside one C call that the per-test alarm cannot interrupt; repeated timeouts do
not exhaust a checker uid's process limit; checkers die with the host process.

Each test uses a sandbox with a uid range of its own (`private_config`) and counts every process of that range."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rewards.sandbox.processes import uid_pids
from rewards.sandbox import Sandbox
from tests.rewards.conftest import private_config, range_processes

REPO = Path(__file__).resolve().parents[2]
# The checker turns the program's list into a set of colliding integers: one C call of ~10 s (quadratic probing)
# that no Python-level alarm interrupts.
COLLIDING = "def f():\n    return [7 + k * (2**61 - 1) for k in range(30000)]\n"
C_CALL_TEST = "assert len(set(f())) == 1"


def wait_until_none_left(config, seconds: float = 2.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := range_processes(config)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_timed_out_checker_leaves_no_process():
    config = private_config(startup_s=1.0)
    box = Sandbox(config)
    try:
        result = box.run(COLLIDING, [C_CALL_TEST], test_timeout_s=0.5)
        assert result.passed == [False]
        ok = box.run("def g():\n    return 2\n", ["assert g() == 2"])
        assert ok.passed == [True]
    finally:
        box.close()
    assert wait_until_none_left(config) == [], "a checker (or its test) outlived its run"
    assert box.drain_orphans() == 0
    assert box.check_ready().get("orphans") == "0", "the start-up check reports the orphans of a killed checker"


def test_repeated_timeouts_do_not_exhaust_the_checker_slot():
    """The issue's failure: each timed-out checker left processes of its uid until the process limit was reached,
    the slot could not start a checker any more and every later code row scored 0."""
    config = private_config(startup_s=1.0, max_processes=4)
    box = Sandbox(config)
    try:
        for _ in range(3):
            assert box.run(COLLIDING, [C_CALL_TEST], test_timeout_s=0.3).passed == [False]
        ok = box.run("def g():\n    return 2\n", ["assert g() == 2"])
        assert ok.passed == [True], ok
    finally:
        box.close()
    assert wait_until_none_left(config) == []


HOST = textwrap.dedent("""
    import sys, threading, time
    from rewards.sandbox import Sandbox, SandboxConfig
    box = Sandbox(SandboxConfig(uid_base=int(sys.argv[1]), uid_span=int(sys.argv[2]), startup_s=1.0))
    box.check_ready()
    program = {program!r}
    thread = threading.Thread(target=box.run, args=(program, [{test!r}]), kwargs={{"test_timeout_s": 30.0}})
    thread.start()
    time.sleep(1.5)  # the checker is inside its long C call now
    print("busy", flush=True)
    thread.join()
""")


def test_checkers_die_with_the_host_process():
    config = private_config()
    script = HOST.format(program=COLLIDING, test=C_CALL_TEST)
    host = subprocess.Popen([sys.executable, "-c", script, str(config.uid_base), str(config.uid_span)],
                            stdout=subprocess.PIPE, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert host.stdout.readline().strip() == b"busy"
        assert range_processes(config), "the run should be in progress"
    finally:
        host.send_signal(signal.SIGKILL)
        host.wait()
    assert wait_until_none_left(config, 3.0) == [], "a checker outlived the host process that started it"


def test_a_checker_that_cannot_start_is_retried_with_a_fresh_uid():
    """The issue's failure mode, made directly: the uid a checker is about to get is at its process limit (as
    leftovers of earlier checkers once made it), so that start fails; the pool starts it again under a fresh uid
    instead of failing the row (and, before, every later row of that slot)."""
    config = private_config(max_processes=4)
    box = Sandbox(config)
    full_uid = config.uid_base + config.uid_span + 7
    squatters = [subprocess.Popen(["setpriv", f"--reuid={full_uid}", f"--regid={full_uid}", "--clear-groups",
                                   "sleep", "60"]) for _ in range(config.max_processes)]
    try:
        deadline = time.monotonic() + 10
        while len(uid_pids(full_uid)) < config.max_processes and time.monotonic() < deadline:
            time.sleep(0.01)  # setpriv has switched every squatter to the uid
        box.check_ready()
        pool = box._checkers
        while (checker := _idle_checker(pool)) is not None:  # no idle checker: the next run starts one
            pool.release(checker, healthy=False)
        fresh = box._checker_uid
        uids = iter([full_uid])
        pool._uids = lambda: next(uids, None) or fresh()
        failures_before = pool.start_failures
        result = box.run("def g():\n    return 2\n", ["assert g() == 2"])
        assert result.passed == [True], result
        assert pool.start_failures == failures_before + 1, "the start under the full uid should have failed"
    finally:
        for squatter in squatters:
            squatter.kill()
            squatter.wait()
        box.close()


def _idle_checker(pool):
    import queue

    try:
        return pool._idle.get_nowait()
    except queue.Empty:
        return None


def test_cgroups_of_dead_hosts_are_removed_at_the_next_probe():
    """A host killed mid-run leaves its per-run cgroup directories; the next sandbox on the node removes the empty
    ones of processes that no longer exist (and keeps those of live processes)."""
    from rewards.sandbox.cgroup import CgroupParent

    parent, where = CgroupParent.probe()
    if parent is None:
        pytest.skip(f"no per-run cgroups here: {where}")
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive_host = subprocess.Popen(["sleep", "60"])
    base = parent.parents[0].parent
    stale, live = base / f"gdsd-sandbox-{dead.pid}", base / f"gdsd-sandbox-{alive_host.pid}"
    parent.remove()
    (stale / "run-0").mkdir(parents=True)
    live.mkdir()
    try:
        again, _ = CgroupParent.probe()
        assert again is not None
        again.remove()
        assert not stale.exists(), "the dead host's cgroup was left"
        assert live.exists()
    finally:
        alive_host.kill()
        alive_host.wait()
        for directory in (stale / "run-0", stale, live):
            if directory.exists():
                directory.rmdir()
