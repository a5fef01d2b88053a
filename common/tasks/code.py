"""The code task as the official scripts read it (gdsd/data_utils.py get_code_questions): a local JSONL file (or
dataset) whose rows have `question` and `test_cases` (a list of Python assert snippets), with a system prompt.

The official code does not bundle this data; `task.source` must name it. The user message is the question plus
"\\nTest cases: " and the first test, unless the question already holds a fenced block. Rows without tests are
counted and skipped. There is no official code-task evaluation script, so `official` is None.
"""
from __future__ import annotations

from typing import Any

from common.messages import PromptItem
from common.tasks import hf
from common.tasks.base import Task, base_summary, check_format, check_split, mean_of

SYSTEM_PROMPT = ("You are a helpful assistant. When you output code, it must be in a single fenced code block using "
                 "triple backticks and the language specifier. The code block must be the last part of your response.")


def row_item(index: int, row: dict[str, Any], prompt_format: str) -> PromptItem:
    question, tests = hf.field(row, "question"), row.get("test_cases")
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) and t.strip() for t in tests):
        raise hf.BadRow(f"test_cases must be a non-empty list of strings, got {tests!r:.60}")
    prompt = question + ("\nTest cases: " + tests[0] if "\n```\n" not in question else "")
    system = "" if prompt_format == "compact" else SYSTEM_PROMPT
    meta: dict[str, Any] = {"tests": list(tests)}
    if isinstance(row.get("entry_point"), str):
        meta["entry_point"] = row["entry_point"]
    return PromptItem(uid=f"code:{row.get('task_id', index)}", task="code", prompt=prompt, system=system, meta=meta)


def load(source: str | None, split: str, prompt_format: str) -> list[PromptItem]:
    check_split(split)
    check_format(prompt_format)
    if not source:
        raise ValueError("task.source: the code task's data is not bundled (official: a local JSONL with question / "
                         "test_cases fields); set task.source=/path/to/code.jsonl")
    rows = hf.load_rows(source, split=split)
    return hf.to_items(rows, lambda i, r: row_item(i, r, prompt_format), source=source, split=split)


make_prompts, load_test = hf.prompt_functions(load)


def summarize(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean fraction of tests passed, and the fraction of rows passing them all."""
    passed = lambda r: r["parts"].get("code_tests", 0.0)  # noqa: E731
    return {**base_summary(rows), "tests_passed": mean_of(rows, passed),
            "accuracy": mean_of(rows, lambda r: passed(r) >= 1.0)}


TASK = Task(name="code", make_prompts=make_prompts, load_test=load_test, summarize=summarize, metric="accuracy")
