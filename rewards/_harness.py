"""The test harness that runs INSIDE the sandbox, under the system python (`python3 -I -S -B -c <this file>`).

It imports nothing from the project (the project tree is not visible in the sandbox). Protocol:
- stdin: one JSON object {"token": str, "program": str, "tests": [str], "timeout": float}, read to EOF first.
- argv[1]: the number of an inherited pipe (the report channel), separate from stdout/stderr.
- For the program and for each test it writes one line `<token> program 1|0` / `<token> test <i> 1|0` to the report
  pipe, then `<token> done`. The host counts a test as passed only from such a line carrying its per-run token.

Why this defeats exit-code hacks: `exit(0)`, `sys.exit`, `os._exit`, `raise SystemExit` or killing the parent end the
process before the harness writes the pass line of the tests that did not run, and a printed fake marker cannot carry
the token, which is drawn fresh on the host for every run and appears in no program text.
"""
import json
import os
import signal
import sys


class _TestTimeout(BaseException):
    """BaseException, not Exception: a generated `except Exception:` must not swallow the per-test alarm."""


def _on_alarm(signum, frame):
    raise _TestTimeout()


def _run(source, namespace, timeout):
    """Execute `source` in `namespace` under an interval timer; True iff it ran to its end without raising."""
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            exec(compile(source, "<solution>", "exec"), namespace)
            return True
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except BaseException:  # noqa: B036  (SystemExit, KeyboardInterrupt, the alarm: all mean "did not pass")
        return False


def _main():
    # Bound before any untrusted code runs, so a program that rebinds os.write or print cannot reach the reporter.
    write = os.write
    report_fd = int(sys.argv[1])
    request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    token = request.pop("token").encode()
    program, tests, timeout = request["program"], request["tests"], float(request["timeout"])
    del request

    def report(line):
        try:  # a leading newline so that a program's unterminated output cannot glue onto our line
            write(report_fd, b"\n" + token + b" " + line.encode() + b"\n")
        except OSError:  # the program closed or replaced the report pipe: its remaining tests simply fail
            pass

    signal.signal(signal.SIGALRM, _on_alarm)
    # __name__ is not "__main__": like exec(code, {}) in the official reward code, `if __name__ == "__main__":`
    # blocks of a generated program do not run (they usually read stdin, which is closed here).
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    program_ok = _run(program, namespace, timeout)
    report("program %d" % program_ok)
    for index, test in enumerate(tests):
        report("test %d %d" % (index, program_ok and _run(test, namespace, timeout)))
    report("done")


_main()
