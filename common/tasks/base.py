"""The per-task record every consumer reads (prompts, test set, metrics), so no caller branches on a task name.

A `Task` bundles what the rest of the system needs to know about one task:
  - `make_prompts(prompt_format=, split=, num=, seed=, source=)`: training (or generated test) prompts;
  - `load_test(path, prompt_format)`: the paper's test set from a file or dataset;
  - `default_test_path`: the test set shipped in `data/` (None when the task has no shipped file);
  - `summarize(rows)`: the task's metrics of scored rows (`{"reward", "parts", ...}` from the reward service);
  - `official`: the GDSD repository's own evaluation protocol (`eval/eval.py` + `eval/parse_and_get_acc.py`), or
    None where the official evaluation is another harness (GSM8K / MATH use lm-eval there).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from common.messages import PromptItem

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
PROMPT_FORMATS = ("gdsd", "d1", "compact")
# The XML reply format of the reasoning tasks: one text under several official names (d1's SYSTEM_PROMPT and
# REASONING_SYSTEM_PROMPT, GDSD's REASONING_SYSTEM_PROMPT and GSM8K_XML_SYSTEM_PROMPT in gdsd/data_utils.py and
# eval/data_utils.py): Countdown, GSM8K and MATH prompts start with it.
REASONING_SYSTEM_PROMPT = """
Respond in the following format:
<reasoning>
...
</reasoning>
<answer>
...
</answer>
"""


@dataclass(frozen=True)
class OfficialEval:
    """The official evaluation of one task (GaryBall/GDSD `eval/eval.py`, `eval/parse_and_get_acc.py`).

    `num_items` test items drawn by `np.random.seed(42); np.random.choice(len, num_items, replace=False)`, greedy,
    steps = gen_length / 2, block 32, one row per gen length in `gen_lengths`. `score(text, item)` returns
    (correct, total) for the row; the metric is sum(correct) / sum(total) over the items (a micro-average)."""

    num_items: int
    gen_lengths: tuple[int, ...]
    score: Callable[[str, PromptItem], tuple[int, int]]
    metric: str


@dataclass(frozen=True)
class Task:
    name: str
    make_prompts: Callable[..., list[PromptItem]]
    load_test: Callable[[str, str], list[PromptItem]]
    summarize: Callable[[list[dict[str, Any]]], dict[str, float]]
    metric: str  # the headline key of `summarize`
    default_test_path: str | None = None
    official: OfficialEval | None = None


def check_format(prompt_format: str) -> None:
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"task.prompt_format: unknown format {prompt_format!r}; choose one of {PROMPT_FORMATS}")


def check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def mean_of(rows: list[dict[str, Any]], value: Callable[[dict[str, Any]], float]) -> float:
    return sum(value(r) for r in rows) / max(len(rows), 1)


def base_summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """n, mean reward and the count of rows the reward service could not score (errors are counted, never hidden)."""
    return {"n": len(rows), "reward": mean_of(rows, lambda r: r["reward"]),
            "errors": sum(r.get("error") is not None for r in rows)}


def last_boxed_only_string(text: str) -> str | None:
    """The official `eval/parse_utils.py` helper, same semantics: the last `\\boxed{...}` (balanced braces) or
    `\\boxed ...` up to a `$`; the whole text when there is no box at all; None for an unbalanced box."""
    idx = text.rfind("\\boxed")
    if "\\boxed " in text:
        return "\\boxed " + text.split("\\boxed ")[-1].split("$")[0]
    if idx < 0:
        idx = text.rfind("\\fbox")
        if idx < 0:
            return text
    depth = 0
    for i in range(idx, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[idx:i + 1]
    return None


def remove_boxed(s: str | None) -> str | None:
    """Inside of `\\boxed{...}` / after `\\boxed `; None where the official helper raises (not a box)."""
    if s is None:
        return None
    if "\\boxed " in s:
        return s[len("\\boxed "):] if s.startswith("\\boxed ") else None
    if s.startswith("\\boxed{") and s.endswith("}"):
        return s[len("\\boxed{"):-1]
    return None
