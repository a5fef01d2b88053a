"""Small typed messages passed between services (besides the RolloutBatch, see common/batch.py)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PromptItem(BaseModel):
    """One task instance: the text the model sees and what a verifier needs to score a reply."""

    model_config = ConfigDict(frozen=True)

    uid: str = Field(description="stable id of the instance, e.g. 'sudoku:3102200002100320'")
    task: str = Field(description="task name: sudoku | countdown | gsm8k | math | code")
    prompt: str = Field(description="the full prompt text given to the model")
    system: str = Field(default="", description="system message placed before the prompt by the chat template "
                        "(the official code task has one); empty = none")
    prefill: str = Field(default="", description="text appended after the chat template, as the start of the reply "
                         "(the official evaluation prefills '<reasoning>')")
    answer: str = Field(default="", description="a reference reply in the prompt format (used by SFT)")
    meta: dict[str, Any] = Field(default_factory=dict, description="what the verifier needs (puzzle, target, tests)")


class RewardResult(BaseModel):
    """The score of one completion. `total` is the sum of `parts`; `error` names why a row scored 0 unexpectedly."""

    total: float
    parts: dict[str, float] = Field(default_factory=dict)
    error: str | None = None
