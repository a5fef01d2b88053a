"""Text helpers shared by the verifiers: the `<answer>` tag as the official reward code reads it."""
from __future__ import annotations

import re

from common.messages import RewardResult

# d1 `extract_solution` / `extract_answer_sudoku`: the LAST non-greedy <answer>…</answer> match, across lines.
ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


class MetaError(ValueError):
    """The prompt meta given to a verifier lacks a field or has a malformed one (a data bug, not a model error)."""


def last_answer(text: str) -> str | None:
    """Content of the last complete `<answer>…</answer>` (stripped), or None when there is none."""
    matches = ANSWER_RE.findall(text)
    return matches[-1].strip() if matches else None


def single(name: str, value: float, error: str | None = None) -> RewardResult:
    """A result with one part named `name`."""
    return RewardResult(total=value, parts={name: value}, error=error)


def require(meta: dict, key: str, task: str) -> object:
    if not isinstance(meta, dict) or key not in meta:
        raise MetaError(f"{task} meta needs a {key!r} field, got keys {sorted(meta) if isinstance(meta, dict) else meta!r}")
    return meta[key]
