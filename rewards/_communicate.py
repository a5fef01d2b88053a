"""The host's side of one sandboxed run: relay lines between the program's process and the checker, under a
deadline and byte caps, and collect the checker's verdicts.

`subprocess.communicate` reads without bound and its timeout does not kill the child's process group, so this is a
selector loop over non-blocking pipes. The verdicts come only from the checker's stdout (`R` lines); the program's
process can reach the checker only through its reply fd, whose lines are relayed verbatim (each capped at
`max_line` bytes) with a `C` prefix, so they are data to the checker, never verdicts.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass, field

GONE = b'H{"gone":true}\n'


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


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group (it was started with start_new_session=True, so pgid == pid)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _Outbox:
    """Bytes waiting to be written to a non-blocking fd."""

    def __init__(self, fd: int) -> None:
        self.fd, self.data = fd, bytearray()
        os.set_blocking(fd, False)

    def flush(self) -> bool:
        """Write what the pipe takes; False when the reader is gone."""
        try:
            while self.data:
                self.data = self.data[os.write(self.fd, self.data[:1 << 16]):]
        except BlockingIOError:
            pass
        except (BrokenPipeError, OSError):
            self.data.clear()
            return False
        return True


def relay(proc: subprocess.Popen, reply_fd: int, checker_in: int, checker_out: int, *, first: bytes,
          run_message: bytes, deadline: float, max_output: int, max_line: int) -> Outcome:
    """Run one program against the checker until the checker is done, the deadline passes or output overflows."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out = Outcome()
    stdout_fd, stderr_fd = proc.stdout.fileno(), proc.stderr.fileno()
    captured: dict[int, bytearray] = {stdout_fd: bytearray(), stderr_fd: bytearray()}
    to_child, to_checker = _Outbox(proc.stdin.fileno()), _Outbox(checker_in)
    to_child.data += first
    to_checker.data += run_message
    child_buffer, checker_buffer = bytearray(), bytearray()
    child_gone = False

    def program_gone() -> None:
        nonlocal child_gone
        if not child_gone:
            child_gone = True
            kill_group(proc)
            to_child.data.clear()
            to_checker.data += GONE

    with selectors.DefaultSelector() as sel:
        for fd in (stdout_fd, stderr_fd, reply_fd, checker_out):
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        writers: dict[int, _Outbox] = {}
        while not out.finished:
            for box in (to_child, to_checker):
                want = bool(box.data)
                if want and box.fd not in writers:
                    sel.register(box.fd, selectors.EVENT_WRITE)
                    writers[box.fd] = box
                elif not want and box.fd in writers:
                    sel.unregister(box.fd)
                    del writers[box.fd]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                out.timed_out = True
                break
            for key, _ in sel.select(remaining):
                fd = key.fd
                if fd in writers:
                    if not writers[fd].flush():
                        if fd == checker_in:
                            out.checker_failed = True
                        else:
                            program_gone()
                    continue
                try:
                    data = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if fd == checker_out:
                    if not data:
                        out.checker_failed = True
                        break
                    checker_buffer += data
                    while b"\n" in checker_buffer and not out.finished:
                        line, _, rest = bytes(checker_buffer).partition(b"\n")
                        checker_buffer = bytearray(rest)
                        _checker_line(line, out, to_child if not child_gone else None)
                    if len(checker_buffer) > max_line:
                        out.checker_failed = True
                        break
                    continue
                if not data:
                    sel.unregister(fd)
                    if fd == reply_fd:
                        program_gone()
                    continue
                if fd == reply_fd:
                    child_buffer += data
                    while b"\n" in child_buffer:
                        line, _, rest = bytes(child_buffer).partition(b"\n")
                        child_buffer = bytearray(rest)
                        to_checker.data += b"C" + line + b"\n"
                    if len(child_buffer) > max_line:  # one reply over the cap: the program is cut off
                        program_gone()
                        child_buffer.clear()
                    continue
                captured[fd] += data
                if len(captured[stdout_fd]) + len(captured[stderr_fd]) > max_output and not out.capped:
                    out.capped = True
                    program_gone()
            if out.checker_failed:
                break
    for fd in (stdout_fd, stderr_fd):  # what the program printed before the end (best effort, informational)
        try:
            while len(captured[fd]) <= max_output and (data := os.read(fd, 1 << 16)):
                captured[fd] += data
        except (BlockingIOError, OSError):
            pass
    kill_group(proc)
    out.returncode = proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if not pipe.closed:
            pipe.close()
    out.stdout = bytes(captured[stdout_fd][:max_output])
    out.stderr = bytes(captured[stderr_fd][:max_output])
    return out


def _checker_line(line: bytes, out: Outcome, to_child: _Outbox | None) -> None:
    kind, body = line[:1], line[1:]
    if kind == b"S":
        if to_child is not None:
            to_child.data += body + b"\n"
        return
    if kind != b"R":
        out.checker_failed = True
        return
    message = json.loads(body)
    if "test" in message:
        out.passed[int(message["test"])] = message["passed"] is True
    elif message.get("done"):
        out.finished, out.program_ok = True, message.get("program_ok") is True
