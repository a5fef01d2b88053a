"""Arithmetic on an untrusted expression without eval: Python's own operator semantics over an AST whitelist.

The official Countdown evaluation calls `eval(expr, {"__builtins__": None}, {})` after a character whitelist
(`^[\\d+\\-*/().\\s]+$`), so `**` and `//` count. Here the same grammar (`ast.parse`) and the same Python
operators give the same value, with two bounds the official code lacks (it could hang on `9**9**9`): an exponent
above MAX_EXPONENT in magnitude or an integer result above MAX_BITS bits evaluates to +inf (never a match for
Countdown's small targets).
"""
from __future__ import annotations

import ast
import operator
import re

ALLOWED = re.compile(r"^[\d+\-*/().\s]+$")
MAX_EXPONENT = 100
MAX_BITS = 4096
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class _TooLarge(Exception):
    pass


def _value(node: ast.AST) -> int | float | complex:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and (isinstance(right, complex) or abs(right) > MAX_EXPONENT):
            raise _TooLarge
        out = _BINARY[type(node.op)](left, right)
        if isinstance(out, int) and out.bit_length() > MAX_BITS:
            raise _TooLarge
        return out
    raise ValueError(f"not arithmetic: {ast.dump(node)[:60]}")


def evaluate(expression: str) -> int | float | complex:
    """The official `evaluate_equation`: the expression's value, or +inf for anything it would not evaluate."""
    try:
        if not ALLOWED.match(expression):
            return float("inf")
        return _value(ast.parse(expression.strip(), mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, _TooLarge, RecursionError, MemoryError):
        return float("inf")
