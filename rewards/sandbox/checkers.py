"""Long-lived checker processes (`inside/checker.py`), one checked out per concurrent sandboxed run.

A checker starts once (bwrap + interpreter startup, ~30 ms) and then serves runs back to back, so the verdict
process costs no startup per program. The host talks to it over a unix socket and hands it, per run, the two pipes
of the program's process, so calls go checker <-> program without a host hop. A checker that a run leaves in an
unknown state (deadline, garbled line, death) is killed and a fresh one is started on next use.

Lifecycle: every checker runs in its own bwrap pid namespace under a uid drawn afresh for each start (so no
program's process can signal or trace it, and no leftover of an earlier checker shares its process limit).
Killing a checker SIGKILLs its namespace's init (which takes every process in the namespace, including those in
sessions of their own), waits until that init is gone, then sweeps the uid: anything still alive is an orphan,
counted (`orphans`, reported as `sandbox/orphans`) and killed. Checkers are spawned from one long-lived thread with
`--die-with-parent`, so they also die with the host process.
"""
from __future__ import annotations

import concurrent.futures as futures
import functools
import json
import os
import queue
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rewards.sandbox.processes import alive, kill_group, kill_uid, uid_pids

INSIDE = Path(__file__).resolve().parent / "inside"  # what runs inside the sandbox, sent as source


@functools.lru_cache(maxsize=None)
def in_sandbox_source(name: str) -> str:
    """`inside/plain.py` followed by `inside/<name>`: the in-sandbox interpreter cannot import the project."""
    return (INSIDE / "plain.py").read_text() + "\n" + (INSIDE / name).read_text()


class CheckerStartError(RuntimeError):
    """A checker process did not come up (its sandbox or interpreter failed to start)."""


class _Spawner:
    """One long-lived daemon thread that starts every checker process.

    bwrap's `--die-with-parent` is PR_SET_PDEATHSIG, which fires when the spawning *thread* exits; scoring threads
    are short-lived, so checkers are spawned from this thread, which lives as long as the host process: when the
    host dies (killed worker), the kernel kills each checker's bwrap, and with it the checker's pid namespace."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="checker-spawner", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            args, kwargs, done = self._requests.get()
            try:
                done.set_result(subprocess.Popen(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001  (handed to the caller)
                done.set_exception(exc)

    def popen(self, *args, **kwargs) -> subprocess.Popen:
        done: futures.Future = futures.Future()
        self._requests.put((args, kwargs, done))
        return done.result()


_SPAWNER_LOCK = threading.Lock()
_SPAWNER: _Spawner | None = None


def _spawner() -> _Spawner:
    global _SPAWNER
    with _SPAWNER_LOCK:
        if _SPAWNER is None:
            _SPAWNER = _Spawner()
        return _SPAWNER


CheckerCommand = Callable[[int | None, int, int], tuple[list[str], int]]


class Checker:
    """One checker process, the host's end of its control socket (`sock`), its uid and the outside pid of its pid
    namespace's init (from bwrap's --info-fd; None in rlimit mode)."""

    def __init__(self, command: CheckerCommand, uid: int | None, startup_s: float) -> None:
        self.uid, self.init_pid = uid, None
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        info_r, info_w = os.pipe()
        argv, seccomp_fd = command(uid, theirs.fileno(), info_w)
        try:
            self.proc = _spawner().popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True,
                                         pass_fds=tuple(fd for fd in (theirs.fileno(), seccomp_fd, info_w)
                                                        if fd >= 0),
                                         env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"})
        except BaseException:
            os.close(info_r)
            raise
        finally:
            theirs.close()
            os.close(info_w)
            if seccomp_fd >= 0:
                os.close(seccomp_fd)
        try:
            self._await_ready(startup_s)
            self.init_pid = _read_init_pid(info_r)
        except BaseException:
            self.kill()
            raise
        finally:
            os.close(info_r)

    def _await_ready(self, startup_s: float) -> None:
        line = b""
        deadline = time.monotonic() + startup_s
        with selectors.DefaultSelector() as sel:  # the b'R{"ready":true}' line
            sel.register(self.sock, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    raise CheckerStartError(f"checker did not start within {startup_s}s")
                data = self.sock.recv(4096)
                if not data:
                    raise CheckerStartError(f"checker exited at startup with code {self.proc.wait()}")
                line += data
        if not line.startswith(b"R"):
            raise CheckerStartError(f"checker wrote {line[:200]!r} at startup")

    def start_run(self, request_w: int, reply_r: int, spec: bytes) -> None:
        """Hand the checker the program's pipes (SCM_RIGHTS) and the run's JSON line."""
        socket.send_fds(self.sock, [b"N"], [request_w, reply_r])
        self.sock.sendall(spec)

    def kill(self) -> int:
        """Kill the checker and everything it started; returns how many of its processes had to be killed after
        its pid namespace was gone (orphans: 0 unless the namespace kill failed to take them)."""
        if self.init_pid is not None:
            try:  # SIGKILL to a pid namespace's init kills every process in the namespace
                os.kill(self.init_pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        kill_group(self.proc)
        self.proc.wait()
        self.sock.close()
        deadline = time.monotonic() + 5.0
        while self.init_pid is not None and alive(self.init_pid) and time.monotonic() < deadline:
            time.sleep(0.002)
        if self.uid is None:
            return 0
        left = [pid for pid in uid_pids(self.uid) if alive(pid)]
        if left:
            kill_uid(self.uid)
        return len(left)


def _read_init_pid(info_r: int) -> int | None:
    """bwrap's {"child-pid": N} (written before the sandboxed command starts), or None (rlimit mode: no bwrap)."""
    os.set_blocking(info_r, False)
    try:
        info = json.loads(os.read(info_r, 4096) or b"{}")
    except (BlockingIOError, ValueError):
        return None
    pid = info.get("child-pid") if isinstance(info, dict) else None
    return pid if isinstance(pid, int) else None


