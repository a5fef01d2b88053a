"""Feed a child its stdin and read its stdout, stderr and one report pipe, under a deadline and a byte cap.

`subprocess.communicate` reads without bound (a program printing 1 GB would fill our memory) and its timeout does not
kill the child's process group, so the sandbox uses this loop instead.
"""
from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass

REPORT_CAP = 1 << 20  # the harness writes a few bytes per test; more than this is a program flooding the pipe


@dataclass
class Outcome:
    stdout: bytes
    stderr: bytes
    report: bytes
    returncode: int | None
    timed_out: bool
    capped: bool


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group (it was started with start_new_session=True, so pgid == pid)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def communicate(proc: subprocess.Popen, payload: bytes, report_fd: int, *, deadline: float,
                max_output: int) -> Outcome:
    """Write `payload` to stdin, collect output until every pipe closes; kill the group on deadline or cap."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdout_fd, stderr_fd = proc.stdout.fileno(), proc.stderr.fileno()
    chunks: dict[int, list[bytes]] = {stdout_fd: [], stderr_fd: [], report_fd: []}
    sizes = {fd: 0 for fd in chunks}
    stdin_fd = proc.stdin.fileno()
    os.set_blocking(stdin_fd, False)
    view, offset = memoryview(payload), 0
    timed_out = capped = False
    with selectors.DefaultSelector() as sel:
        for fd in chunks:
            sel.register(fd, selectors.EVENT_READ)
        sel.register(stdin_fd, selectors.EVENT_WRITE)
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in sel.select(remaining):
                fd = key.fd
                if fd == stdin_fd:
                    try:
                        offset += os.write(fd, view[offset:offset + 65536])
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        offset = len(payload)  # the child is gone; its exit status tells the rest
                    if offset >= len(payload):
                        sel.unregister(fd)
                        proc.stdin.close()
                    continue
                data = os.read(fd, 65536)
                if not data:
                    sel.unregister(fd)
                    continue
                chunks[fd].append(data)
                sizes[fd] += len(data)
            output = sizes[stdout_fd] + sizes[stderr_fd]
            if output > max_output or sizes[report_fd] > REPORT_CAP:
                capped = True
                break
    returncode = proc.poll()
    if returncode is None and not (timed_out or capped):
        try:  # every pipe is closed; give the process tree the rest of the deadline to exit
            returncode = proc.wait(timeout=max(0.05, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
    if returncode is None:
        kill_group(proc)
        returncode = proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if not pipe.closed:
            pipe.close()
    stdout = b"".join(chunks[stdout_fd])[:max_output]
    stderr = b"".join(chunks[stderr_fd])[:max_output]
    return Outcome(stdout=stdout, stderr=stderr, report=b"".join(chunks[report_fd]), returncode=returncode,
                   timed_out=timed_out, capped=capped)
