"""4x4 Sudoku: a seeded generator of unique-solution puzzles and the two prompt formats.

A grid is a 16-character string read left-to-right, top-to-bottom, '0' = empty (the paper's test-set format).
Train and test are disjoint by construction: a puzzle belongs to the test split iff crc32(puzzle) % 8 == 0.
"""
from __future__ import annotations

import itertools
import zlib
from functools import cache

import numpy as np

from common.messages import PromptItem

# d1 / GDSD official system prompt for Sudoku (LLaDA, Dream).
OFFICIAL_SYSTEM_PROMPT = """
Please solve the following 4x4 Sudoku puzzle. The puzzle is provided as a 16-character string reading left-to-right, top-to-bottom, where '0' represents empty cells.

Rules:
- Fill empty cells with digits 1-4
- Each row must contain digits 1-4 exactly once
- Each column must contain digits 1-4 exactly once
- Each 2x2 box must contain digits 1-4 exactly once

Important: Your solution must be a COMPLETE 16-character string with only the digits 1-4, representing your final solved grid.

Respond in this exact format:
<reasoning>
Your step-by-step solving process
</reasoning>
<answer>
[16-character solution string with no spaces or separators]
</answer>
"""
NUM_EMPTY = 8  # every puzzle of the paper's 4x4 test set has 8 empty cells


def _units() -> list[list[int]]:
    rows = [[r * 4 + c for c in range(4)] for r in range(4)]
    cols = [[r * 4 + c for r in range(4)] for c in range(4)]
    boxes = [[(br + r) * 4 + bc + c for r in range(2) for c in range(2)] for br in (0, 2) for bc in (0, 2)]
    return rows + cols + boxes


UNITS = _units()


def is_solution(grid: str) -> bool:
    return len(grid) == 16 and all(sorted(grid[i] for i in unit) == list("1234") for unit in UNITS)


@cache
def all_solutions() -> tuple[str, ...]:
    """The 288 solved 4x4 grids, in lexicographic order."""
    rows = ["".join(p) for p in itertools.permutations("1234")]
    return tuple(g for g in ("".join(c) for c in itertools.product(rows, repeat=4)) if is_solution(g))


@cache
def _solution_array() -> np.ndarray:
    return np.array([[int(ch) for ch in s] for s in all_solutions()], dtype=np.int8)  # [288, 16]


def count_solutions(puzzle: str) -> int:
    """How many solved grids agree with every given cell of `puzzle`."""
    given = np.frombuffer(puzzle.encode(), dtype=np.uint8).astype(np.int8) - ord("0")  # [16]
    return int(((given == 0) | (_solution_array() == given)).all(axis=1).sum())


def in_test_split(puzzle: str) -> bool:
    return zlib.crc32(puzzle.encode()) % 8 == 0


def make_puzzle(rng: np.random.Generator, num_empty: int = NUM_EMPTY) -> tuple[str, str]:
    """(puzzle, solution): blank cells of a random solved grid in random order, keeping the solution unique."""
    while True:
        solution = all_solutions()[rng.integers(len(all_solutions()))]
        cells = list(solution)
        blanks = 0
        for i in rng.permutation(16):
            keep, cells[i] = cells[i], "0"
            if count_solutions("".join(cells)) == 1:
                blanks += 1
                if blanks == num_empty:
                    return "".join(cells), solution
            else:
                cells[i] = keep


def format_prompt(puzzle: str, prompt_format: str) -> tuple[str, str]:
    """(prompt, reply-prefix) in the chosen format; the reply is what a solver would write."""
    if prompt_format == "official":
        return f"{OFFICIAL_SYSTEM_PROMPT}\nSolve the following Sudoku puzzle: {puzzle}\n", "<reasoning>\n</reasoning>\n<answer>\n{}\n</answer>"
    if prompt_format == "compact":
        return f"sudoku {puzzle}\n", "<answer>{}</answer>"
    raise ValueError(f"task.prompt_format: unknown format {prompt_format!r}; choose 'official' or 'compact'")


def make_prompts(*, prompt_format: str, split: str, num: int, seed: int) -> list[PromptItem]:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    items, seen = [], set()
    while len(items) < num:
        puzzle, solution = make_puzzle(rng)
        if in_test_split(puzzle) != (split == "test") or puzzle in seen:
            continue
        seen.add(puzzle)
        items.append(item_from_row(puzzle, solution, prompt_format))
    return items


def item_from_row(puzzle: str, solution: str, prompt_format: str) -> PromptItem:
    prompt, reply = format_prompt(puzzle, prompt_format)
    return PromptItem(uid=f"sudoku:{puzzle}", task="sudoku", prompt=prompt, answer=reply.format(solution),
                      meta={"puzzle": puzzle, "solution": solution})


def load_csv(path: str, prompt_format: str) -> list[PromptItem]:
    """The paper's test set (`Puzzle,Solution` rows); a malformed row raises naming its line."""
    items = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if lineno == 1 and line.lower().startswith("puzzle"):
                continue
            parts = line.strip().split(",")
            if len(parts) != 2 or len(parts[0]) != 16 or not is_solution(parts[1]):
                raise ValueError(f"{path}:{lineno}: expected 'Puzzle,Solution' with 16-digit grids, got {line.strip()!r}")
            items.append(item_from_row(parts[0], parts[1], prompt_format))
    return items