class CheckerPool:
    """Idle checkers in a queue; `acquire` starts one when none is idle (a fresh uid per start, up to
    `start_attempts` tries, so one failing start does not fail the row), `release(healthy=False)` kills it."""

    def __init__(self, command: CheckerCommand, startup_s: float, uids: Callable[[], int | None],
                 start_attempts: int = 3) -> None:
        self._command, self._startup_s, self._uids = command, startup_s, uids
        self._start_attempts = start_attempts
        self._idle: queue.SimpleQueue[Checker] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.restarts = 0
        self.start_failures = 0
        self.orphans = 0  # processes found alive after their checker was killed (each one is a bug; killed)

    def acquire(self) -> Checker:
        while True:
            try:
                checker = self._idle.get_nowait()
            except queue.Empty:
                break
            if checker.proc.poll() is None:
                return checker
            self.release(checker, healthy=False)  # died while idle
        problems = []
        for _ in range(self._start_attempts):
            uid = self._uids()
            if uid is not None:  # a leftover of an earlier holder of this uid would share its process limit
                left = [pid for pid in uid_pids(uid) if alive(pid)]
                if left:
                    kill_uid(uid)
                    self._count(orphans=len(left))
            try:
                return Checker(self._command, uid, self._startup_s)
            except CheckerStartError as exc:
                self._count(start_failures=1)
                problems.append(str(exc))
        raise CheckerStartError(f"{self._start_attempts} starts failed: " + "; ".join(problems))

    def _count(self, *, orphans: int = 0, start_failures: int = 0, restarts: int = 0) -> None:
        with self._lock:
            self.orphans += orphans
            self.start_failures += start_failures
            self.restarts += restarts

    def take_orphans(self) -> int:
        """Orphans counted since the last call."""
        with self._lock:
            out, self.orphans = self.orphans, 0
        return out

    def release(self, checker: Checker, *, healthy: bool) -> None:
        if healthy and checker.proc.poll() is None:
            self._idle.put(checker)
            return
        self._count(orphans=checker.kill(), restarts=1)

    def close(self) -> None:
        while True:
            try:
                checker = self._idle.get_nowait()
            except queue.Empty:
                return
            self._count(orphans=checker.kill())
