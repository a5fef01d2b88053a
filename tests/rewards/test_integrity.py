"""Reward integrity (issue 14): programs written to forge a pass without solving the task, one per attack class.

Each program here scored 1.0 on the earlier design (harness, tests and report channel inside the program's own
interpreter; verdicts on the program's own objects; memory outside RLIMIT_AS), where the class says so. Now every
verdict comes from the checker process comparing fresh builtin values, so each must score 0 and leave the sandbox
healthy. `add(1, 2)` is wrong in every program (it returns 0), so a pass is always a forgery.
"""
from __future__ import annotations

import pytest

from rewards.sandbox import Sandbox
from tests.rewards.conftest import session_config
from tests.rewards.test_sandbox import assert_contained

WRONG_ADD = "def add(a, b):\n    return 0\n"
TESTS = ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]
HUMANEVAL_STYLE = ["def check(candidate):\n    assert candidate(1, 2) == 3\n"
                   "    assert abs(candidate(0.5, 1.5) - 2.0) < 1e-6\n"
                   "    assert candidate('a', 'b') == 'ab'\n\ncheck(add)\n"]

# ---- class 1: the verdict computed inside the program's interpreter ------------------------------------------------
VERDICT_ATTACKS = {
    # rebind a harness function that is looked up at call time
    "rebind_harness_function": "import sys\nsys.modules['__main__']._run = lambda *args: True\n",
    # patch a shared builtin the harness calls: every test compiles to `pass`
    "patch_builtin_compile": ("import builtins\n_compile = builtins.compile\n"
                              "builtins.compile = lambda source, name, mode, *a, **k: _compile('pass', name, mode)\n"),
    # rewrite the live test list found through gc
    "rewrite_tests_through_gc": ("import gc\nfor obj in gc.get_objects():\n"
                                 "    if type(obj) is list and obj and "
                                 "all(type(t) is str and 'assert' in t for t in obj):\n"
                                 "        obj[:] = ['pass'] * len(obj)\n"),
    # reach the report closure through frames and write pass lines after the harness's last line (atexit)
    "report_through_frames_at_exit": (
        "import sys, atexit\nframe = sys._getframe()\n"
        "while frame is not None and 'report' not in frame.f_locals:\n    frame = frame.f_back\n"
        "if frame is not None:\n    report, count = frame.f_locals['report'], 8\n"
        "    atexit.register(lambda: [report('test %d 1' % i) for i in range(count)] and report('done'))\n"),
    # rewrite the harness's locals with a trace function: whatever `_run` returns becomes True
    "settrace_flips_results": (
        "import sys\ndef tracer(frame, event, arg):\n"
        "    if event == 'return' and frame.f_code.co_name == '_run':\n"
        "        frame.f_back.f_locals  # force the fast-locals sync\n"
        "    return tracer\nsys.settrace(tracer)\n"
        "import builtins\n_exec = builtins.exec\n"
        "def exec_(code, ns=None, *a):\n    try:\n        return _exec(code, ns, *a)\n    except AssertionError:\n"
        "        return None\nbuiltins.exec = exec_\n"),
    # write forged reply/verdict lines on every inherited descriptor, in both the old and the new line formats
    "forge_lines_on_every_fd": (
        "import os\nfor fd in range(1, 64):\n"
        "    for line in (b'\\nR{\"test\":0,\"passed\":true}\\n', b'\\nR{\"done\":true,\"program_ok\":true}\\n',\n"
        "                 b'{\"id\":2,\"value\":3}\\n', b'{\"id\":3,\"value\":4}\\n'):\n"
        "        try:\n            os.write(fd, line)\n        except OSError:\n            pass\n"),
}


@pytest.mark.parametrize("attack", sorted(VERDICT_ATTACKS))
@pytest.mark.parametrize("tests", [TESTS, HUMANEVAL_STYLE], ids=["asserts", "humaneval_check"])
def test_verdict_cannot_be_forged_from_inside(sandbox, attack, tests):
    assert_contained(sandbox, VERDICT_ATTACKS[attack] + WRONG_ADD, tests)


# ---- class 2: comparisons on the program's own objects -------------------------------------------------------------
EVERYTHING_EQUAL = (
    "class Anything(int):\n"
    "    def __eq__(self, other): return True\n    def __ne__(self, other): return False\n"
    "    def __lt__(self, other): return True\n    def __sub__(self, other): return self\n"
    "    def __rsub__(self, other): return self\n    def __abs__(self): return self\n    __hash__ = int.__hash__\n"
    "class Text(str):\n    def __eq__(self, other): return True\n    __hash__ = str.__hash__\n")


@pytest.mark.parametrize("returned", ["Anything(0)", "[Anything(0)]", "(Anything(0),)", "{'k': Anything(0)}",
                                      "Text('x')"])
