"""The program's process, INSIDE the sandbox (`python3 -I -S -B -c <plain.py + this file> <request fd> <reply fd>`).

It holds no test, no expected value and no verdict: it runs the program, then answers requests about the program's
names with plain data. Everything it sends is treated as untrusted (the program shares this interpreter and may
rewrite any of it, or write to the reply fd itself): the most it can achieve is to choose the values the checker
receives, which it could do anyway by returning them.

Protocol (JSON lines): stdin holds {"program": source, "timeout": s} (read to EOF); then it writes
{"id": 0, "ready": bool} (the program ran to its end without raising) on the reply fd and serves requests from the
request fd (both pipes lead straight to the checker), one reply line each:
- {"id": n, "op": "resolve", "names": [...]} -> {"id": n, "values": {name: {"callable": true} | {"value": plain}}}
  (names the program does not bind, or binds to a value that is not plain data, are left out);
- {"id": n, "op": "call", "name": str, "args": plain list, "kwargs": plain dict}
  -> {"id": n, "value": plain} or {"id": n, "raise": builtin exception name} under a `timeout` interval timer;
  a reply with a value also carries {"mutated": {position or name: plain or null}} for the list / dict / set /
  bytearray arguments the call changed in place.
"""
import builtins as _builtins
import os as _os
import signal as _signal
import sys as _sys


class _CallTimeout(BaseException):
    """BaseException: a generated `except Exception:` must not swallow the alarm."""


def _on_alarm(signum, frame):
    raise _CallTimeout()


def _exception_name(exc):
    name = type(exc).__name__
    known = getattr(_builtins, name, None)
    return name if isinstance(known, type) and issubclass(known, Exception) else "Exception"


def _mutated(request, args, kwargs):
    """{position or name: the argument's new plain value (None if it is no longer plain data)} for each list, dict,
    set or bytearray argument the call changed in place, so the checker can change the test's object the same way."""
    sent = dict(enumerate(request["args"]))
    sent.update((pair[0], pair[1]) for pair in request["kwargs"]["dict"])
    out = {}
    for key, value in list(enumerate(args)) + list(kwargs.items()):
        if type(value) not in (list, dict, set, bytearray):
            continue
        try:
            encoded = plain_encode(value)
        except PlainError:
            out[str(key)] = None
            continue
        if encoded != sent[key]:
            out[str(key)] = encoded
    return out


def _main():
    # Bound before the program runs; a program that rebinds them only breaks its own replies.
    write, request_fd, reply_fd, loads = _os.write, int(_sys.argv[1]), int(_sys.argv[2]), _json.loads
    readline = _os.fdopen(request_fd, "rb").readline
    setitimer, real = _signal.setitimer, _signal.ITIMER_REAL
    streams = (_sys.stdout, _sys.stderr)

    def flush():  # the host kills this process once the checker is done: hand over what was printed
        for stream in streams:
            try:
                stream.flush()
            except BaseException:  # noqa: B036
                pass

    def send(message):
        data = memoryview(plain_dumps(message))
        while data:
            data = data[write(reply_fd, data):]

    request = loads(_sys.stdin.buffer.read())
    program, timeout = request["program"], float(request["timeout"])
    del request
    _signal.signal(_signal.SIGALRM, _on_alarm)
    # __name__ is not "__main__": `if __name__ == "__main__":` blocks (which usually read stdin) do not run,
    # as with exec(code, {}) in the official reward code.
    namespace = {"__name__": "solution", "__builtins__": _builtins}
    try:
        setitimer(real, timeout)
        try:
            exec(compile(program, "<solution>", "exec"), namespace)
            ready = True
        finally:
            setitimer(real, 0)
    except BaseException:  # noqa: B036  (SystemExit, the alarm: the program did not run to its end)
        ready = False
    flush()
    send({"id": 0, "ready": ready})
    if not ready:
        return
    while True:
        line = readline()
        if not line:
            return
        try:
            request = loads(line)
            ident, op = request["id"], request["op"]
        except BaseException:  # noqa: B036  (a garbled request: nothing to answer)
            continue
        try:
            setitimer(real, timeout)
            try:
                if op == "resolve":
                    values = {}
                    for name in request["names"]:
                        if name not in namespace:
                            continue
                        value = namespace[name]
                        if callable(value):
                            values[name] = {"callable": True}
                        else:
                            try:
                                values[name] = {"value": plain_encode(value)}
                            except PlainError:
                                pass
                    reply = {"id": ident, "values": values}
                else:
                    function = namespace[request["name"]]
                    args = plain_decode(request["args"])
                    kwargs = plain_decode(request["kwargs"])
                    reply = {"id": ident, "value": plain_encode(function(*args, **kwargs))}
                    mutated = _mutated(request, args, kwargs)
                    if mutated:
                        reply["mutated"] = mutated
            finally:
                setitimer(real, 0)
        except BaseException as exc:  # noqa: B036  (the call failed: the checker raises this in the test)
            reply = {"id": ident, "raise": _exception_name(exc) if isinstance(exc, Exception) else "RuntimeError"}
        flush()
        try:
            send(reply)
        except ValueError:  # a value json cannot write (an int past the digit limit)
            send({"id": ident, "raise": "ValueError"})


_main()
