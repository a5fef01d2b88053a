"""MATH rewards: correctness (2.0 if the last `\\boxed{}` in `<answer>` is equivalent to the reference) and format
(0.5 x (has `<answer>` + (`\\boxed` in it ? 1 : 0.5))).

Official definitions: d1 `diffu-grpo/reward_func.py` `correctness_reward_func_math` and
`boxed_and_answer_tags_format_reward` (`math500_utils.boxed_in_answer`), as summarised in DESIGN.md. Two deliberate
differences: equivalence is decided by `math-verify` instead of d1's string normalisation `is_equiv`, and the boxed
test looks for a real backslash (d1 writes `"\\boxed"` without escaping, i.e. a backspace character, so its format
reward never sees a box). Per the issue, the box is taken from inside `<answer>` (d1 looked at the whole reply).
meta: {"answer": "<reference LaTeX, e.g. \\frac{1}{2}>"}.

math-verify never runs in the calling process: its timeouts use `signal.alarm`, which raises off the main thread (a
Ray actor's thread) and other frameworks then silently score 0. It runs in `MathChecker`'s child processes instead,
each request in the child's main thread, under an outer timeout that kills the child.
"""
from __future__ import annotations

import threading

from common.messages import RewardResult
from rewards.childpool import ChildFailed, ChildPool, ChildTimeout
from rewards.common_text import require, single


class MathCheckError(RuntimeError):
    """math-verify could not decide (timeout, crash, or an exception inside it)."""


def answer_region(text: str) -> str | None:
    """d1 `boxed_in_answer`: the text between the first `<answer>` and the following `</answer>` (or the end)."""
    if "<answer>" not in text:
        return None
    return text.split("<answer>")[1].split("</answer>")[0]


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (balanced braces) or `\\boxed x` (up to `$`), after d1/Hendrycks
    `last_boxed_only_string` + `remove_boxed`; `\\fbox{...}` counts when there is no `\\boxed`. None if absent."""
    index = text.rfind("\\boxed")
    name = "\\boxed"
    if index < 0:
        index, name = text.rfind("\\fbox"), "\\fbox"
        if index < 0:
            return None
    rest = text[index + len(name):]
    if rest.startswith(" "):
        return rest[1:].split("$")[0].strip()
    if not rest.startswith("{"):
        return None
    depth = 0
    for position, char in enumerate(rest):
        depth += char == "{"
        depth -= char == "}"
        if depth == 0:
            return rest[1:position]
    return None  # unbalanced braces: no answer


class MathChecker:
    """Equivalence of two LaTeX answers via math-verify in `processes` child processes."""

    def __init__(self, processes: int = 1, timeout_s: float = 10.0, inner_timeout_s: int = 5) -> None:
        self.pool = ChildPool("rewards._math_child", size=processes)
        self.timeout_s, self.inner_timeout_s = timeout_s, inner_timeout_s

    def equivalent(self, gold: str, pred: str) -> bool:
        """True iff math-verify says `pred` equals `gold`; raises MathCheckError when it cannot decide."""
        try:
            reply = self.pool.call({"gold": gold, "pred": pred, "timeout": self.inner_timeout_s}, self.timeout_s)
        except ChildTimeout as exc:
            raise MathCheckError(f"math-verify timed out after {self.timeout_s}s (child killed)") from exc
        except ChildFailed as exc:
            raise MathCheckError(f"math-verify child failed: {exc}") from exc
        if "error" in reply:
            raise MathCheckError(f"math-verify raised {reply['error']}")
        return bool(reply["equivalent"])

    def close(self) -> None:
        self.pool.close()


_default_lock = threading.Lock()
_default_checker: MathChecker | None = None


def default_checker() -> MathChecker:
    """One process-wide checker (one child) for the module-level `math_correctness`."""
    global _default_checker
    with _default_lock:
        if _default_checker is None:
            _default_checker = MathChecker()
        return _default_checker


def math_correctness(meta: dict, text: str, checker: MathChecker | None = None) -> RewardResult:
    """2.0 if the last box inside `<answer>` is equivalent to meta["answer"]. Part name: 'math_correctness'."""
    reference = str(require(meta, "answer", "math"))
    region = answer_region(text)
    boxed = last_boxed(region) if region is not None else None
    if not boxed:
        return single("math_correctness", 0.0)
    checker = checker or default_checker()
    return single("math_correctness", 2.0 if checker.equivalent(reference, boxed) else 0.0)


def math_format(meta: dict, text: str) -> RewardResult:
    """0.5 x (1 if `<answer>` present + (1 if `\\boxed` in the answer part, else 0.5)). Part name: 'math_format'."""
    region = answer_region(text)
    has_answer = region is not None
    searched = region if has_answer else text  # d1 tests the whole reply when there is no <answer>
    return single("math_format", 0.5 * (float(has_answer) + (1.0 if "\\boxed" in searched else 0.5)))
