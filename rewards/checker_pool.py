"""Long-lived checker processes (`_checker.py`), one checked out per concurrent sandboxed run.

A checker starts once (bwrap + interpreter startup, ~30 ms) and then serves runs back to back, so the verdict
process costs no startup per program. A checker that a run leaves in an unknown state (deadline, garbled line,
death) is killed and its slot starts a fresh one on next use. Each checker has its own uid (index k ->
`uid_base + uid_span + k`), so no program's process can signal or trace it.
"""
from __future__ import annotations

import functools
import itertools
import os
import queue
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

_HERE = Path(__file__).resolve().parent


@functools.lru_cache(maxsize=None)
def in_sandbox_source(name: str) -> str:
    """`_plain.py` followed by the named script: the in-sandbox interpreter cannot import the project."""
    return (_HERE / "_plain.py").read_text() + "\n" + (_HERE / name).read_text()


class CheckerStartError(RuntimeError):
    """A checker process did not come up (its sandbox or interpreter failed to start)."""


class Checker:
    def __init__(self, command: list[str], pass_fd: int, startup_s: float) -> None:
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True,
                                     pass_fds=(pass_fd,) if pass_fd >= 0 else (),
                                     env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"})
        if pass_fd >= 0:
            os.close(pass_fd)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin_fd, self.stdout_fd = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        line = b""
        deadline = time.monotonic() + startup_s
        with selectors.DefaultSelector() as sel:  # the b'R{"ready":true}' line
            sel.register(self.stdout_fd, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    self.kill()
                    raise CheckerStartError(f"checker did not start within {startup_s}s")
                data = os.read(self.stdout_fd, 4096)
                if not data:
                    self.kill()
                    raise CheckerStartError(f"checker exited at startup with code {self.proc.wait()}")
                line += data
        if not line.startswith(b"R"):
            self.kill()
            raise CheckerStartError(f"checker wrote {line[:200]!r} at startup")

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()


class CheckerPool:
    """Idle checkers in a queue; `acquire` starts one when none is idle, `release(healthy=False)` kills it."""

    def __init__(self, command: Callable[[int], tuple[list[str], int]], startup_s: float) -> None:
        self._command, self._startup_s = command, startup_s
        self._idle: queue.SimpleQueue[Checker] = queue.SimpleQueue()
        self._slots = itertools.count()
        self._free_slots: list[int] = []
        self._lock = threading.Lock()
        self._slot_of: dict[int, int] = {}
        self.restarts = 0

    def acquire(self) -> Checker:
        while True:
            try:
                checker = self._idle.get_nowait()
            except queue.Empty:
                break
            if checker.proc.poll() is None:
                return checker
            self.release(checker, healthy=False)  # died while idle
        with self._lock:
            slot = self._free_slots.pop() if self._free_slots else next(self._slots)
        command, fd = self._command(slot)
        try:
            checker = Checker(command, fd, self._startup_s)
        except BaseException:
            with self._lock:
                self._free_slots.append(slot)
            raise
        self._slot_of[id(checker)] = slot
        return checker

    def release(self, checker: Checker, *, healthy: bool) -> None:
        if healthy and checker.proc.poll() is None:
            self._idle.put(checker)
            return
        checker.kill()
        with self._lock:
            self._free_slots.append(self._slot_of.pop(id(checker)))
            self.restarts += 1

    def close(self) -> None:
        while True:
            try:
                checker = self._idle.get_nowait()
            except queue.Empty:
                return
            checker.kill()
