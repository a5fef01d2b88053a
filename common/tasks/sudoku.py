"""4x4 Sudoku: a seeded generator of unique-solution puzzles, the prompt formats, the paper's test set and metric.

A grid is a 16-character string read left-to-right, top-to-bottom, '0' = empty (the paper's test-set format).
Train and test are disjoint by construction: a puzzle belongs to the test split iff crc32(puzzle) % 8 == 0.
"""
from __future__ import annotations

import itertools
import re
import zlib
from functools import cache
from typing import Any

import numpy as np

from common.messages import PromptItem
from common.tasks.base import DATA_DIR, OfficialEval, Task, base_summary, check_format, check_split, mean_of

# d1's Sudoku prompt (prompt_format "d1"; d1's `SUDOKU_SYSTEM_PROMPT` + "Solve the following Sudoku puzzle: ...").
# In both official prompts, a backslash at a line end continues the same line of the official text.
D1_SYSTEM_PROMPT = """
Please solve the following 4x4 Sudoku puzzle. The puzzle is provided as a 16-character string reading \
left-to-right, top-to-bottom, where '0' represents empty cells.

Rules:
- Fill empty cells with digits 1-4
- Each row must contain digits 1-4 exactly once
- Each column must contain digits 1-4 exactly once
- Each 2x2 box must contain digits 1-4 exactly once

Important: Your solution must be a COMPLETE 16-character string with only the digits 1-4, \
representing your final solved grid.

Respond in this exact format:
<reasoning>
Your step-by-step solving process
</reasoning>
<answer>
[16-character solution string with no spaces or separators]
</answer>
"""
# GDSD's training prompt (GaryBall/GDSD gdsd/data_utils.py SUDOKU_SYSTEM_PROMPT; note the wrapped first sentence).
GDSD_TRAIN_SYSTEM_PROMPT = """
Please solve the following 4x4 Sudoku puzzle. The puzzle is provided as a 16-character
string reading left-to-right, top-to-bottom, where '0' represents empty cells.

Rules:
- Fill empty cells with digits 1-4.
- Each row must contain digits 1-4 exactly once.
- Each column must contain digits 1-4 exactly once.
- Each 2x2 box must contain digits 1-4 exactly once.

Respond in this exact format:
<reasoning>
Your step-by-step solving process
</reasoning>
<answer>
[16-character solution string with no spaces or separators]
</answer>
"""
# GDSD's evaluation prompt (GaryBall/GDSD eval/data_utils.py SUDOKU_SYSTEM_PROMPT, with its worked example).
GDSD_EVAL_SYSTEM_PROMPT = """
Please solve the following 4x4 Sudoku puzzle. The puzzle is provided as a 16-character string reading \
left-to-right, top-to-bottom, where '0' represents empty cells.

**Rules:**
- Fill empty cells with digits 1-4.
- Each row must contain digits 1-4 exactly once.
- Each column must contain digits 1-4 exactly once.
- Each 2x2 box must contain digits 1-4 exactly once.

**Example:**
Puzzle: 0401002010030310
This puzzle grid looks like this:
0 4 | 0 1
0 0 | 2 0
----+----
1 0 | 0 3
0 3 | 1 0

Solution: 2431312412434312
The solved grid looks like this:
2 4 | 3 1
3 1 | 2 4
----+----
1 2 | 4 3
4 3 | 1 2

**Important:** Your solution must be a COMPLETE 16-character string with only the digits 1-4, \
representing your final solved grid.

Respond in this exact format:
<reasoning>
Your step-by-step solving process
</reasoning>
<answer>
[16-character solution string with no spaces or separators]
</answer>
"""
XML_REPLY = "<reasoning>\n</reasoning>\n<answer>\n{}\n</answer>"
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


