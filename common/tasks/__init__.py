"""Tasks: one `Task` record each (common/tasks/base.py) with its prompts, test set and metrics.

`get_task(name)` is how every caller reaches a task; `make_prompts(...)` is kept as the short form for training.
"""
from __future__ import annotations

from common.messages import PromptItem
from common.tasks import code, countdown, gsm8k, math_task, sudoku
from common.tasks.base import PROMPT_FORMATS, OfficialEval, Task

TASKS: dict[str, Task] = {t.name: t for t in (sudoku.TASK, countdown.TASK, gsm8k.TASK, math_task.TASK, code.TASK)}

__all__ = ["PROMPT_FORMATS", "TASKS", "OfficialEval", "Task", "get_task", "make_prompts"]


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"task.name: unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name]


def make_prompts(*, task: str, prompt_format: str, split: str, num: int, seed: int,
                 source: str | None = None) -> list[PromptItem]:
    """`num` seeded instances of `task` from `split` ("train" or "test"); `source`: the dataset (hub name or local
    path) for the dataset-backed tasks (GSM8K, MATH, code), unused by the generated ones (Sudoku, Countdown)."""
    return get_task(task).make_prompts(prompt_format=prompt_format, split=split, num=num, seed=seed, source=source)
