"""Countdown reward: hand-worked cases, adversarial expressions, and the one evaluator (common/arith.py)
against Python's own eval, the official scorer's arithmetic."""
from __future__ import annotations

import ast
import itertools
import time

import pytest

from common import arith
from common.tasks import countdown as countdown_task
from rewards.verifiers.countdown import ExpressionError, countdown_reward, literals, parse_expression

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


def test_python_arithmetic_and_tolerance():
    assert total("6*(1/3)", {"numbers": [1, 3, 6], "target": 2}) == 1.0
    assert total("7*(4/2)", {"numbers": [7, 2, 4], "target": 14}) == 1.0
    assert total("-(3+5)/2", {"numbers": [3, 5, 2], "target": -4}) == 1.0  # unary minus is allowed
    assert total("+(3+5)*2", {"numbers": [3, 5, 2], "target": 16}) == 1.0  # unary plus too, as eval
    assert total("(3+5)*2", {"numbers": [3, 5, 2], "target": 16.000001}) == 1.0  # within 1e-5
    assert total("(3+5)*2", {"numbers": [3, 5, 2], "target": 16.0001}) == 0.1
    assert total("1//(1/5)", {"numbers": [1, 1, 5], "target": 4}) == 1.0  # floats as eval: 1 // 0.2 is 4.0


@pytest.mark.parametrize("expr, numbers", [
    ("__import__('os').system('touch /tmp/pwned')", [0]),
    ("9" * 5000, [int("9" * 50)]),  # past the length cap
    ("999999999999999999999*2", [999999999999999999999, 2]),  # a literal too large to be a task number
    ("(" * 300 + "1" + ")" * 300, [1]),
    ("1e308*10", [1, 10]),
    ("True+2", [1, 2]),
    ("3.0+5", [3, 5]),
    ("[3][0]+5", [3, 5]),
    ("(lambda: 3)()+5", [3, 5]),
    ("3 if 5 else 2", [3, 5, 2]),
    ("3+5;2", [3, 5, 2]),
    ("3 % 5 * 2", [3, 5, 2]),
    ("3 << 5", [3, 5]),
    ("().__class__", []),
])
def test_non_arithmetic_answers_are_rejected_unparsed(expr, numbers):
    start = time.monotonic()
    assert countdown_reward({"numbers": numbers, "target": 1}, f"<answer>{expr}</answer>").total == 0.1
    assert time.monotonic() - start < 0.5
    with pytest.raises(ExpressionError):
        parse_expression(expr)


@pytest.mark.parametrize("expr, numbers", [
    ("9**9**9", [9, 9, 9]),  # ~1.2e9 bits: refused before computing
    ("99**99**99", [99, 99, 99]),
    ("2**200000", [2, 200000]),  # 200001 bits: over the bound
    ("(2**99999)*(2**99999)", [2, 99999, 2, 99999]),  # each factor fits, the product does not
    ("1/0", [1, 0]),
    ("5/(3-3)", [5, 3, 3]),
    ("0**-1", [0, 1]),
    ("7//0", [7, 0]),
    ("2**99999/3", [2, 99999, 3]),  # an int too large for a float: eval raises OverflowError too
])
def test_unevaluable_answers_score_point_one_quickly(expr, numbers):
    start = time.monotonic()
    assert countdown_reward({"numbers": numbers, "target": 1}, f"<answer>{expr}</answer>").total == 0.1
    assert arith.evaluate(expr) == float("inf")
    assert time.monotonic() - start < 0.5


def test_literals_are_the_numbers_used():
    assert sorted(literals(parse_expression("-(3+5)/2"))) == [2, 3, 5]


def _expressions(a: int, b: int, c: int, ops: str = "+-*/"):
    for o1, o2 in itertools.product(ops if isinstance(ops, list) else list(ops), repeat=2):
        yield f"({a}{o1}{b}){o2}{c}"
        yield f"{a}{o1}({b}{o2}{c})"
        yield f"-{a}{o1}{b}{o2}{c}"


def python_eval(expr: str):
    """The official scorer's arithmetic: eval with no builtins (trusted, test-generated strings only); an exception
    is its None."""
    try:
        return eval(expr, {"__builtins__": None}, {})  # noqa: S307  (trusted test input)
    except Exception as exc:  # noqa: BLE001  (the official evaluate_equation catches everything)
        return type(exc)


def test_evaluator_agrees_with_python_eval():
    """The one evaluator gives eval's value bit for bit (same operators, same types), +inf where eval raises."""
    checked = 0
    for a, b, c in itertools.product([1, 2, 3, 7, 12], repeat=3):
        for expr in _expressions(a, b, c):
            reference = python_eval(expr)
            if isinstance(reference, type):
                assert arith.evaluate(expr) == float("inf"), expr
                continue
            got = arith.evaluate(expr)
            assert got == reference and type(got) is type(reference), expr
            checked += 1
    assert checked > 1000