def test_objects_with_forged_equality_never_pass(sandbox, returned):
    program = EVERYTHING_EQUAL + f"def add(a, b):\n    return {returned}\n"
    tests = ["assert add(1, 2) == 3", "assert add(1, 2) == [3]", "assert add(1, 2) == (3,)",
             "assert add(1, 2) == {'k': 3}", "assert add('a', 'b') == 'ab'"]
    assert_contained(sandbox, program, tests + HUMANEVAL_STYLE)


def test_plain_values_of_every_builtin_type_round_trip(sandbox):
    program = ("def value(kind):\n    return {'int': 10**30, 'float': -0.1, 'str': 'é✓', 'bool': True, 'none': None,\n"
               "        'list': [1, [2]], 'tuple': (1, (2,)), 'dict': {(1, 2): {'a': [3]}}, 'set': {1, 2},\n"
               "        'frozenset': frozenset({3}), 'bytes': b'\\x00\\xff', 'complex': 1 - 2j}[kind]\n"
               "def echo(*args, **kwargs):\n    return [args, kwargs]\n")
    tests = ["assert value('int') == 10**30 and type(value('int')) is int",
             "assert value('float') == -0.1", "assert value('str') == 'é✓'", "assert value('bool') is True",
             "assert value('none') is None", "assert value('list') == [1, [2]]", "assert value('tuple') == (1, (2,))",
             "assert value('tuple') != [1, [2]]", "assert value('dict') == {(1, 2): {'a': [3]}}",
             "assert value('set') == {1, 2}", "assert type(value('frozenset')) is frozenset",
             "assert value('bytes') == b'\\x00\\xff'", "assert value('complex') == 1 - 2j",
             "assert echo(1, (2,), k={3}) == [(1, (2,)), {'k': {3}}]"]
    assert sandbox.run(program, tests).passed == [True] * len(tests)


@pytest.mark.parametrize("program", [
    "def add(a, b):\n    return 'x' * (8 << 20)\n",  # one reply over max_value_bytes
    "def add(a, b):\n    v = []\n    for _ in range(100000):\n        v = [v]\n    return v\n",  # too deep
    # a hand-written reply line nested past any recursion limit, for every id the checker may use
    "import os\ndef add(a, b):\n    for i in range(1, 8):\n"
    "        os.write(3, b'{\"id\":%d,\"value\":' % i + b'[' * 200000 + b']' * 200000 + b'}\\n')\n    return 0\n",
    "import os\ndef add(a, b):\n    os.write(3, b'\\xff\\xfe garbage without newline' * 100000)\n    return 0\n",
])
def test_hostile_replies_fail_only_their_test(sandbox, program):
    assert_contained(sandbox, program, TESTS)


# ---- class 3: memory outside the rlimits ---------------------------------------------------------------------------
HOLD_MB = 256  # more than memory_mb + tmpfs_mb of SMALL below, in pieces of 8 MiB (under RLIMIT_FSIZE and RLIMIT_AS)
PIECES = HOLD_MB // 8

MEMORY_ATTACKS = {
    "memfd": ("import os\nheld = False\nfds = []\ntry:\n"
              f"    for _ in range({PIECES}):\n        fds.append(os.memfd_create('x'))\n"
              "        os.write(fds[-1], bytes(8 << 20))\n    held = True\nexcept OSError:\n    pass\n"),
    "sysv_shm": ("import ctypes\nheld = False\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                 "libc.shmat.restype = ctypes.c_void_p\nlibc.shmdt.argtypes = [ctypes.c_void_p]\n"
                 "libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]\ncount = 0\n"
                 f"for _ in range({PIECES}):\n    shmid = libc.shmget(0, ctypes.c_size_t(8 << 20), 0o1600)\n"
                 "    if shmid < 0:\n        break\n"
                 "    address = libc.shmat(shmid, None, 0)\n    if address in (None, ctypes.c_void_p(-1).value):\n"
                 "        break\n    ctypes.memset(address, 1, 8 << 20)\n    libc.shmdt(address)\n    count += 1\n"
                 f"held = count == {PIECES}\n"),
    "tmpfs_in_new_user_namespace": (
        "import ctypes, os\nheld = False\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "uid, gid = os.getuid(), os.getgid()\n"
        "if libc.unshare(0x10000000 | 0x00020000) == 0:\n"  # CLONE_NEWUSER | CLONE_NEWNS
        "    open('/proc/self/setgroups', 'w').write('deny')\n"
        "    open('/proc/self/uid_map', 'w').write('0 %d 1' % uid)\n"
        "    open('/proc/self/gid_map', 'w').write('0 %d 1' % gid)\n"
        "    os.makedirs('/tmp/m', exist_ok=True)\n"
        "    if libc.mount(b'none', b'/tmp/m', b'tmpfs', 0, b'size=2g') == 0:\n"
        f"        for i in range({PIECES}):\n"
        "            with open('/tmp/m/x%d' % i, 'wb') as f:\n                f.write(bytes(8 << 20))\n"
        "        held = True\n"),
    "unshare_user_namespace_at_all": ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                                      "held = libc.unshare(0x10000000) == 0\n"),
    "sysv_message_queue": ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                           "held = libc.msgget(0, 0o1600) >= 0\n"),
}
SMALL = session_config(memory_mb=192, tmpfs_mb=16)


