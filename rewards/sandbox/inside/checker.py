"""The checker, a long-lived process in its own sandbox
(`python3 -I -S -B -c <plain.py + this file> <socket fd> <1 if alone in a pid namespace else 0>`).

It decides every verdict and never receives the program's code: it executes the tests (trusted dataset source), each
in a child forked for that test, where each name of the program that the test uses is either a plain value fetched
from the program's process or a `RemoteFunction` whose calls travel to that process as plain data and come back as
fresh builtin objects (`plain_decode`). The program's process has no channel to this one except its reply pipe,
whose lines are data. A test that evaluates the program's output does run program code: hence the child, which has
no way to the host (the control socket is closed in it), can only write its own verdict byte, and is killed with
everything it started before the next test (see `_run_tests`).

Protocol with the host over a unix stream socket: the host starts a run with the byte b"N" carrying two file
descriptors (SCM_RIGHTS: the write end of the program's request pipe, the read end of its reply pipe), followed by
one JSON line {"tests": [...], "timeout": s, "ready_timeout": s, "force": [names], "helpers": source,
"max_line": bytes}. The checker
talks to the program's process directly on those pipes (no host hop per call) and answers the host with
b"R" + {"test": i, "passed": bool} per test, then b"R" + {"done": true, "program_ok": bool}.
Test code that prints writes to /dev/null (fd 1).
"""
import ast as _ast
import builtins as _builtins
import os as _os
import select as _select
import signal as _signal
import socket as _socket
import sys as _sys
from time import monotonic as _monotonic, sleep as _sleep

_CONTROL = _socket.socket(fileno=int(_sys.argv[1]))
_ISOLATED = _sys.argv[2] == "1"  # alone in a pid namespace (bwrap): kill(-1) reaches only our own processes
_os.dup2(_os.open(_os.devnull, _os.O_WRONLY), 1)
_BUILTIN_NAMES = frozenset(dir(_builtins))


def _not_dumpable():
    """PR_SET_DUMPABLE 0: a process of the same uid (a test's child running evaluated program output) can then
    neither open /proc/<checker>/mem nor use process_vm_writev / pidfd_getfd on the checker."""
    try:
        import ctypes
        if ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE = 4
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
    except (ImportError, OSError, AttributeError) as exc:
        raise SystemExit("checker: cannot make itself non-dumpable: %r" % (exc,))


_not_dumpable()


class _TestTimeout(BaseException):
    """BaseException: a test's own `except Exception:` must not swallow the per-test alarm."""


class ProgramGone(RuntimeError):
    """The program's process exited or stopped answering."""


def _on_alarm(signum, frame):
    raise _TestTimeout()


def _report(message):
    """A verdict line to the host; the per-test alarm is held back so it cannot cut the line in half."""
    _signal.pthread_sigmask(_signal.SIG_BLOCK, [_signal.SIGALRM])
    try:
        _CONTROL.sendall(b"R" + plain_dumps(message))
    finally:
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, [_signal.SIGALRM])


class _Run:
    """One run: the program's pipes, the id counter, and whether the program's process is gone."""

    def __init__(self, request_fd, reply_fd, max_line):
        self.request_fd, self.reply_fd, self.max_line = request_fd, reply_fd, max_line
        self.buffer, self.next_id, self.gone = b"", 1, False

    def _line(self):
        while b"\n" not in self.buffer:
            if len(self.buffer) > self.max_line:  # one reply over the cap: the program is cut off
                self.gone = True
                raise ProgramGone("reply over the size cap")
            data = _os.read(self.reply_fd, 1 << 16)  # os.read: the per-test alarm can interrupt the wait
            if not data:
                self.gone = True
                raise ProgramGone("the program's process is gone")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line

    def reply(self, ident):
        """The program's reply to request `ident` (other lines are stale replies of timed-out calls)."""
        while True:
            if self.gone:
                raise ProgramGone("the program's process is gone")
            try:
                message = _json.loads(self._line())
            except ValueError:
                continue
            if type(message) is dict and message.get("id") == ident:
                return message

    def request(self, message):
        if self.gone:
            raise ProgramGone("the program's process is gone")
        ident = self.next_id
        self.next_id += 1
        message["id"] = ident
        data = memoryview(plain_dumps(message))
        try:
            while data:
                data = data[_os.write(self.request_fd, data):]
        except OSError:  # BrokenPipeError: the program's process is gone
            self.gone = True
            raise ProgramGone("the program's process is gone") from None
        return self.reply(ident)

    def close(self):
        for fd in (self.request_fd, self.reply_fd):
            try:
                _os.close(fd)
            except OSError:
                pass


