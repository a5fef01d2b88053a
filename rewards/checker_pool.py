"""Long-lived checker processes (`_checker.py`), one checked out per concurrent sandboxed run.

A checker starts once (bwrap + interpreter startup, ~30 ms) and then serves runs back to back, so the verdict
process costs no startup per program. The host talks to it over a unix socket and hands it, per run, the two pipes
of the program's process, so calls go checker <-> program without a host hop. A checker that a run leaves in an unknown state (deadline, garbled line,
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
import socket
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
    """One checker process and the host's end of its control socket (`sock`)."""

    def __init__(self, command: Callable[[int], tuple[list[str], int]], startup_s: float) -> None:
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv, seccomp_fd = command(theirs.fileno())
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True,
                                         pass_fds=tuple(fd for fd in (theirs.fileno(), seccomp_fd) if fd >= 0),
                                         env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"})
        finally:
            theirs.close()
            if seccomp_fd >= 0:
                os.close(seccomp_fd)
        line = b""
        deadline = time.monotonic() + startup_s
        with selectors.DefaultSelector() as sel:  # the b'R{"ready":true}' line
            sel.register(self.sock, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    self.kill()
                    raise CheckerStartError(f"checker did not start within {startup_s}s")
                data = self.sock.recv(4096)
                if not data:
                    self.kill()
                    raise CheckerStartError(f"checker exited at startup with code {self.proc.wait()}")
                line += data
        if not line.startswith(b"R"):
            self.kill()
            raise CheckerStartError(f"checker wrote {line[:200]!r} at startup")

    def start_run(self, request_w: int, reply_r: int, spec: bytes) -> None:
        """Hand the checker the program's pipes (SCM_RIGHTS) and the run's JSON line."""
        socket.send_fds(self.sock, [b"N"], [request_w, reply_r])
        self.sock.sendall(spec)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self.sock.close()


class CheckerPool:
    """Idle checkers in a queue; `acquire` starts one when none is idle, `release(healthy=False)` kills it."""

    def __init__(self, command: Callable[[int, int], tuple[list[str], int]], startup_s: float) -> None:
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
        try:
            checker = Checker(lambda sock_fd: self._command(slot, sock_fd), self._startup_s)
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