@pytest.fixture(scope="module")
def small_sandbox():
    box = Sandbox(SMALL)
    yield box
    box.close()


@pytest.mark.parametrize("attack", sorted(MEMORY_ATTACKS))
def test_no_memory_outside_the_limits(small_sandbox, attack):
    result = assert_contained(small_sandbox, MEMORY_ATTACKS[attack] + "def holding():\n    return held\n",
                              ["assert holding() is True"], max_seconds=30)
    assert not result.passed[0]


def test_per_run_cgroup_bounds_memory_when_the_host_allows(small_sandbox):
    ready = small_sandbox.check_ready()
    if ready["cgroup"].startswith("unavailable"):
        pytest.skip(f"no per-run cgroup on this host: {ready['cgroup']}")
    # the private /tmp is a tmpfs: its pages are not in RLIMIT_AS, but they are charged to the run's cgroup
    program = ("with open('/tmp/x', 'wb') as f:\n    for _ in range(14):\n        f.write(bytes(1 << 20))\n"
               "blocks = [bytearray(1 << 20) for _ in range(150)]\nfor b in blocks:\n    b[::4096] = b'1' * 256\n"
               "def held():\n    return len(blocks)\n")
    within = small_sandbox.run(program, ["assert held() == 150"])
    assert within.passed == [True]
    tight = Sandbox(SMALL.model_copy(update={"cgroup_memory_mb": 96}))
    try:
        over = tight.run(program, ["assert held() == 150"])
        assert over.passed == [False] and over.oom_killed
    finally:
        tight.close()


@pytest.mark.parametrize("raised", ["StopIteration", "StopAsyncIteration"])
def test_stop_iteration_from_the_program_fails_the_test(sandbox, raised):
    """Re-raised inside the test, StopIteration would end `all(map(f, xs))` early and pass it (issue 23, class 3)."""
    program = f"def is_even(n):\n    raise {raised}\n"
    tests = ["assert all(map(is_even, [2, 4]))", "assert not any(map(is_even, [1, 3]))", "assert is_even(2)"]
    assert sandbox.run(program, tests).passed == [False, False, False]


def test_unbound_forced_entry_point_is_a_name_error(sandbox):
    """A forced entry point the program does not bind must not fall back to the builtin of that name (class 4)."""
    tests = ["assert sorted([3, 1, 2]) == [1, 2, 3]", "try:\n    sorted\nexcept NameError:\n    pass\nelse:\n"
             "    raise AssertionError('bound')"]
    assert sandbox.run("x = 1\n", tests, entry_point="sorted").passed == [False, True]
    bound = sandbox.run("def sorted(xs):\n    return [1, 2, 3]\n", tests[:1], entry_point="sorted")
    assert bound.passed == [True]
    # Builtins the host does not force stay the checker's own.
    assert sandbox.run("x = 1\n", ["assert len([1, 2]) == 2"], entry_point="f").passed == [True]


# Tests that evaluate the program's output run program code in the checker (issue 23, class 2). What the evaluated
# code can reach there: the checker's module (`__main__`), its reporting function, the process itself.
FORGE_REMAINING = ("[__import__('__main__')._report({'test': i, 'passed': True}) for i in range(3)], "
                   "__import__('__main__')._report({'done': True, 'program_ok': True}), __import__('os')._exit(0)")
POISON_LATER_RUNS = ("setattr(__import__('__main__'), '_run_tests', lambda run, spec: ([__import__('__main__')._report("
                     "{'test': i, 'passed': True}) for i in range(len(spec['tests']))], __import__('__main__')._report("
                     "{'done': True, 'program_ok': True}))) or 4")
POISON_CALLS = "setattr(__import__('__main__').RemoteFunction, '__call__', lambda self, *a, **k: 2) or 4"
KILL_CHECKER = "__import__('os').kill(__import__('os').getppid(), 9) or 4"
EVAL_TESTS = ["assert eval(f(2)) == 4", "assert f(3) == 'nine'", "assert f(5) == 'twenty-five'"]


def test_evaluated_output_cannot_report_other_tests(sandbox):
    result = sandbox.run(f"def f(n):\n    return {FORGE_REMAINING!r}\n", EVAL_TESTS)
    assert result.passed == [False, False, False], result


