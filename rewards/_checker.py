"""The checker, a long-lived process in its own sandbox (`python3 -I -S -B -c <_plain.py + this file>`).

It decides every verdict and never runs the program's code: it executes the tests (trusted dataset source) in its own
interpreter, where each name of the program that a test uses is either a plain value fetched once from the program's
process or a `RemoteFunction` whose calls travel to that process as plain data and come back as fresh builtin objects
(`plain_decode`). The program's process has no channel to this one except those reply lines, relayed by the host.

Protocol with the host, one line each way, first byte the kind:
- host -> checker: b"N" + JSON {"tests": [...], "timeout": s, "ready_timeout": s, "force": [names]} starts a run;
  b"C" + a line the program's process wrote (relayed verbatim); b"H" + {"gone": true}: that process is gone.
- checker -> host: b"S" + JSON request for the program's process; b"R" + {"test": i, "passed": bool} per test and
  finally b"R" + {"done": true, "program_ok": bool}.
Test code that prints writes to /dev/null: fd 1 is replaced once the protocol channel is saved.
"""
import ast as _ast
import builtins as _builtins
import os as _os
import signal as _signal

_OUT = _os.dup(1)
_os.dup2(_os.open(_os.devnull, _os.O_WRONLY), 1)
_BUILTIN_NAMES = frozenset(dir(_builtins))


class _TestTimeout(BaseException):
    """BaseException: a test's own `except Exception:` must not swallow the per-test alarm."""


class ProgramGone(RuntimeError):
    """The program's process exited or stopped answering."""


def _on_alarm(signum, frame):
    raise _TestTimeout()


def _send(kind, message):
    data = memoryview(kind + plain_dumps(message))
    # The per-test alarm must not cut a line in half: it is held back until the line is written.
    _signal.pthread_sigmask(_signal.SIG_BLOCK, [_signal.SIGALRM])
    try:
        while data:
            data = data[_os.write(_OUT, data):]
    finally:
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, [_signal.SIGALRM])


class _Lines:
    """Newline-split reads of fd 0 (os.read, so the per-test alarm can interrupt a wait)."""

    def __init__(self):
        self.buffer = b""

    def next(self):
        while b"\n" not in self.buffer:
            data = _os.read(0, 1 << 16)
            if not data:
                raise SystemExit(0)  # the host closed our stdin: shut down
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line


class _Run:
    """The state of one run: the id counter and whether the program's process is gone."""

    def __init__(self, lines):
        self.lines, self.next_id, self.gone = lines, 1, False

    def reply(self, ident):
        """The program's reply to request `ident` (other lines are stale replies of timed-out calls)."""
        while True:
            if self.gone:
                raise ProgramGone("the program's process is gone")
            line = self.lines.next()
            if line[:1] == b"H":
                self.gone = True
                continue
            if line[:1] != b"C":
                continue
            try:
                message = _json.loads(line[1:])
            except ValueError:
                continue
            if type(message) is dict and message.get("id") == ident:
                return message

    def request(self, message):
        ident = self.next_id
        self.next_id += 1
        if self.gone:
            raise ProgramGone("the program's process is gone")
        message["id"] = ident
        _send(b"S", message)
        return self.reply(ident)


class RemoteFunction:
    """A function of the program: arguments go out as plain data, the result comes back as fresh builtins."""

    def __init__(self, run, name):
        self._run, self._name = run, name

    def __call__(self, *args, **kwargs):
        reply = self._run.request({"op": "call", "name": self._name, "args": plain_encode(list(args)),
                                   "kwargs": plain_encode(dict(kwargs))})
        if "value" in reply:
            return plain_decode(reply["value"])
        name = reply.get("raise")
        exc_type = getattr(_builtins, name, None) if type(name) is str else None
        if isinstance(exc_type, type) and issubclass(exc_type, Exception):
            raise exc_type("raised by the program")
        raise RuntimeError("the program's call failed")

    def __repr__(self):
        return "<program function %s>" % self._name


def _free_names(tests):
    names = set()
    for source in tests:
        try:
            tree = _ast.parse(source)
        except (SyntaxError, ValueError):
            continue
        names.update(node.id for node in _ast.walk(tree) if isinstance(node, _ast.Name))
    return names


def _with_alarm(seconds, function, *args):
    _signal.setitimer(_signal.ITIMER_REAL, seconds)
    try:
        return function(*args)
    finally:
        _signal.setitimer(_signal.ITIMER_REAL, 0)


def _run_tests(lines, spec):
    run = _Run(lines)
    tests, timeout = spec["tests"], float(spec["timeout"])
    try:
        ready = _with_alarm(float(spec["ready_timeout"]), run.reply, 0).get("ready") is True
    except BaseException:  # noqa: B036  (timeout or gone: the program did not run)
        ready = False
    if not ready:
        _send(b"R", {"done": True, "program_ok": False})
        return
    # Builtins stay the checker's own (a program defining `len` does not change the tests' len), except the
    # names the host forces (the entry point).
    wanted = sorted((_free_names(tests) - _BUILTIN_NAMES) | set(spec.get("force", ())))
    namespace = {"__name__": "__check__", "__builtins__": _builtins}
    try:
        values = _with_alarm(timeout, run.request, {"op": "resolve", "names": wanted}).get("values")
        for name, entry in (values.items() if type(values) is dict else ()):
            if name not in wanted or type(entry) is not dict:
                continue
            if entry.get("callable") is True:
                namespace[name] = RemoteFunction(run, name)
            elif "value" in entry:
                namespace[name] = plain_decode(entry["value"])
    except BaseException:  # noqa: B036  (no names: tests that use them fail with NameError)
        pass
    for index, source in enumerate(tests):
        try:
            _with_alarm(timeout, exec, compile(source, "<test %d>" % index, "exec"), namespace)
            passed = True
        except BaseException:  # noqa: B036  (AssertionError, the alarm, ProgramGone, anything: not passed)
            passed = False
        _send(b"R", {"test": index, "passed": passed})
    _send(b"R", {"done": True, "program_ok": True})


def _main():
    _signal.signal(_signal.SIGALRM, _on_alarm)
    lines = _Lines()
    _send(b"R", {"ready": True})
    while True:
        line = lines.next()
        if line[:1] == b"N":  # anything else is a late line of an earlier run
            _run_tests(lines, _json.loads(line[1:]))


_main()
