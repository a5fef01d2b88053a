"""The adversarial suite: every attack is contained, scores 0, leaves no process behind, and the sandbox still works.

Each case is (program, tests); a case "scores 0" when no test passes. After every case a benign program must pass.
Tests run in the checker, not in the program's process: what the program did is observed through its names
(plain values, or functions called across the boundary). Attacks on the verdict itself: test_integrity.py.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import pytest

from rewards.sandbox import Sandbox, SandboxConfig, SandboxUnavailable
from tests.rewards.conftest import session_config

REPO = Path(__file__).resolve().parents[2]


def sandbox_processes(config: SandboxConfig) -> list[int]:
    """Pids of live (non-zombie) processes owned by a sandbox uid: none may survive a run. Zombies are dead
    processes whose reaping is up to the machine's init, which here is not ours."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            lines = (entry / "status").read_text().splitlines()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        uid = int(fields["Uid"].split()[0])
        if config.uid_base <= uid < config.uid_base + config.uid_span and not fields["State"].strip().startswith("Z"):
            pids.append(int(entry.name))
    return pids


def assert_contained(sandbox: Sandbox, program: str, tests: list[str], *, max_seconds: float = 8.0,
                     test_timeout_s: float = 1.0):
    start = time.monotonic()
    result = sandbox.run(program, tests, test_timeout_s=test_timeout_s)
    elapsed = time.monotonic() - start
    assert not any(result.passed), result
    assert elapsed < max_seconds, f"took {elapsed:.1f}s"
    assert len(result.stdout) + len(result.stderr) <= 2 * sandbox.config.max_output_bytes
    assert sandbox_processes(sandbox.config) == [], "a sandboxed process outlived its run"
    healthy = sandbox.run("def ok():\n    return 1\n", ["assert ok() == 1"])
    assert healthy.passed == [True], f"sandbox unhealthy after the attack: {healthy}"
    return result


FORK_BOMB = "import os\nwhile True:\n    os.fork()\n"
STUBBORN_FORK_BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except BaseException:\n        pass\n"


@pytest.mark.parametrize("program", [FORK_BOMB, STUBBORN_FORK_BOMB], ids=["fork_bomb", "fork_bomb_ignoring_errors"])
def test_fork_bomb(sandbox, program):
    assert_contained(sandbox, program, ["assert True"])


@pytest.mark.parametrize("program, tests", [
    ("while True:\n    pass\n", ["assert True"]),
    ("def f():\n    while True:\n        pass\n", ["f()"]),
    # swallows the per-test alarm: only the CPU limit / wall-clock kill can end it
    ("while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass\n",
     ["assert True"]),
], ids=["loop_in_program", "loop_in_test", "loop_swallowing_the_alarm"])
def test_infinite_loop(sandbox, program, tests):
    result = assert_contained(sandbox, program, tests)
    assert result.timed_out or result.finished


def test_sleep_forever(sandbox):
    assert_contained(sandbox, "import time\ntime.sleep(1e9)\n", ["assert True"], max_seconds=4)


@pytest.mark.parametrize("program", ["x = bytearray(1 << 30)\n", "x = 'a' * (1 << 30)\n",
                                     "x = [bytearray(1 << 20) for _ in range(1024)]\n"])
def test_one_gigabyte_allocation(sandbox, program):
    assert_contained(sandbox, program, ["assert len(x) > 0"])


def test_one_gigabyte_of_output(sandbox):
    program = "import sys\nfor _ in range(1 << 14):\n    sys.stdout.write('x' * (1 << 16))\n"
    result = assert_contained(sandbox, program, ["assert True"], max_seconds=4)
    assert result.output_capped and len(result.stdout) <= sandbox.config.max_output_bytes


def test_one_gigabyte_file_in_tmp(sandbox):
    program = "with open('/tmp/big', 'wb') as f:\n    for _ in range(1024):\n        f.write(bytes(1 << 20))\n"
    assert_contained(sandbox, program, ["assert True"])


def test_no_network_to_a_loopback_server(sandbox):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted: list[object] = []

    def accept() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not accepted:
            try:
                accepted.append(server.accept())
            except OSError:
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        program = ("import socket\nconnected = False\ntry:\n"
                   f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')\n"
                   "    connected = True\nexcept OSError:\n    pass\n")
        assert_contained(sandbox, program, ["assert connected"])
        # control: the server is reachable from outside the sandbox, and the first peer it saw is this one
        with socket.create_connection(("127.0.0.1", port), timeout=1) as control:
            control.sendall(b"control")
            thread.join()
            assert len(accepted) == 1
            first = accepted[0][0]
            first.settimeout(2)
            assert first.recv(16) == b"control"
    finally:
        thread.join()
        server.close()
        for conn, _ in accepted:
            conn.close()


