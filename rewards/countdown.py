"""Countdown reward (3 numbers): 1.0 if the `<answer>` expression uses exactly the given numbers and evaluates within
1e-5 of the target, 0.1 if an `<answer>` exists but fails any check, 0 without one.

Official definition: d1 `diffu-grpo/reward_func.py`, `compute_score(..., format_score=0.1, score=1.0)` (from TinyZero).
Where the official code calls `eval` behind a character regex, this module never evaluates anything: the expression is
parsed with `ast` and computed by `evaluate`, a walker that accepts only integer literals, + - * /, parentheses and
unary minus, on exact rationals (`Fraction`), so `2**99999`, names, calls, attributes and `__import__('os')` are
rejected before any arithmetic happens. Differences from the official checks, all deliberate: the numbers used are
the integer literals of the parsed tree (the official regex `\\d+` would also accept `3.0` as the numbers 3 and 0),
and unary plus, floats and booleans are rejected.
"""
from __future__ import annotations

import ast
from fractions import Fraction

from common.messages import RewardResult
from rewards.common_text import MetaError, last_answer, require, single

MAX_EXPRESSION_CHARS = 256  # a 3-number expression is ~20 chars; longer input only costs parse time
MAX_LITERAL_DIGITS = 12  # the task's numbers are <= 100; bigger literals cannot be among them
TOLERANCE = Fraction(1, 100_000)
_BINARY = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b}


class ExpressionError(ValueError):
    """The expression is not a plain arithmetic expression over integer literals (or divides by zero)."""


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
            if type(node.op) not in _BINARY:
                raise ExpressionError(f"operator {type(node.op).__name__} is not allowed")
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, ast.USub):
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
    return [node.value for node in sorted(found, key=lambda n: (n.lineno, n.col_offset))]


def evaluate(tree: ast.expr) -> Fraction:
    """Exact value of a checked tree. Depth is bounded by MAX_EXPRESSION_CHARS, so recursion is safe."""
    if isinstance(tree, ast.Constant):
        return Fraction(tree.value)
    if isinstance(tree, ast.UnaryOp):
        return -evaluate(tree.operand)
    if isinstance(tree, ast.BinOp):
        left, right = evaluate(tree.left), evaluate(tree.right)
        if isinstance(tree.op, ast.Div) and right == 0:
            raise ExpressionError("division by zero")
        return _BINARY[type(tree.op)](left, right)
    raise ExpressionError(f"{type(tree).__name__} is not allowed")  # unreachable after parse_expression


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
        if sorted(literals(tree)) != sorted(numbers):
            return single("countdown", 0.1)
        value = evaluate(tree)
    except ExpressionError:
        return single("countdown", 0.1)
    return single("countdown", 1.0 if abs(value - Fraction(target)) < TOLERANCE else 0.1)