def test_every_generated_instance_is_solved_by_its_reference_reply():
    for prompt_format in ("gdsd", "d1", "compact"):
        for item in countdown_task.make_prompts(prompt_format=prompt_format, split="train", num=40, seed=11):
            assert countdown_reward(item.meta, item.answer).total == 1.0, item.answer
            value = arith.evaluate(item.answer.split("<answer>")[1].split("</answer>")[0].strip())
            assert abs(value - item.meta["target"]) < 1e-5


def test_power_and_floor_division_as_officially():
    """Issue 13 point 4: official eval accepts ** and //: `3**2*1` with [3, 2, 1] and target 9 scores 1.0."""
    assert total("3**2*1", {"numbers": [3, 2, 1], "target": 9}) == 1.0
    assert total("7//2+1", {"numbers": [7, 2, 1], "target": 4}) == 1.0
    assert total("-7//2+1", {"numbers": [7, 2, 1], "target": -3}) == 1.0  # floor, as Python
    assert total("2**-1*8", {"numbers": [2, 1, 8], "target": 4}) == 1.0
    assert total("4**(1/2)", {"numbers": [4, 1, 2], "target": 2}) == 1.0  # a float exponent, as eval


@pytest.mark.parametrize("expr, numbers, target", [
    ("1**101+5", [1, 101, 5], 6),  # the case: over the old exponent caps (100 and 64), value 6
    ("1**65*7", [1, 65, 7], 7),  # just over the reward's old cap 64
    ("(-1)**101+2", [1, 101, 2], 1),
    ("2**101-2**101+3", [2, 101, 2, 101, 3], 3),  # 102-bit intermediates
    ("0**1000+4", [0, 1000, 4], 4),
    ("(99**99)//(99**98)", [99, 99, 99, 98], 99),
    ("(100**100)**100//(100**100)**99", [100, 100, 100, 100, 100, 99], 100 ** 100),  # 66439-bit intermediates
])
def test_results_within_the_size_bound_score_as_the_official_eval(expr, numbers, target):
    """Issue 26 point 5: a bound on the result's size, not the exponent; both scorers (training reward and the
    official-evaluation parser) agree with eval on expressions at and beyond the old exponent caps."""
    assert python_eval(expr) == target  # the official arithmetic says correct
    assert arith.evaluate(expr) == target
    assert total(expr, {"numbers": numbers, "target": target}) == 1.0
    item = countdown_task.item(numbers, target, "", "gdsd", evaluation=True)
    assert countdown_task.official_correct(f"<answer>{expr}</answer>", item) == (1, 1)


def test_the_reward_and_the_official_parser_agree():
    """One evaluator: on every generated expression (numbers in the tree), the training reward says correct exactly
    when the official-evaluation parser does."""
    checked = 0
    for a, b, c in itertools.product([1, 2, 3, 5, 12], repeat=3):
        for expr in _expressions(a, b, c, ["**", "//", "*", "-", "/", "+"]):
            value = arith.evaluate(expr)
            if isinstance(value, complex) or not abs(value) < 10**6:  # inf, or no task's target
                continue
            for target in {round(value.real) if isinstance(value, float) else value, 7}:
                item = countdown_task.item([a, b, c], target, "", "gdsd", evaluation=True)
                official = countdown_task.official_correct(f"<answer>{expr}</answer>", item)[0]
                assert (total(expr, {"numbers": [a, b, c], "target": target}) == 1.0) == bool(official), expr
                checked += 1
    assert checked > 2000


def test_evaluator_agrees_with_python_on_power_and_floor_division():
    """Independent reference: Python's eval on trusted, test-generated strings, wherever the size bound lets the
    evaluator compute (it refuses only powers and products over MAX_BITS bits: 9**(12**12) would take eval forever)."""
    checked = refused = 0
    for a, b, c in itertools.product([1, 2, 3, 5, 12], repeat=3):
        for expr in _expressions(a, b, c, ["**", "//", "*", "-", "/"]):
            try:
                got = arith.value(ast.parse(expr, mode="eval").body)
            except arith.TooLarge:
                refused += 1
                continue
            except (ArithmeticError, TypeError) as exc:
                assert python_eval(expr) is type(exc), expr
                continue
            reference = python_eval(expr)
            assert got == reference and type(got) is type(reference), expr
            checked += 1
    assert checked > 2000 and refused > 0