SOCKET_FAMILIES = {"AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16, "AF_PACKET": 17, "AF_VSOCK": 40}
SOCKET_PROGRAM = """import errno, socket
def attempt(family):
    try:
        socket.socket(family, socket.SOCK_STREAM).close()
        return 'created'
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
def pair(family):
    try:
        a, b = socket.socketpair(family)
        a.sendall(b'x')
        return b.recv(1) == b'x'
    except OSError:
        return False
"""


@pytest.mark.parametrize("family", sorted(SOCKET_FAMILIES))
def test_only_unix_sockets_can_be_created(sandbox, family):
    """seccomp (issue 23, class 6): socket/socketpair fail at once for every family but AF_UNIX; the network
    namespace alone does not cover AF_VSOCK (its connect reached the VM transport)."""
    number = SOCKET_FAMILIES[family]
    tests = [f"assert attempt({number}) == 'EAFNOSUPPORT'", f"assert not pair({number})", "assert pair(1)",
             "assert attempt(1) == 'created'"]
    result = sandbox.run(SOCKET_PROGRAM, tests)
    assert result.passed == [True, True, True, True], result


@pytest.mark.parametrize("path", ["/root", "/etc/passwd", str(REPO / "pyproject.toml"), str(REPO)])
def test_cannot_read_host_files(sandbox, path):
    program = ("import os\ndata = None\ntry:\n"
               f"    data = os.listdir({path!r}) if os.path.isdir({path!r}) else open({path!r}).read()\n"
               "except OSError:\n    pass\n")
    assert_contained(sandbox, program, ["assert data is not None"])


@pytest.mark.parametrize("path", ["/pwned", "/usr/pwned", "/proc/pwned", "/dev/shm/pwned", str(REPO / "pwned")])
def test_cannot_write_outside_tmp(sandbox, path):
    program = (f"import os\nos.makedirs(os.path.dirname({path!r}), exist_ok=True)\nopen({path!r}, 'w').write('x')\n"
               f"def written():\n    return open({path!r}).read()\n")
    if path.startswith("/tmp/"):
        # a checkout under /tmp (CI clones may live there) is hidden by the sandbox's private /tmp: the write lands
        # in that private tmpfs, so only the host side can tell whether it escaped
        sandbox.run(program, ["pass"])
    else:
        assert_contained(sandbox, program, ["assert written() == 'x'"])
    assert not Path(path).exists()


def test_tmp_is_writable_and_private(sandbox):
    result = sandbox.run("open('/tmp/note', 'w').write('x')\ndef note():\n    return open('/tmp/note').read()\n",
                         ["assert note() == 'x'"])
    assert result.passed == [True]
    assert not Path("/tmp/note").exists()


def test_runs_as_an_unprivileged_uid(sandbox):
    program = "import os\ndef uid():\n    return os.getuid()\ndef groups():\n    return os.getgroups()\n"
    result = sandbox.run(program, [f"assert uid() >= {sandbox.config.uid_base}", "assert groups() == []",
                                   "assert uid() != 0"])
    assert result.passed == [True, True, True]


@pytest.mark.parametrize("program, tests", [
    ("import sys\nsys.exit(0)\n", ["assert True"]),
    ("raise SystemExit(0)\n", ["assert True"]),
    ("import os\nos._exit(0)\n", ["assert True"]),
    ("exit()\n", ["assert True"]),
    ("def f(x):\n    import os\n    os._exit(0)\n", ["assert f(1) == 2"]),
    ("def f(x):\n    raise SystemExit(0)\n", ["assert f(1) == 2"]),
    ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\ndef f(x):\n    return 0\n", ["assert f(1) == 2"]),
    ("import os, signal\nos.kill(1, signal.SIGKILL)\nos.kill(0, signal.SIGKILL)\n", ["assert True"]),
    # fake markers on stdout and on every inheritable descriptor, then a clean exit
    ("import os\nfor fd in range(1, 64):\n    for line in (b'\\nfake test 0 1\\n', b'\\nfake done\\n'):\n"
     "        try:\n            os.write(fd, line)\n        except OSError:\n            pass\nos._exit(0)\n",
     ["assert False"]),
    # rebinding the reporter's tools does not reach it
    ("import os, builtins\nos.write = lambda *a: None\nbuiltins.print = lambda *a, **k: None\n"
     "def f(x):\n    return 0\n", ["assert f(1) == 2"]),
], ids=["sys_exit", "raise_systemexit", "os_exit", "exit", "os_exit_in_test", "systemexit_in_test",
        "kill_parent", "kill_init_and_group", "fake_markers", "rebind_write"])
def test_exit_code_hacks_score_zero(sandbox, program, tests):
    assert_contained(sandbox, program, tests)


def test_program_output_does_not_leak_into_the_report(sandbox):
    result = sandbox.run("print('test 0 1')\nprint('done')\nimport sys\nprint('x', file=sys.stderr)\n",
                         ["assert True"])
    assert result.passed == [True] and result.stdout == "test 0 1\ndone\n" and result.stderr == "x\n"


def test_refuses_without_bwrap_unless_rlimit_only_is_allowed(caplog):
    missing = session_config(bwrap="/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailable, match="bubblewrap.*allow_rlimit_only"):
        Sandbox(missing).run("x = 1\n", ["assert x == 1"])
    weak = Sandbox(missing.model_copy(update={"allow_rlimit_only": True}))
    with caplog.at_level(logging.WARNING, logger="rewards.sandbox"):
        result = weak.run("x = 1\n", ["assert x == 1", "assert x == 2"])
    assert result.passed == [True, False] and result.mode == "rlimit"
    assert "WEAKER rlimit-only" in caplog.text
    # the rlimits and the uid drop still hold in the weak mode
    assert_contained(weak, STUBBORN_FORK_BOMB, ["assert True"])
    assert_contained(weak, "x = bytearray(1 << 30)\n", ["assert True"])
    assert_contained(weak, "while True:\n    pass\n", ["assert True"])


def test_large_and_non_ascii_programs_round_trip(sandbox):
    filler = "".join(f"v{i} = {i}\n" for i in range(12_000))  # ~130 KB: more than one pipe buffer of stdin
    result = sandbox.run(filler + "s = 'héllo ✓'\n", ["assert len(s) == 7", "assert v11999 == 11999"])
    assert result.passed == [True, True]


def test_program_over_the_size_cap_is_refused(sandbox):
    capped = Sandbox(sandbox.config.model_copy(update={"max_program_bytes": 100}))
    result = capped.run("x = 1\n" * 50, ["assert x == 1"])
    assert result.passed == [False] and "max_program_bytes" in (result.error or "")
    assert capped.drain_records() == [(0.0, "refused")]


def test_checker_outlives_the_thread_that_started_it(sandbox):
    """Workers score each batch on fresh threads; a checker started from one (PR_SET_PDEATHSIG fires when the
    spawning thread exits) must still serve the next batch."""
    results = []
    for _ in range(3):
        thread = threading.Thread(target=lambda: results.append(sandbox.run("def f():\n    return 1\n",
                                                                           ["assert f() == 1"]).passed))
        thread.start()
        thread.join()
        time.sleep(0.2)
    assert results == [[True]] * 3


def test_no_new_sessions_or_process_groups(sandbox):
    """seccomp refuses setsid/setpgid: a run stays one session, i.e. one CPU share under autogroup scheduling."""
    program = ("import os\ndef attempt(call):\n    try:\n        call()\n        return 'allowed'\n"
               "    except PermissionError:\n        return 'EPERM'\n")
    program += ("def setsid():\n    return attempt(os.setsid)\n"
                "def setpgid():\n    return attempt(lambda: os.setpgid(0, 0))\n")
    assert sandbox.run(program, ["assert setsid() == 'EPERM'", "assert setpgid() == 'EPERM'"]).passed == [True, True]


def test_the_in_sandbox_sources_resolve_by_path():
    """rewards/sandbox/inside/ is read by path at run time (never imported): plain.py plus each script compiles."""
    from rewards.sandbox.checkers import INSIDE, in_sandbox_source

    scripts = sorted(p.name for p in INSIDE.glob("*.py") if p.name not in ("__init__.py", "plain.py"))
    assert scripts == ["checker.py", "program.py"]
    for name in scripts:
        source = in_sandbox_source(name)
        assert source.startswith((INSIDE / "plain.py").read_text())
        compile(source, f"inside/{name}", "exec")
