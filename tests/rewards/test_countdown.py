"""Countdown reward: hand-worked cases, adversarial expressions, and the walker against Python's own arithmetic."""
from __future__ import annotations

import itertools
import re
import time
from fractions import Fraction

import pytest

from common.tasks import countdown as countdown_task
from rewards.countdown import ExpressionError, countdown_reward, evaluate, literals, parse_expression

META = {"numbers": [3, 5, 2], "target": 16}


def total(expr: str, meta: dict = META) -> float:
    return countdown_reward(meta, f"<reasoning>\nwork\n</reasoning>\n<answer>\n{expr}\n</answer>").total


@pytest.mark.parametrize("expr", ["(3+5)*2", "2*(5+3)", " ( 3 + 5 ) * 2 ", "(5+3)*2"])
def test_correct_expressions_score_one(expr):
    assert total(expr) == 1.0


def test_compact_format_is_read():
    assert countdown_reward(META, "<answer>(3+5)*2</answer>").total == 1.0


@pytest.mark.parametrize("expr", [
    "3+5*2",  # 13: wrong value
    "(3+3)*2",  # 3 used twice, 5 unused
    "8*2",  # numbers not used
    "(3+5)*2+0",  # an extra number
    "",  # an empty answer is still an answer
    "(3+5)*2=16",  # not an expression
])
def test_present_but_wrong_scores_point_one(expr):
    assert total(expr) == 0.1


def test_no_answer_scores_zero():
    assert countdown_reward(META, "(3+5)*2").total == 0.0
    assert countdown_reward(META, "<answer>(3+5)*2").total == 0.0


def test_exact_rational_arithmetic_and_tolerance():
    assert total("6*(1/3)", {"numbers": [1, 3, 6], "target": 2}) == 1.0
    assert total("7*(4/2)", {"numbers": [7, 2, 4], "target": 14}) == 1.0
    assert total("-(3+5)/2", {"numbers": [3, 5, 2], "target": -4}) == 1.0  # unary minus is allowed
    assert total("(3+5)*2", {"numbers": [3, 5, 2], "target": 16.000001}) == 1.0  # within 1e-5
    assert total("(3+5)*2", {"numbers": [3, 5, 2], "target": 16.0001}) == 0.1


@pytest.mark.parametrize("expr, numbers", [
    ("__import__('os').system('touch /tmp/pwned')", [0]),
    ("2**99999", [2, 99999]),
    ("9**9**9", [9, 9, 9]),
    ("1/0", [1, 0]),
    ("5/(3-3)", [5, 3, 3]),
    ("9" * 5000, [int("9" * 50)]),  # past the length cap
    ("999999999999999999999*2", [999999999999999999999, 2]),  # a literal too large to be a task number
    ("(" * 300 + "1" + ")" * 300, [1]),
    ("1e308*10", [1, 10]),
    ("True+2", [1, 2]),
    ("+3+5", [3, 5]),
    ("3.0+5", [3, 5]),
    ("[3][0]+5", [3, 5]),
    ("(lambda: 3)()+5", [3, 5]),
    ("3 if 5 else 2", [3, 5, 2]),
    ("3+5;2", [3, 5, 2]),
    ("2**-99999", [2, 99999]),
    ("(9**60)**60", [9, 60, 60]),
    ("4**(1/2)", [4, 1, 2]),  # non-integer exponent (official: a float)
    ("0**-1", [0, 1]),
    ("7//0", [7, 0]),
    ("3 % 5 * 2", [3, 5, 2]),
    ("3 << 5", [3, 5]),
    ("().__class__", []),
])
def test_adversarial_expressions_are_rejected_quickly(expr, numbers):
    start = time.monotonic()
    assert countdown_reward({"numbers": numbers, "target": 1}, f"<answer>{expr}</answer>").total == 0.1
    assert time.monotonic() - start < 0.5
    with pytest.raises(ExpressionError):
        evaluate(parse_expression(expr))


def test_literals_are_the_numbers_used():
    assert sorted(literals(parse_expression("-(3+5)/2"))) == [2, 3, 5]


def _expressions(a: int, b: int, c: int):
    for o1, o2 in itertools.product("+-*/", repeat=2):
        yield f"({a}{o1}{b}){o2}{c}"
        yield f"{a}{o1}({b}{o2}{c})"
        yield f"-{a}{o1}{b}{o2}{c}"


def test_walker_agrees_with_python_arithmetic():
    """Independent reference: Python evaluates the (trusted, test-generated) strings in floats."""
    checked = 0
    for a, b, c in itertools.product([1, 2, 3, 7, 12], repeat=3):
        for expr in _expressions(a, b, c):
            try:
                reference = eval(expr, {"__builtins__": {}})  # noqa: S307  (trusted test input)
            except ZeroDivisionError:
                with pytest.raises(ExpressionError, match="division by zero"):
                    evaluate(parse_expression(expr))
                continue
            assert float(evaluate(parse_expression(expr))) == pytest.approx(reference, rel=1e-12, abs=1e-12), expr
            checked += 1
    assert checked > 1000


def test_every_generated_instance_is_solved_by_its_reference_reply():
    for prompt_format in ("gdsd", "d1", "compact"):
        for item in countdown_task.make_prompts(prompt_format=prompt_format, split="train", num=40, seed=11):
            assert countdown_reward(item.meta, item.answer).total == 1.0, item.answer
            value = evaluate(parse_expression(item.answer.split("<answer>")[1].split("</answer>")[0].strip()))
            assert value == Fraction(item.meta["target"])


def test_power_and_floor_division_as_officially():
    """Issue 13 point 4: official eval accepts ** and //: `3**2*1` with [3, 2, 1] and target 9 scores 1.0."""
    assert total("3**2*1", {"numbers": [3, 2, 1], "target": 9}) == 1.0
    assert total("7//2+1", {"numbers": [7, 2, 1], "target": 4}) == 1.0
    assert total("-7//2+1", {"numbers": [7, 2, 1], "target": -3}) == 1.0  # floor, as Python
    assert total("2**-1*8", {"numbers": [2, 1, 8], "target": 4}) == 1.0


def test_walker_agrees_with_python_on_power_and_floor_division():
    """Independent reference: Python's own arithmetic on trusted, test-generated strings, with every literal a
    Fraction (exact: in floats 1//(1/5) is 4.0, the official eval's answer; exactly it is 5, ours)."""
    checked = 0
    for a, b, c in itertools.product([1, 2, 3, 5, 12], repeat=3):
        for o1, o2 in itertools.product(["**", "//", "*", "-", "/"], repeat=2):
            for expr in (f"({a}{o1}{b}){o2}{c}", f"{a}{o1}({b}{o2}{c})", f"-{a}{o1}{b}{o2}{c}"):
                try:
                    value = evaluate(parse_expression(expr))
                except ExpressionError as exc:  # only the documented bounds may refuse
                    assert any(word in str(exc) for word in ("exponent", "bits", "division by zero")), (expr, exc)
                    continue
                # the reference runs only where the walker's bounds held (9**(12**12) would take forever)
                exact = re.sub(r"\d+", lambda m: f"F({m.group()})", expr)
                reference = eval(exact, {"__builtins__": {}, "F": Fraction})  # noqa: S307  (trusted input)
                assert value == reference, expr
                checked += 1
    assert checked > 2000
