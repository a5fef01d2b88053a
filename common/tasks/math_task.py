"""MATH with GDSD's XML prompt (gdsd/data_utils.py get_math_questions_xml): ankner/math-500, train split for
training and its test split (the MATH-500 problems) for evaluation.

The reference answer is the content of the last \\boxed{} of the dataset's `solution` (the official reward takes
`remove_boxed(last_boxed_only_string(solution))`); a row without a box is counted and skipped. The official MATH
evaluation runs through lm-eval (math_eval/), so `official` is None here.
"""
from __future__ import annotations

from typing import Any

from common.messages import PromptItem
from common.tasks import hf
from common.tasks.base import (REASONING_SYSTEM_PROMPT, Task, base_summary, check_format, check_split,
                               last_boxed_only_string, mean_of, remove_boxed)

HUB_NAME = "ankner/math-500"


def format_prompt(problem: str, prompt_format: str) -> str:
    check_format(prompt_format)
    if prompt_format == "compact":
        return f"{problem}\n"
    return (f"{REASONING_SYSTEM_PROMPT}\n\nYou are a math expert. Solve the problem step by step. Wrap the final "
            f"answer in a \\boxed{{}}.\n\n{problem}")


def row_item(index: int, row: dict[str, Any], prompt_format: str) -> PromptItem:
    problem, solution = hf.field(row, "problem"), hf.field(row, "solution")
    answer = remove_boxed(last_boxed_only_string(solution)) if "\\boxed" in solution else None
    if not answer:
        raise hf.BadRow("solution has no complete \\boxed{...} answer")
    return PromptItem(uid=f"math:{row.get('unique_id', index)}", task="math",
                      prompt=format_prompt(problem, prompt_format),
                      answer=f"<reasoning>\n{solution}\n</reasoning>\n<answer>\n\\boxed{{{answer}}}\n</answer>",
                      meta={"answer": answer})


def load(source: str | None, split: str, prompt_format: str) -> list[PromptItem]:
    check_split(split)
    check_format(prompt_format)
    source = source or HUB_NAME
    rows = hf.load_rows(source, split=split)
    return hf.to_items(rows, lambda i, r: row_item(i, r, prompt_format), source=source, split=split)


make_prompts, load_test = hf.prompt_functions(load)


def summarize(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Accuracy = the equivalence part scored its full 2.0."""
    return {**base_summary(rows), "accuracy": mean_of(rows, lambda r: r["parts"].get("math_correctness", 0.0) >= 2.0)}


TASK = Task(name="math", make_prompts=make_prompts, load_test=load_test, summarize=summarize, metric="accuracy")
