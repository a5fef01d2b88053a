"""Sudoku reward against hand-worked cases and the task generator's reference replies in all three prompt formats."""
from __future__ import annotations

import pytest

from common.tasks import sudoku as sudoku_task
from rewards.verifiers.text import MetaError
from rewards.verifiers.sudoku import extract_sudoku_answer, sudoku_reward

SOLUTION = "1234341221434321"
PUZZLE = "1004300220034001"  # cells 1, 2, 5, 6, 9, 10, 13, 14 blanked: 8 empty cells
META = {"puzzle": PUZZLE, "solution": SOLUTION}


def total(text: str) -> float:
    return sudoku_reward(META, text).total


def test_hand_worked_example_is_a_valid_puzzle():
    assert sudoku_task.is_solution(SOLUTION) and sudoku_task.count_solutions(PUZZLE) >= 1
    assert [i for i, c in enumerate(PUZZLE) if c == "0"] == [1, 2, 5, 6, 9, 10, 13, 14]


@pytest.mark.parametrize("text", [
    f"<reasoning>\nfill the blanks\n</reasoning>\n<answer>\n{SOLUTION}\n</answer>",  # gdsd / d1 reply format
    f"<answer>{SOLUTION}</answer>",  # compact format
    "<answer>1234 3412\n2143 4321</answer>",  # separators are dropped: only digits count
])
def test_full_solution_scores_one(text):
    assert total(text) == 1.0


def test_one_wrong_empty_cell_costs_one_eighth():
    wrong = SOLUTION[0] + "4" + SOLUTION[2:]  # cell 1 is empty in the puzzle
    assert total(f"<answer>{wrong}</answer>") == 7 / 8


def test_given_cells_do_not_count():
    wrong_given = "9" + SOLUTION[1:]  # cell 0 is given: the official score ignores it
    assert total(f"<answer>{wrong_given}</answer>") == 1.0


def test_short_answer_is_padded_and_long_answer_truncated():
    assert total("<answer>1234</answer>") == 2 / 8  # cells 1 and 2 right, the rest padded with '0'
    assert total(f"<answer>{SOLUTION}99999</answer>") == 1.0


def test_no_answer_or_empty_answer_scores_zero():
    assert total(SOLUTION) == 0.0
    assert total("<answer></answer>") == 0.0
    assert total(f"<answer>{SOLUTION}") == 0.0  # no closing tag: no complete answer
    assert extract_sudoku_answer("no tags") is None


def test_last_answer_counts():
    assert total(f"<answer>{SOLUTION}</answer> <answer>0000000000000000</answer>") == 0.0
    assert total(f"<answer>0000000000000000</answer> <answer>{SOLUTION}</answer>") == 1.0


def test_reference_replies_of_every_format_score_one():
    for prompt_format in ("gdsd", "d1", "compact"):
        for item in sudoku_task.make_prompts(prompt_format=prompt_format, split="train", num=20, seed=3):
            assert sudoku_reward(item.meta, item.answer).total == 1.0, (prompt_format, item.answer)


def test_matches_slow_cell_by_cell_reference():
    items = sudoku_task.make_prompts(prompt_format="compact", split="train", num=30, seed=5)
    for k, item in enumerate(items):
        # a deterministic mix of right and wrong digits
        guess = "".join(str((int(c) + (i * k) % 3) % 4 + 1) for i, c in enumerate(item.meta["solution"]))
        puzzle, solution = item.meta["puzzle"], item.meta["solution"]
        right = 0
        empty = 0
        for cell in range(16):
            if puzzle[cell] == "0":
                empty += 1
                right += guess[cell] == solution[cell]
        assert sudoku_reward(item.meta, f"<answer>{guess}</answer>").total == pytest.approx(right / empty)


def test_bad_meta_is_named():
    with pytest.raises(MetaError, match="puzzle"):
        sudoku_reward({"solution": SOLUTION}, "<answer>1</answer>")
    with pytest.raises(MetaError, match="16 characters"):
        sudoku_reward({"puzzle": "123", "solution": SOLUTION}, "<answer>1</answer>")


def test_non_ascii_digits_fill_cells_but_never_match():
    """Decision (rewards/README.md): str.isdigit as officially; a fullwidth or Arabic-Indic digit takes its cell but
    is not the ASCII solution digit, so the solution written in them scores 0."""
    fullwidth = "".join(chr(ord("０") + int(c)) for c in SOLUTION)
    assert extract_sudoku_answer(f"<answer>{fullwidth}</answer>") == fullwidth
    assert total(f"<answer>{fullwidth}</answer>") == 0.0
    mixed = SOLUTION[:2] + "\u0663" + SOLUTION[3:]  # cell 2 (empty in the puzzle) in Arabic-Indic
    assert total(f"<answer>{mixed}</answer>") == 7 / 8


def test_answer_span_matches_the_official_regex():
    """Independent reference: re.findall(r"<answer>(.*?)</answer>", DOTALL)[-1] on random tag soup."""
    import random
    import re

    from rewards.verifiers.text import last_answer

    pattern = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
    pieces = ["<answer>", "</answer>", "<answer", "answer>", "1", "\n", " "]
    rng = random.Random(0)
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 10)))
        matches = pattern.findall(text)
        assert last_answer(text) == (matches[-1].strip() if matches else None), repr(text)
