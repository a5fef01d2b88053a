"""Task datasets and prompt formats. `make_prompts(task_cfg, split, n)` is the one entry point."""
from __future__ import annotations

from common.messages import PromptItem
from common.tasks import countdown, sudoku

TASKS = {"sudoku": sudoku, "countdown": countdown}


def make_prompts(*, task: str, prompt_format: str, split: str, num: int, seed: int) -> list[PromptItem]:
    """`num` seeded instances of `task` from `split` ("train" or "test": disjoint by construction)."""
    if task not in TASKS:
        raise ValueError(f"task.name: unknown task {task!r}; choose one of {sorted(TASKS)}")
    return TASKS[task].make_prompts(prompt_format=prompt_format, split=split, num=num, seed=seed)