def _apply_mutation(target, data):
    """Change the test's argument in place as the program's call changed its copy (new contents are fresh builtins)."""
    if data is None:
        raise RuntimeError("the program put something that is not plain data into an argument")
    new = plain_decode(data)
    if type(new) is not type(target):
        raise RuntimeError("the program's reply changed an argument's type")
    if type(target) is dict or type(target) is set:
        target.clear()
        target.update(new)
    else:  # list, bytearray
        target[:] = new


class RemoteFunction:
    """A function of the program: arguments go out as plain data, the result comes back as fresh builtins."""

    def __init__(self, run, name):
        self._run, self._name = run, name

    def __call__(self, *args, **kwargs):
        reply = self._run.request({"op": "call", "name": self._name, "args": plain_encode(list(args)),
                                   "kwargs": plain_encode(dict(kwargs))})
        if "value" in reply:
            value = plain_decode(reply["value"])
            mutated = reply.get("mutated")
            for key, data in (mutated.items() if type(mutated) is dict else ()):
                _apply_mutation(args[int(key)] if key.isdigit() else kwargs[key], data)
            return value
        name = reply.get("raise")
        exc_type = getattr(_builtins, name, None) if type(name) is str else None
        # StopIteration / StopAsyncIteration re-raised here would end the test's own iteration early (`all(map(f,
        # xs))` passes): like PEP 479 for generators, they become a RuntimeError in the test.
        if isinstance(exc_type, type) and issubclass(exc_type, (StopIteration, StopAsyncIteration)):
            raise RuntimeError("the program raised %s" % name)
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


def _test_namespace(run, wanted, test_builtins):
    """The names of the program a test uses: plain values, or RemoteFunctions (names left out raise NameError)."""
    namespace = {"__name__": "__check__", "__builtins__": test_builtins}
    values = run.request({"op": "resolve", "names": wanted}).get("values")
    for name, entry in (values.items() if type(values) is dict else ()):
        if name not in wanted or type(entry) is not dict:
            continue
        if entry.get("callable") is True:
            namespace[name] = RemoteFunction(run, name)
        elif "value" in entry:
            namespace[name] = plain_decode(entry["value"])
    return namespace


def _test_child(run, index, source, wanted, test_builtins, verdict_fd, helpers):
    """In the forked child: resolve the names, run one test, write b"r" (names resolved) then b"1" or b"0"."""
    try:
        _CONTROL.close()  # the child has no way to the host: it can only report its own test, on verdict_fd
        _signal.signal(_signal.SIGALRM, _signal.SIG_DFL)
        run.next_id = (index + 1) << 32  # this test's request ids: stale replies of earlier tests never match
        try:
            namespace = _test_namespace(run, wanted, test_builtins)
        except BaseException:  # noqa: B036  (no names: tests that use them fail with NameError)
            namespace = {"__name__": "__check__", "__builtins__": test_builtins}
        _os.write(verdict_fd, b"r")
        try:
            if helpers:  # the prompt's own helper functions, from the dataset: they shadow the program's versions
                exec(compile(helpers, "<helpers>", "exec"), namespace)
            exec(compile(source, "<test %d>" % index, "exec"), namespace)
            verdict = b"1"
        except BaseException:  # noqa: B036  (AssertionError, ProgramGone, anything: not passed)
            verdict = b"0"
        _os.write(verdict_fd, verdict)
    finally:
        _os._exit(0)


