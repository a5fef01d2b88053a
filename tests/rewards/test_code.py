"""Code rewards: the format score, entry-point binding, and the fraction of tests passed in the real sandbox."""
from __future__ import annotations

import pytest

from rewards.verifiers.coding import bind_entry_point, code_format, code_tests, extract_program
from rewards.verifiers.text import MetaError
from rewards.service.registry import Scorer

ADD = "def add(a, b):\n    return a + b\n"
TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 5"]


def reply(code: str, before: str = "Here is the code:\n", after: str = "") -> str:
    return f"{before}```python\n{code}```{after}"


@pytest.mark.parametrize("text, score", [
    (reply(ADD), 1.0),
    (reply(ADD, after="\nThis adds two numbers."), 1.0),  # prose may follow the block
    (reply(ADD, before=""), 1.0),
    (reply("def add(a, b)\n    return a + b\n"), 0.5),  # SyntaxError
    (reply(ADD) + "\n```python\nprint(1)\n```", 0.0),  # two blocks
    ("```python\n" + ADD, 0.0),  # never closed
    (reply(ADD).replace("```python", "```py"), 0.0),  # not a python block
    (ADD, 0.0),  # no block at all
    ("```\n" + ADD + "```", 0.0),  # a bare fence
])
def test_format_score(text, score):
    assert code_format({}, text).total == score
    assert extract_program(text)[1] == score


def test_fraction_of_tests_passed(sandbox):
    assert code_tests({"tests": TESTS}, reply(ADD), sandbox=sandbox).total == pytest.approx(2 / 3)


def test_tests_run_only_when_format_is_one(sandbox):
    broken = reply("def add(a, b)\n    return a + b\n")
    assert code_tests({"tests": TESTS}, broken, sandbox=sandbox).total == 0.0


def test_a_failing_test_does_not_stop_later_ones(sandbox):
    tests = ["assert add(2, 2) == 5", "assert add(1, 2) == 3", "raise ValueError('x')", "assert add(0, 0) == 0"]
    result = sandbox.run(ADD, tests)
    assert result.passed == [False, True, False, True] and result.finished


def test_per_test_timeout_fails_only_that_test(sandbox):
    program = ADD + "def spin():\n    while True:\n        pass\n"
    result = sandbox.run(program, ["assert add(1, 1) == 2", "spin()", "assert add(2, 3) == 5"], test_timeout_s=0.5)
    assert result.passed == [True, False, True]


def test_entry_point_is_bound_to_the_defined_function(sandbox):
    meta = {"tests": ["assert add(1, 2) == 3"], "entry_point": "add"}
    assert code_tests(meta, reply("def plus(a, b):\n    return a + b\n"), sandbox=sandbox).total == 1.0
    assert bind_entry_point(ADD, "add") == ADD  # already defined: unchanged
    with pytest.raises(MetaError, match="identifier"):
        bind_entry_point(ADD, "add; import os")


def test_scorer_sums_format_and_tests():
    result = Scorer().score("code", {"tests": TESTS}, reply(ADD))
    assert result.parts == {"code_format": 1.0, "code_tests": pytest.approx(2 / 3)}
    assert result.total == pytest.approx(1 + 2 / 3)


@pytest.mark.parametrize("meta, message", [({}, "tests"), ({"tests": []}, "non-empty"),
                                           ({"tests": ["assert 1"], "timeout_s": 0}, "timeout_s")])
def test_bad_meta_is_named(sandbox, meta, message):
    with pytest.raises(MetaError, match=message):
        code_tests(meta, reply(ADD), sandbox=sandbox)
