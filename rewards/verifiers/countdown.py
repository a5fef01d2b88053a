"""Countdown reward (3 numbers): 1.0 if the `<answer>` expression uses exactly the given numbers and evaluates within
1e-5 of the target, 0.1 if an `<answer>` exists but fails any check, 0 without one.

Official definition: GDSD `gdsd/rewards.py` `compute_score(..., format_score=0.1, score=1.0)` (from d1 / TinyZero).
Where the official code calls `eval` behind the character regex `^[\\d+\\-*/().\\s]+$` (so `**` and `//` are
accepted: `<answer>3**2*1</answer>` with numbers [3, 2, 1] and target 9 scores 1.0), this module never evaluates
anything itself: the expression is parsed with `ast`, checked to be integer literals, `+ - * / // **`, parentheses
and unary signs, and its value comes from the project's one Countdown evaluator, `common.arith.evaluate`
(Python's own operators on Python's types, as `eval`; a size bound on integer results instead of `eval`'s none, so
`9**9**9` is refused before any big arithmetic happens while `1**101+5` scores as officially). Differences from the
official checks, all deliberate: the numbers used are the integer literals of the parsed tree (the official regex
`\\d+` would also accept `3.0` as the numbers 3 and 0); float literals and booleans are rejected (0.1); an answer
over MAX_EXPRESSION_CHARS characters or with a literal over MAX_LITERAL_DIGITS digits is rejected unparsed (0.1:
such a literal cannot be one of the task's numbers, and a 3-number expression is ~20 characters).
"""
from __future__ import annotations

import ast
from typing import cast

from common.messages import RewardResult
from common import arith
from rewards.verifiers.text import MetaError, last_answer, require, single

MAX_EXPRESSION_CHARS = 256  # a 3-number expression is ~20 chars; longer input only costs parse time
MAX_LITERAL_DIGITS = 12  # the task's numbers are <= 100; bigger literals cannot be among them
TOLERANCE = 1e-5  # official: abs(result - target) < 1e-5
_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Pow)


class ExpressionError(ValueError):
    """The expression is not a plain arithmetic expression over integer literals."""


def parse_expression(expr: str) -> ast.expr:
    """The parsed tree of `expr`, checked to contain only the allowed node types; raises ExpressionError."""
    if len(expr) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expr, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:  # ValueError: int literal over 4300 digits
        raise ExpressionError(f"not an expression: {type(exc).__name__}") from exc
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp):
            if not isinstance(node.op, _OPERATORS):
                raise ExpressionError(f"operator {type(node.op).__name__} is not allowed")
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, (ast.USub, ast.UAdd)):
                raise ExpressionError(f"unary {type(node.op).__name__} is not allowed")
        elif isinstance(node, ast.Constant):
            if type(node.value) is not int:  # bool is an int subclass: reject True/False explicitly
                raise ExpressionError(f"literal {node.value!r} is not an integer")
            if len(str(abs(node.value))) > MAX_LITERAL_DIGITS:
                raise ExpressionError("integer literal too large")
        elif not isinstance(node, (ast.operator, ast.unaryop)):
            raise ExpressionError(f"{type(node).__name__} is not allowed in an arithmetic expression")
    return tree


def literals(tree: ast.expr) -> list[int]:
    """The integer literals of a checked tree, in source order."""
    found = [node for node in ast.walk(tree) if isinstance(node, ast.Constant)]
    # cast: check() admits int literals only
    return [cast(int, node.value) for node in sorted(found, key=lambda n: (n.lineno, n.col_offset))]


def countdown_reward(meta: dict, text: str) -> RewardResult:
    """meta: {"numbers": [a, b, c], "target": int}. Part name: 'countdown'."""
    numbers, target = require(meta, "numbers", "countdown"), require(meta, "target", "countdown")
    if not isinstance(numbers, (list, tuple)) or not all(isinstance(n, int) for n in numbers):
        raise MetaError(f"countdown meta: numbers must be a list of integers, got {numbers!r}")
    if not isinstance(target, (int, float)):
        raise MetaError(f"countdown meta: target must be a number, got {target!r}")
    expression = last_answer(text)
    if expression is None:
        return single("countdown", 0.0)
    try:
        tree = parse_expression(expression)
    except ExpressionError:
        return single("countdown", 0.1)
    if sorted(literals(tree)) != sorted(numbers):
        return single("countdown", 0.1)
    value = arith.evaluate(expression)  # +inf when Python would raise, or over the size bound
    return single("countdown", 1.0 if abs(value - target) < TOLERANCE else 0.1)
