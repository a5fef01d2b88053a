"""Arithmetic on an untrusted expression without eval: Python's own operator semantics over an AST whitelist. The one
Countdown evaluator: the official-evaluation parser (common/tasks/countdown.py) and the training reward
(rewards/verifiers/countdown.py) both score with `evaluate`.

The official Countdown scorers (GDSD `gdsd/rewards.py` and `eval/parse_and_get_acc.py`) call
`eval(expr, {"__builtins__": None}, {})` after a character whitelist (`^[\\d+\\-*/().\\s]+$`), so `**` and `//`
count. Here the same grammar (`ast.parse`) and the same Python operators on the same types (ints stay exact, `/`
makes floats, float overflow raises) give the same value. The one bound the official code lacks (it hangs on
`9**9**9`) is on the size of an integer result, not on the exponent: a power whose result would have more than
MAX_BITS bits (estimated as exponent * log2|base| before computing it) and any integer result over MAX_BITS bits
are refused, and refused means +inf (never a match for Countdown's small targets). So every expression whose integer
intermediates stay within MAX_BITS bits (e.g. `1**101+5`, `(100**100)**100`) evaluates exactly as `eval` does.
"""
from __future__ import annotations

import ast
import math
import operator
import re
from typing import Any, Callable

ALLOWED = re.compile(r"^[\d+\-*/().\s]+$")
MAX_BITS = 1 << 17  # 131072 bits: (a**b)**c for any a, b, c <= 100 fits; one such power costs milliseconds
_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class TooLarge(ArithmeticError):
    """An integer result over MAX_BITS bits (refused before it is computed when it is a power)."""


def _check_power(base: object, exponent: object) -> None:
    """Refuse int ** int whose result would exceed MAX_BITS bits, before computing it: |base| ** e has about
    e * log2|base| bits (1 more at most). Floats and complex numbers need no bound: they raise OverflowError."""
    if type(base) is int and type(exponent) is int and exponent > 0 and abs(base) > 1:
        if exponent * math.log2(abs(base)) > MAX_BITS + 1:
            raise TooLarge(f"power over {MAX_BITS} bits")


def value(node: ast.AST) -> int | float | complex:
    """The value of a parsed expression node under Python's semantics; raises TooLarge, ValueError (not arithmetic)
    and whatever Python raises for the operation (ZeroDivisionError, OverflowError)."""
    if isinstance(node, ast.Constant) and (type(node.value) is int or type(node.value) is float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](value(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = value(node.left), value(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        out = _BINARY[type(node.op)](left, right)
        if type(out) is int and out.bit_length() > MAX_BITS:  # products of bounded operands: cheap, checked after
            raise TooLarge(f"integer over {MAX_BITS} bits")
        return out
    raise ValueError(f"not arithmetic: {ast.dump(node)[:60]}")


def evaluate(expression: str) -> int | float | complex:
    """The official `evaluate_equation`: the expression's value, or +inf for anything it would not evaluate (and
    for results over the size bound)."""
    try:
        if not ALLOWED.match(expression):
            return float("inf")
        return value(ast.parse(expression.strip(), mode="eval").body)
    except (SyntaxError, ValueError, ArithmeticError, TypeError, RecursionError, MemoryError):
        return float("inf")