def _read_verdict(verdict_fd, timeout):
    """b"1" if the child passed its test within `timeout` (plus `timeout` for resolving the names), else b"0"."""
    got = b""
    phase_end = _monotonic() + timeout
    while got[-1:] not in (b"0", b"1"):
        remaining = phase_end - _monotonic()
        if remaining <= 0 or not _select.select([verdict_fd], [], [], remaining)[0]:
            return b"0"
        data = _os.read(verdict_fd, 1)
        if not data:
            return b"0"
        got += data
        if data == b"r":  # names resolved: the test itself gets its full timeout
            phase_end = _monotonic() + timeout
    return got[-1:] if got[:1] == b"r" else b"0"


def _end_test(pid):
    """Kill the test's child and everything it started. In a pid namespace of our own (bwrap), kill(-1) reaches
    every process in it but its init and this one: a test cannot leave a process behind for the next test."""
    try:
        _os.kill(pid, _signal.SIGKILL)
    except ProcessLookupError:
        pass
    _os.waitpid(pid, 0)
    if not _ISOLATED:
        return
    me = _os.getpid()
    for _ in range(1000):
        try:
            _os.kill(-1, _signal.SIGKILL)
        except ProcessLookupError:  # nothing left to signal
            pass
        try:
            while _os.waitpid(-1, _os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
        if not any(_alive(int(name)) for name in _os.listdir("/proc") if name.isdigit() and int(name) not in (1, me)):
            return
        _sleep(0.001)
    raise SystemExit("a test's processes could not be killed")  # the host replaces this checker


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _run_tests(run, spec):
    tests, timeout = spec["tests"], float(spec["timeout"])
    try:
        ready = _with_alarm(float(spec["ready_timeout"]), run.reply, 0).get("ready") is True
    except BaseException:  # noqa: B036  (timeout or gone: the program did not run)
        ready = False
    if not ready:
        _report({"done": True, "program_ok": False})
        return
    # Builtins stay the checker's own (a program defining `len` does not change the tests' len), except the
    # names the host forces (the entry point). A forced name the program does not bind must raise NameError, not
    # fall back to the builtin of that name (entry_point="sorted"): the tests see builtins without the forced names.
    forced = set(spec.get("force", ()))
    helpers = spec.get("helpers") or ""
    wanted = sorted((_free_names(tests + ([helpers] if helpers else [])) - _BUILTIN_NAMES) | forced)
    test_builtins = {name: value for name, value in vars(_builtins).items() if name not in forced}
    # Each test runs in a forked child that can only write its own verdict byte: whatever a test executes (tests
    # that eval the program's output run program code) cannot touch this process, the host socket, another test
    # or a later run; the child and all it started are killed after its verdict or its timeout.
    for index, source in enumerate(tests):
        verdict_r, verdict_w = _os.pipe()
        pid = _os.fork()
        if pid == 0:
            _os.close(verdict_r)
            _test_child(run, index, source, wanted, test_builtins, verdict_w, helpers)
        _os.close(verdict_w)
        try:
            verdict = _read_verdict(verdict_r, timeout)
        finally:
            _os.close(verdict_r)
            _end_test(pid)
        try:  # end a request line a killed child may have left half-written (the program skips the empty line)
            _os.write(run.request_fd, b"\n")
        except OSError:
            pass
        _report({"test": index, "passed": verdict == b"1"})
    _report({"done": True, "program_ok": True})


def _main():
    _signal.signal(_signal.SIGALRM, _on_alarm)
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
    _signal.signal(_signal.SIGPIPE, _signal.SIG_IGN)
    # Every test needs a fork: a checker that cannot fork (its uid at the process limit) fails its start, so the
    # host retries it under a fresh uid instead of failing the row it was started for.
    pid = _os.fork()
    if pid == 0:
        _os._exit(0)
    _os.waitpid(pid, 0)
    _report({"ready": True})
    buffer = b""
    while True:
        marker, fds, _, _ = _socket.recv_fds(_CONTROL, 1, 2)
        if not marker:
            raise SystemExit(0)  # the host closed the socket: shut down
        while b"\n" not in buffer:
            data = _CONTROL.recv(1 << 16)
            if not data:
                raise SystemExit(0)
            buffer += data
        line, buffer = buffer.split(b"\n", 1)
        spec = _json.loads(line)
        run = _Run(fds[0], fds[1], int(spec["max_line"]))
        try:
            _run_tests(run, spec)
        finally:
            run.close()


_main()
