"""4x4 Sudoku reward: the fraction of originally empty cells filled correctly.

Official definition (d1 `diffu-grpo/reward_func.py`, `sudoku_reward_func` / `validate_sudoku_solution`, used unchanged
by GDSD): take the digits inside the last `<answer>…</answer>`, pad with '0' or truncate to 16, and score
correct_empty_cells / empty_cells; no `<answer>` (or no digit in it) scores 0. Works for all three prompt formats
(`task.prompt_format`: `gdsd` and `d1` ask for a `<reasoning>` block, their reference replies put the 16 digits on
their own line; `compact` has no reasoning tag), since only the answer tag is read.
"""
from __future__ import annotations

from common.messages import RewardResult
from rewards.verifiers.text import MetaError, last_answer, require, single


def extract_sudoku_answer(text: str) -> str | None:
    """The digits of the last `<answer>` block (official `extract_answer_sudoku`), or None without a block."""
    answer = last_answer(text)
    if answer is None:
        return None
    # str.isdigit, as the official code: a non-ASCII digit (Arabic-Indic, fullwidth, superscript) fills a cell but
    # never equals the ASCII solution digit, so it scores as a wrong cell (rewards/README.md, "Non-ASCII digits").
    return "".join(ch for ch in answer if ch.isdigit())


def sudoku_reward(meta: dict, text: str) -> RewardResult:
    """meta: {"puzzle": 16 chars with '0' = empty, "solution": 16 digits}. Part name: 'sudoku'."""
    puzzle, solution = str(require(meta, "puzzle", "sudoku")), str(require(meta, "solution", "sudoku"))
    if len(puzzle) != 16 or len(solution) != 16:
        raise MetaError(f"sudoku meta: puzzle and solution must have 16 characters, got {puzzle!r}, {solution!r}")
    answer = extract_sudoku_answer(text)
    if not answer:
        return single("sudoku", 0.0)
    answer = answer[:16].ljust(16, "0")
    empty = [i for i in range(16) if puzzle[i] == "0"]
    if not empty:  # official: a puzzle without empty cells scores 0
        return single("sudoku", 0.0)
    return single("sudoku", sum(answer[i] == solution[i] for i in empty) / len(empty))
