"""The host's side of one sandboxed run: feed the program, cap its output, enforce the deadline, and collect the
checker's verdicts.

`subprocess.communicate` reads without bound and its timeout does not kill the child's process group, so this is a
selector loop over non-blocking pipes. The program's process and the checker talk directly over two pipes the
checker received for this run; the verdicts come only from the checker's control socket (`R` lines), which the
program's process cannot reach.
"""
from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import time
from dataclasses import dataclass, field

from rewards.sandbox.processes import kill_group


@dataclass
class Outcome:
    stdout: bytes = b""
    stderr: bytes = b""
    returncode: int | None = None
    timed_out: bool = False
    capped: bool = False
    program_ok: bool = False
    finished: bool = False  # the checker reported "done"
    checker_failed: bool = False  # the checker died or wrote garbage (it is replaced)
    passed: dict[int, bool] = field(default_factory=dict)


def relay(proc: subprocess.Popen, checker: socket.socket, *, program: bytes, deadline: float,
          max_output: int, tests: int) -> Outcome:
    """Run one program until the checker is done, the deadline passes, or the checker fails; the program's group
    is killed at the end in every case (after "done" it only waits for requests that will not come)."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out = Outcome()
    stdout_fd, stderr_fd, stdin_fd = proc.stdout.fileno(), proc.stderr.fileno(), proc.stdin.fileno()
    captured: dict[int, bytearray] = {stdout_fd: bytearray(), stderr_fd: bytearray()}
    pending = memoryview(program)
    verdicts = bytearray()
    with selectors.DefaultSelector() as sel:
        for fd in (stdout_fd, stderr_fd):
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        sel.register(checker, selectors.EVENT_READ)
        os.set_blocking(stdin_fd, False)
        sel.register(stdin_fd, selectors.EVENT_WRITE)
        while not out.finished and not out.checker_failed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                out.timed_out = True
                break
            for key, _ in sel.select(remaining):
                if key.fd == stdin_fd:
                    try:
                        pending = pending[os.write(stdin_fd, pending[:1 << 16]):]
                    except BlockingIOError:
                        continue
                    except OSError:  # the program's process is gone before reading its program
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(stdin_fd)
                        proc.stdin.close()
                elif key.fileobj is checker:
                    try:
                        data = checker.recv(1 << 16)
                    except OSError:
                        data = b""
                    if not data:
                        out.checker_failed = True
                        break
                    verdicts += data
                    while b"\n" in verdicts and not out.checker_failed:
                        line, _, rest = bytes(verdicts).partition(b"\n")
                        verdicts = bytearray(rest)
                        _verdict(line, out, tests)
                    if len(verdicts) > 1 << 20 or (out.finished and verdicts):  # bytes after "done"
                        out.checker_failed = True
                else:
                    try:
                        data = os.read(key.fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    if not data:
                        sel.unregister(key.fd)
                        continue
                    captured[key.fd] += data
                    if len(captured[stdout_fd]) + len(captured[stderr_fd]) > max_output and not out.capped:
                        out.capped = True  # the checker sees the reply pipe close and fails what is left
                        kill_group(proc)
    for fd in (stdout_fd, stderr_fd):  # what the program printed before the end (best effort, informational)
        try:
            while len(captured[fd]) <= max_output and (data := os.read(fd, 1 << 16)):
                captured[fd] += data
        except OSError:
            pass
    kill_group(proc)
    out.returncode = proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if not pipe.closed:
            pipe.close()
    out.stdout = bytes(captured[stdout_fd][:max_output])
    out.stderr = bytes(captured[stderr_fd][:max_output])
    return out


def _verdict(line: bytes, out: Outcome, tests: int) -> None:
    """Accept exactly one verdict per test, in order, then "done" after the last one; anything else (a repeated,
    skipped or out-of-range test, a line after "done", garbage) fails the checker, which is then replaced."""
    try:
        message = json.loads(line[1:]) if line[:1] == b"R" else None
    except ValueError:
        message = None
    if out.finished or type(message) is not dict:
        out.checker_failed = True
    elif set(message) == {"test", "passed"}:
        if message["test"] != len(out.passed) or len(out.passed) >= tests or type(message["passed"]) is not bool:
            out.checker_failed = True
        else:
            out.passed[len(out.passed)] = message["passed"]
    elif set(message) == {"done", "program_ok"} and message["done"] is True:
        if message["program_ok"] is True and len(out.passed) != tests:
            out.checker_failed = True  # "done" before every test was reported
        else:
            out.finished, out.program_ok = True, message["program_ok"] is True
    else:
        out.checker_failed = True
