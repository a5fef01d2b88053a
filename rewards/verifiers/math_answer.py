"""MATH rewards: correctness (2.0 if the answer inside `<answer>` is equivalent to the reference) and format
(0.5 x (has `<answer>` + (`\\boxed` in it ? 1 : 0.5))).

Official definitions: GDSD `gdsd/rewards.py` (`math_xml`): `correctness_reward_func_math_xml` and
`boxed_and_answer_tags_format_reward_math` (`math500_utils.boxed_in_answer`). The compared answer is the text between
the first `<answer>` and the next `</answer>` (the whole reply without an `<answer>`); of that, the content of the
last `\\boxed{}` (or `\\fbox{}`), or the raw text itself (stripped) when it holds no box: `<answer>\n5\n</answer>`
against 5 scores 2.0, as officially. A box with unbalanced braces scores 0 (official: None, never equal).
One deliberate difference: equivalence is decided by `math-verify` (documented choice) instead of the official string
normalisation `is_equiv`, with `extraction_mode="first_match"`: math-verify's default `any_match` falls back to an
inner sub-expression when the whole answer fails to parse, so `\\frac{1}{`x201 `2` `}`x201 `+100` would match 1/2.
Both sides are wrapped in `\\boxed{}` so math-verify reads the whole answer as one expression (a long unboxed
reasoning text parses to nothing instead of to a number found somewhere in it).
meta: {"answer": "<reference LaTeX, e.g. \\frac{1}{2}>"}.

math-verify never runs in the calling process: its timeouts use `signal.alarm`, which raises off the main thread (a
Ray actor's thread) and other frameworks then silently score 0. It runs in `MathChecker`'s child processes instead,
each request in the child's main thread, under an outer timeout that kills the child.
"""
from __future__ import annotations

from common.messages import RewardResult
from rewards.verifiers.childpool import ChildFailed, ChildPool, ChildTimeout
from rewards.verifiers.text import require, single


class MathCheckError(RuntimeError):
    """math-verify could not decide (timeout, crash, or an exception inside it)."""


def answer_region(text: str) -> str | None:
    """Official `boxed_in_answer`: the text between the first `<answer>` and the following `</answer>` (or the end);
    None without an `<answer>`."""
    start = text.find("<answer>")
    if start < 0:
        return None
    start += len("<answer>")
    end = text.find("</answer>", start)
    return text[start:] if end < 0 else text[start:end]


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
        self.pool = ChildPool("rewards.verifiers.math_child", size=processes)
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


def compared_answer(text: str) -> str | None:
    """The answer the official `correctness_reward_func_math_xml` compares: the last box of the `<answer>` region
    (the whole reply without one), or the stripped region itself when it has no box; None for an unbalanced box."""
    region = answer_region(text)
    region = text if region is None else region
    if "\\boxed" in region or "\\fbox" in region:
        return last_boxed(region)
    return region.strip()


def math_correctness(meta: dict, text: str, *, checker: MathChecker) -> RewardResult:
    """2.0 if the compared answer is equivalent to meta["answer"]. Part name: 'math_correctness'."""
    reference = str(require(meta, "answer", "math"))
    answer = compared_answer(text)
    if not answer:
        return single("math_correctness", 0.0)
    return single("math_correctness", 2.0 if checker.equivalent(reference, answer) else 0.0)


def math_format(meta: dict, text: str) -> RewardResult:
    """0.5 x (1 if `<answer>` present + (1 if `\\boxed` in the answer part, else 0.5)). Part name: 'math_format'."""
    region = answer_region(text)
    has_answer = region is not None
    searched = region if region is not None else text  # d1 tests the whole reply when there is no <answer>
    return single("math_format", 0.5 * (float(has_answer) + (1.0 if "\\boxed" in searched else 0.5)))
