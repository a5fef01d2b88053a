"""Code rewards: format (one fenced python block at the end of the reply: 1.0 if it parses, 0.5 on SyntaxError,
0 otherwise) and tests (fraction of meta["tests"] that pass in the sandbox, each under its own timeout, run only when
the format score is 1.0).

Official definition: DiffuCoder / open-r1 `get_code_format_reward` (0 / 0.5 / 1.0 by `ast.parse`) and `code_reward`
(pass rate of the test cases, zero when the format is wrong), as summarised in docs/design.md ("Rewards"), with asserts
as test cases, as in d1's `coding_reward_func` (`split_test_function`: one unit per assert, 1 s each).
"Exactly one block" is read strictly: the reply contains exactly two ``` fences, the first opening "```python\\n";
text may follow the closing fence.

meta: {"tests": ["assert add(1, 2) == 3", ...], "timeout_s": 1.0 (optional, per test),
       "entry_point": "add" (optional: if the program does not define it, it is bound to the program's first
       top-level function, as d1 renames the generated function to the tested name),
       "helpers": source (optional: trusted definitions from the prompt, e.g. HumanEval 32's `poly`, run before each
       test so the tests use them and not the program's versions)}.
Each test is Python source (one assert, or several statements such as HumanEval's `check` function plus a call);
the program runs first, then the tests in order in the program's namespace.
"""
from __future__ import annotations

import ast

from common.messages import RewardResult
from rewards.verifiers.text import MetaError, require, single
from rewards.sandbox import Sandbox

FENCE = "```"
OPEN_FENCE = "```python\n"


def extract_program(text: str) -> tuple[str | None, float]:
    """(program, format score): the code of the single python block and 1.0 / 0.5 (SyntaxError); (None, 0.0) when
    the reply does not have exactly one fenced python block."""
    if text.count(FENCE) != 2:
        return None, 0.0
    start = text.find(FENCE)
    if not text.startswith(OPEN_FENCE, start):
        return None, 0.0
    body_start = start + len(OPEN_FENCE)
    program = text[body_start:text.find(FENCE, body_start)]
    try:
        ast.parse(program)
    except (SyntaxError, ValueError, MemoryError, RecursionError):  # ValueError: e.g. a NUL byte in the source
        return program, 0.5
    return program, 1.0


def bind_entry_point(program: str, entry_point: str | None) -> str:
    """Append `entry_point = <first top-level function>` when the program does not define `entry_point` itself."""
    if not entry_point:
        return program
    if not entry_point.isidentifier():
        raise MetaError(f"code meta: entry_point must be an identifier, got {entry_point!r}")
    functions = [node.name for node in ast.parse(program).body
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if entry_point in functions or not functions:
        return program
    return f"{program}\n{entry_point} = {functions[0]}\n"


def code_format(meta: dict, text: str) -> RewardResult:
    """Part name: 'code_format'."""
    return single("code_format", extract_program(text)[1])


def _tests(meta: dict) -> tuple[list[str], float]:
    tests = require(meta, "tests", "code")
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise MetaError(f"code meta: tests must be a non-empty list of source strings, got {type(tests).__name__}")
    timeout = meta.get("timeout_s", 1.0)
    if not isinstance(timeout, (int, float)) or not 0 < timeout <= 60:
        raise MetaError(f"code meta: timeout_s must be a number in (0, 60], got {timeout!r}")
    return tests, float(timeout)


def code_tests(meta: dict, text: str, *, sandbox: Sandbox) -> RewardResult:
    """Fraction of meta["tests"] passed in the sandbox (0 unless the format score is 1.0). Part name: 'code_tests'.
    How the program ended (timeout, output cap, crash) is the program's doing, not an error of ours: it is in the
    sandbox's records (metrics), and `error` stays None."""
    tests, timeout = _tests(meta)
    program, format_score = extract_program(text)
    if program is None or format_score < 1.0:
        return single("code_tests", 0.0)
    entry_point = meta.get("entry_point")
    helpers = meta.get("helpers")
    if helpers is not None and not isinstance(helpers, str):
        raise MetaError(f"code meta: helpers must be Python source (a string), got {type(helpers).__name__}")
    program = bind_entry_point(program, entry_point)
    result = sandbox.run(program, tests, test_timeout_s=timeout, entry_point=entry_point, helpers=helpers)
    return single("code_tests", result.fraction_passed)
