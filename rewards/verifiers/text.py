"""Text helpers shared by the verifiers: the `<answer>` tag as the official reward code reads it, in linear time.

The official code uses `re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)[-1]`; on a reply with many `<answer>`
tags and no closing tag that regex backtracks quadratically (seconds at 128 KB, minutes at 1 MB). `answer_span` finds
the same match with `str.find` from left to right, each character looked at a bounded number of times.
"""
from __future__ import annotations

from common.messages import RewardResult

OPEN, CLOSE = "<answer>", "</answer>"


class MetaError(ValueError):
    """The prompt meta given to a verifier lacks a field or has a malformed one (a data bug, not a model error)."""


def answer_span(text: str) -> tuple[int, int] | None:
    """(start, end) of the content of the last `<answer>…</answer>` match as the official non-greedy, non-overlapping
    regex finds it: each match runs from an opening tag to the first closing tag after it; None without a match."""
    last, position = None, 0
    while True:
        start = text.find(OPEN, position)
        if start < 0:
            return last
        end = text.find(CLOSE, start + len(OPEN))
        if end < 0:
            return last
        last, position = (start + len(OPEN), end), end + len(CLOSE)


def last_answer(text: str) -> str | None:
    """Content of the last complete `<answer>…</answer>` (stripped), or None when there is none."""
    span = answer_span(text)
    return None if span is None else text[span[0]:span[1]].strip()


def single(name: str, value: float, error: str | None = None) -> RewardResult:
    """A result with one part named `name`."""
    return RewardResult(total=value, parts={name: value}, error=error)


def require(meta: dict, key: str, task: str) -> object:
    if not isinstance(meta, dict) or key not in meta:
        got = sorted(meta) if isinstance(meta, dict) else meta
        raise MetaError(f"{task} meta needs a {key!r} field, got keys {got!r}")
    return meta[key]
