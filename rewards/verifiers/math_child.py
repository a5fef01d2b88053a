"""The math-verify child process: `python -m rewards.verifiers.math_child`, one JSON request per stdin line.

Request {"gold": latex, "pred": latex}; reply {"equivalent": bool} or {"error": str}, one line each. It prints
{"ready": true} once math-verify is imported, so the parent can tell import time from request time.
math-verify's own timeouts use signal.alarm, which only works in a main thread: here every request runs in this
process's main thread, and the parent adds an outer timeout that kills the whole child.
"""
from __future__ import annotations

import json
import resource
import sys

MEMORY_LIMIT = 2 << 30  # sympy on adversarial LaTeX can grow without bound; fail inside this process instead


def _as_latex(expr: str) -> str:
    # The reference may already carry \boxed{...}; otherwise box it so both sides go through the same extraction.
    return expr if "\\boxed" in expr else "\\boxed{" + expr + "}"


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    from math_verify import parse, verify

    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            # first_match: the whole box or nothing (any_match would fall back to an inner sub-expression)
            gold = parse(_as_latex(request["gold"]), parsing_timeout=request.get("timeout", 5),
                         extraction_mode="first_match")
            pred = parse(_as_latex(request["pred"]), parsing_timeout=request.get("timeout", 5),
                         extraction_mode="first_match")
            equivalent = gold and pred and verify(gold, pred, timeout_seconds=request.get("timeout", 5))
            reply: dict[str, object] = {"equivalent": bool(equivalent)}
        except BaseException as exc:  # noqa: B036  (a MemoryError or the alarm must not end the loop)
            reply = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