def format_prompt(puzzle: str, prompt_format: str, *, evaluation: bool = False) -> tuple[str, str, str]:
    """(prompt, prefill, reply template): the user message, the text the official evaluation appends after the chat
    template ("<reasoning>"), and what a solver would write (SFT targets)."""
    check_format(prompt_format)
    if prompt_format == "gdsd" and evaluation:  # eval/data_utils.py SudokuDataset.create_prompt, add_reasoning=True
        return f"{GDSD_EVAL_SYSTEM_PROMPT}\n\nSolve the following Sudoku puzzle: {puzzle}\n", "<reasoning>", XML_REPLY
    if prompt_format == "gdsd":  # gdsd/data_utils.py get_sudoku_questions
        return f"{GDSD_TRAIN_SYSTEM_PROMPT}\n\nNow solve this Sudoku puzzle: {puzzle}\n", "", XML_REPLY
    if prompt_format == "d1":
        return f"{D1_SYSTEM_PROMPT}\nSolve the following Sudoku puzzle: {puzzle}\n", "", XML_REPLY
    return f"sudoku {puzzle}\n", "", "<answer>{}</answer>"


def make_prompts(*, prompt_format: str, split: str, num: int, seed: int, source: str | None = None) -> list[PromptItem]:
    """Seeded generated puzzles (train and test disjoint by construction); `source` is not used (our generator)."""
    check_split(split)
    check_format(prompt_format)
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    items: list[PromptItem] = []
    seen: set[str] = set()
    while len(items) < num:
        puzzle, solution = make_puzzle(rng)
        if in_test_split(puzzle) != (split == "test") or puzzle in seen:
            continue
        seen.add(puzzle)
        items.append(item_from_row(puzzle, solution, prompt_format, evaluation=split == "test"))
    return items


def item_from_row(puzzle: str, solution: str, prompt_format: str, *, evaluation: bool = False) -> PromptItem:
    prompt, prefill, reply = format_prompt(puzzle, prompt_format, evaluation=evaluation)
    return PromptItem(uid=f"sudoku:{puzzle}", task="sudoku", prompt=prompt, prefill=prefill,
                      answer=reply.format(solution), meta={"puzzle": puzzle, "solution": solution})


def load_csv(path: str, prompt_format: str) -> list[PromptItem]:
    """The paper's test set (`Puzzle,Solution` rows, evaluation prompts); a malformed row raises naming its line."""
    items = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if lineno == 1 and line.lower().startswith("puzzle"):
                continue
            parts = line.strip().split(",")
            if len(parts) != 2 or len(parts[0]) != 16 or not is_solution(parts[1]):
                raise ValueError(f"{path}:{lineno}: expected 'Puzzle,Solution' with 16-digit grids, "
                                 f"got {line.strip()!r}")
            items.append(item_from_row(parts[0], parts[1], prompt_format, evaluation=True))
    return items


# The official evaluation's answer cascade (eval/parse_and_get_acc.py parse_sudoku_answers), first match wins.
OFFICIAL_PATTERNS = (
    r"<answer>.*?```\s*([\d\s]+)```",
    r"<answer>(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|</answer>)",
    r"</answer>\s*(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|$)",
    r".*?(\d{16})\s*</answer>",
    r"\b(\d{16})\b",
)


def official_cells(text: str, item: PromptItem) -> tuple[int, int]:
    """(correctly filled originally-empty cells, empty cells) as the official parser counts them: the first
    pattern of the cascade with a non-blank group, whitespace removed, padded with '0' / cut to 16 characters."""
    puzzle, solution = item.meta["puzzle"], item.meta["solution"]
    empty = [i for i in range(16) if puzzle[i] == "0"]
    answer = ""
    for pattern in OFFICIAL_PATTERNS:
        match = re.search(pattern, text, re.DOTALL)
        if match and match.group(1).strip():
            answer = match.group(1).strip()
            break
    answer = re.sub(r"\s", "", answer)
    if not answer:
        return 0, len(empty)
    answer = (answer + "0" * 16)[:16]
    return sum(answer[i] == solution[i] for i in empty), len(empty)


def summarize(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Training-reward view: cell accuracy (the verifier's fraction of empty cells solved) and puzzles solved."""
    cells = lambda r: r["parts"].get("sudoku", r["reward"])  # noqa: E731
    return {**base_summary(rows), "cell_accuracy": mean_of(rows, cells),
            "solved": mean_of(rows, lambda r: cells(r) >= 1.0)}


TASK = Task(name="sudoku", make_prompts=make_prompts, load_test=load_csv, summarize=summarize, metric="cell_accuracy",
            default_test_path=str(DATA_DIR / "4x4_test_sudoku.csv"),
            official=OfficialEval(num_items=256, gen_lengths=(128, 256), score=official_cells, metric="cell_accuracy"))
