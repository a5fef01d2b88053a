from pathlib import Path

import pytest

from common.tasks import countdown, make_prompts, sudoku

DATA = Path(__file__).resolve().parents[2] / "data"  # shipped with the project (data/README.md)


def test_sudoku_puzzles_unique_and_seeded():
    items = make_prompts(task="sudoku", prompt_format="compact", split="train", num=50, seed=3)
    assert items == make_prompts(task="sudoku", prompt_format="compact", split="train", num=50, seed=3)
    assert len(sudoku.all_solutions()) == 288
    for it in items:
        puzzle, solution = it.meta["puzzle"], it.meta["solution"]
        assert puzzle.count("0") == sudoku.NUM_EMPTY and sudoku.is_solution(solution)
        assert sudoku.count_solutions(puzzle) == 1
        assert all(p in ("0", s) for p, s in zip(puzzle, solution))
        assert it.answer == f"<answer>{solution}</answer>" and puzzle in it.prompt


@pytest.mark.parametrize("task", ["sudoku", "countdown"])
def test_train_and_test_disjoint(task):
    train = {it.uid for it in make_prompts(task=task, prompt_format="compact", split="train", num=300, seed=0)}
    test = {it.uid for it in make_prompts(task=task, prompt_format="compact", split="test", num=60, seed=0)}
    assert not train & test


def test_countdown_instances_solvable():
    for it in make_prompts(task="countdown", prompt_format="d1", split="train", num=40, seed=1):
        numbers, target = it.meta["numbers"], it.meta["target"]
        expr = it.answer.split("<answer>\n")[1].split("\n</answer>")[0]
        assert sorted(int(t) for t in expr.replace("(", " ").replace(")", " ").replace("+", " ").replace(
            "-", " ").replace("*", " ").replace("/", " ").split()) == sorted(numbers)
        assert countdown.solve(numbers, target) is not None
        assert "<reasoning>" in it.prompt


def test_unknown_task_and_format_named():
    with pytest.raises(ValueError, match="task.name"):
        make_prompts(task="chess", prompt_format="compact", split="train", num=1, seed=0)
    with pytest.raises(ValueError, match="task.prompt_format"):
        make_prompts(task="sudoku", prompt_format="fancy", split="train", num=1, seed=0)


def test_paper_sudoku_test_set_loads():
    items = sudoku.load_csv(str(DATA / "4x4_test_sudoku.csv"), "gdsd")
    assert len(items) == 500 and all(sudoku.count_solutions(it.meta["puzzle"]) >= 1 for it in items)


def test_bad_csv_row_is_named(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("Puzzle,Solution\n3102200002100320,3142243142131324\n123,456\n")
    with pytest.raises(ValueError, match=r"bad.csv:3"):
        sudoku.load_csv(str(path), "compact")