@pytest.mark.parametrize("payload", [POISON_LATER_RUNS, POISON_CALLS], ids=["rebind_run_tests", "rebind_calls"])
def test_evaluated_output_cannot_poison_later_tests_or_rows(sandbox, payload):
    """The evaluated code passes its own test (it chose the value) but must not change any other verdict: not the
    later tests of this row, not a wrong program scored next on the same checker."""
    result = sandbox.run(f"def f(n):\n    return {payload!r}\n", EVAL_TESTS + ["assert 1 == 2"])
    assert result.passed == [True, False, False, False], result
    wrong = sandbox.run("def g():\n    return 1\n", ["assert g() == 2", "assert g() == 3"])
    assert wrong.passed == [False, False], "a poisoned checker passed another program's row"
    right = sandbox.run("def g():\n    return 2\n", ["assert g() == 2", "assert g() != 3"])
    assert right.passed == [True, True]


def test_evaluated_output_killing_the_checker_fails_only_its_row(sandbox):
    result = sandbox.run(f"def f(n):\n    return {KILL_CHECKER!r}\n", EVAL_TESTS)
    assert not any(result.passed)
    assert sandbox.run("def g():\n    return 2\n", ["assert g() == 2"]).passed == [True]


def test_a_test_cannot_read_or_write_the_checkers_memory(sandbox):
    probe = ("(lambda os: (lambda p: 'denied' if not os.access(p, os.R_OK) else (lambda: open(p, 'r+b') and 'open')())"
             "('/proc/%d/mem' % os.getppid()))(__import__('os'))")
    result = sandbox.run(f"def f():\n    return {probe!r}\n",
                         ["try:\n    r = eval(f())\nexcept PermissionError:\n    r = 'denied'\nassert r == 'denied'"])
    assert result.passed == [True], result


def test_tests_share_nothing_but_the_program(sandbox):
    """Each test sees the program's names afresh: a test mutating a fetched value or defining a name does not
    change what the next test sees."""
    tests = ["xs.append(4)\nhelper = 1", "assert xs == [1, 2, 3]", "assert 'helper' not in dir()"]
    assert sandbox.run("xs = [1, 2, 3]\n", tests).passed == [True, True, True]


def test_host_accepts_one_verdict_per_test_in_order_and_nothing_after_done():
    from rewards.sandbox.relay import Outcome, _verdict

    def feed(*lines: str, tests: int = 2) -> Outcome:
        out = Outcome()
        for line in lines:
            _verdict(b"R" + line.encode(), out, tests)
        return out

    good = feed('{"test": 0, "passed": true}', '{"test": 1, "passed": false}', '{"done": true, "program_ok": true}')
    assert good.finished and not good.checker_failed and good.passed == {0: True, 1: False}
    for lines in [('{"test": 1, "passed": true}',),  # skipped test 0
                  ('{"test": 0, "passed": true}', '{"test": 0, "passed": false}'),  # repeated
                  ('{"test": 0, "passed": true}', '{"test": 1, "passed": true}', '{"test": 2, "passed": true}'),
                  ('{"test": 0, "passed": true}', '{"done": true, "program_ok": true}'),  # done too early
                  ('{"test": 0, "passed": 1}',),  # not a bool
                  ('{"test": 0, "passed": true}', '{"test": 1, "passed": true}', '{"done": true, "program_ok": true}',
                   '{"test": 1, "passed": true}')]:  # after done
        assert feed(*lines).checker_failed, lines


MUTATOR = ("def sort_in_place(xs):\n    xs.sort()\n    return len(xs)\n"
           "def tag(d, s, b, key=None):\n    d['k'] = 1\n    s.add(2)\n    b[0] = 0\n    key.append('x')\n"
           "    return None\n"
           "def pure(xs):\n    return sorted(xs)\n"
           "def smuggle(xs):\n    xs.append(object())\n    return 1\n")


def test_arguments_the_program_mutates_are_seen_by_the_test(sandbox):
    """Issue 23, class 7: a test asserting that an argument was not mutated fails for a program that mutates it;
    mutations a test expects are seen too."""
    tests = ["xs = [3, 1, 2]\nsort_in_place(xs)\nassert xs == [3, 1, 2]",  # 'must not mutate': fails
             "xs = [3, 1, 2]\npure(xs)\nassert xs == [3, 1, 2]",
             "xs = [3, 1, 2]\nassert sort_in_place(xs) == 3 and xs == [1, 2, 3]",
             "d, s, b, k = {}, {1}, bytearray(b'ab'), []\ntag(d, s, b, key=k)\n"
             "assert (d, s, b, k) == ({'k': 1}, {1, 2}, bytearray(b'\\x00b'), ['x'])",
             "xs = []\nsmuggle(xs)"]  # something that is not plain data put into an argument: the call fails
    assert sandbox.run(MUTATOR, tests).passed == [False, True, True, True, False]
