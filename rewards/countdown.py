"""Countdown reward (3 numbers): 1.0 if the `<answer>` expression uses exactly the given numbers and evaluates within
1e-5 of the target, 0.1 if an `<answer>` exists but fails any check, 0 without one.

Official definition: GDSD `gdsd/rewards.py` `compute_score(..., format_score=0.1, score=1.0)` (from d1 / TinyZero).
Where the official code calls `eval` behind the character regex `^[\\d+\\-*/().\\s]+$` (so `**` and `//` are
accepted: `<answer>3**2*1</answer>` with numbers [3, 2, 1] and target 9 scores 1.0), this module never evaluates
anything: the expression is parsed with `ast` and computed by `evaluate`, a walker that accepts only integer literals,
`+ - * / // **`, parentheses and unary minus, on exact rationals (`Fraction`). `**` needs an integer exponent of at
most MAX_EXPONENT in size, and every intermediate value is bounded to MAX_RESULT_BITS (numerator and denominator), so
`9**9**9` is rejected before any big arithmetic happens; names, calls, attributes and `__import__('os')` are rejected
by the parser check. Differences from the official checks, all deliberate: the numbers used are the integer literals
of the parsed tree (the official regex `\\d+` would also accept `3.0` as the numbers 3 and 0); unary plus, floats,
booleans and non-integer exponents (official: a float, or a complex for a negative base) are rejected (0.1).
"""
from __future__ import annotations

import ast
from fractions import Fraction

from common.messages import RewardResult
from rewards.common_text import MetaError, last_answer, require, single

MAX_EXPRESSION_CHARS = 256  # a 3-number expression is ~20 chars; longer input only costs parse time
MAX_LITERAL_DIGITS = 12  # the task's numbers are <= 100; bigger literals cannot be among them
MAX_EXPONENT = 64  # |exponent| of **; more is no countdown solution, only work
MAX_RESULT_BITS = 4096  # numerator and denominator of every intermediate value
TOLERANCE = Fraction(1, 100_000)
_BINARY = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: Fraction(a // b), ast.Pow: lambda a, b: a ** b}


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
        if isinstance(tree.op, (ast.Div, ast.FloorDiv)) and right == 0:
            raise ExpressionError("division by zero")
        if isinstance(tree.op, ast.Pow):
            _check_power(left, right)
        return _bounded(_BINARY[type(tree.op)](left, right))
    raise ExpressionError(f"{type(tree).__name__} is not allowed")  # unreachable after parse_expression


def _bits(value: Fraction) -> int:
    return max(value.numerator.bit_length(), value.denominator.bit_length())


def _bounded(value: Fraction) -> Fraction:
    if _bits(value) > MAX_RESULT_BITS:
        raise ExpressionError(f"intermediate value over {MAX_RESULT_BITS} bits")
    return value


def _check_power(base: Fraction, exponent: Fraction) -> None:
    """Bounds of `base ** exponent`, checked before computing it."""
    if exponent.denominator != 1:
        raise ExpressionError("non-integer exponent")
    if abs(exponent) > MAX_EXPONENT:
        raise ExpressionError(f"exponent over {MAX_EXPONENT}")
    if base == 0 and exponent < 0:
        raise ExpressionError("division by zero")
    if _bits(base) * abs(int(exponent)) > MAX_RESULT_BITS:
        raise ExpressionError(f"power over {MAX_RESULT_BITS} bits")


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
