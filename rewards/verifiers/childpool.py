"""A small pool of long-lived helper processes speaking JSON lines, with a per-request outer timeout.

Used for math-verify: importing sympy takes seconds, so children are reused; a request that overruns its timeout
kills its child (its state is unknown) and the next request starts a fresh one. Safe to call from any thread: each
call checks out one idle child, so concurrent calls run in parallel on different children.
"""
from __future__ import annotations

import json
import os
import queue
import selectors
import subprocess
import sys
import time
from pathlib import Path

from rewards.sandbox.processes import kill_group

_REPO_ROOT = str(Path(__file__).resolve().parents[2])  # so that `python -m rewards.verifiers.math_child` imports


class ChildTimeout(TimeoutError):
    """The child did not answer within the timeout and was killed."""


class ChildFailed(RuntimeError):
    """The child exited or wrote something that is not a JSON line."""


class _Child:
    def __init__(self, module: str, startup_timeout_s: float) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_REPO_ROOT, env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        self._buffer = b""
        try:
            self.read_line(time.monotonic() + startup_timeout_s)  # the {"ready": true} line
        except BaseException:
            self.kill()
            raise

    def read_line(self, deadline: float) -> dict:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    raise ChildTimeout("helper process did not answer in time")
                data = os.read(fd, 1 << 16)
                if not data:
                    raise ChildFailed(f"helper process exited with code {self.proc.wait()}")
                self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError as exc:
            raise ChildFailed(f"helper process wrote a non-JSON line: {line[:200]!r}") from exc

    def request(self, payload: dict, timeout_s: float) -> dict:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(payload) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError as exc:
            raise ChildFailed("helper process is gone") from exc
        return self.read_line(time.monotonic() + timeout_s)

    def kill(self) -> None:
        kill_group(self.proc)
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


class ChildPool:
    """`size` lazily started `python -m <module>` children; `call(payload, timeout_s)` returns the reply dict."""

    def __init__(self, module: str, size: int = 1, startup_timeout_s: float = 120.0) -> None:
        if size < 1:
            raise ValueError(f"ChildPool size must be >= 1, got {size}")
        self.module, self.startup_timeout_s = module, startup_timeout_s
        self._idle: queue.Queue[_Child | None] = queue.Queue()
        for _ in range(size):
            self._idle.put(None)  # None = a slot whose child is not started (yet, or again after a kill)
        self.restarts = 0

    def call(self, payload: dict, timeout_s: float) -> dict:
        child = self._idle.get()
        try:
            if child is None:
                child = _Child(self.module, self.startup_timeout_s)
            return child.request(payload, timeout_s)
        except (ChildTimeout, ChildFailed):
            if child is not None:
                child.kill()
                child = None
                self.restarts += 1
            raise
        finally:
            self._idle.put(child)

    def close(self) -> None:
        """Kill every idle child (call when no request is in flight)."""
        while True:
            try:
                child = self._idle.get_nowait()
            except queue.Empty:
                return
            if child is not None:
                child.kill()
