"""HumanEval in the real sandbox: all 164 canonical solutions pass, and `pass` bodies do not."""
from __future__ import annotations

import pytest

from rewards.verifiers.coding import code_tests
from benchmarks.humaneval import as_row, load_problems, score_all


@pytest.fixture(scope="module")
def problems() -> list[dict]:
    problems = load_problems()
    assert len(problems) == 164
    return problems


@pytest.mark.slow
def test_canonical_solutions_all_score_one(problems, sandbox):
    results, seconds = score_all([as_row(p, p["canonical_solution"]) for p in problems], sandbox, threads=2)
    failed = [p["task_id"] for p, r in zip(problems, results) if r.total != 1.0]
    assert failed == []
    print(f"\nHumanEval canonical: {len(problems) / seconds:.1f} programs/s on 2 threads")


@pytest.mark.slow
def test_pass_bodies_score_below_one(problems, sandbox):
    results, _ = score_all([as_row(p, "    pass\n") for p in problems], sandbox, threads=2)
    passing = [p["task_id"] for p, r in zip(problems, results) if r.total >= 1.0]
    assert passing == []


HELPER_PROBLEMS = ["HumanEval/10", "HumanEval/32", "HumanEval/38", "HumanEval/50"]


def test_canonical_solutions_of_problems_with_prompt_helpers_score_one(problems, sandbox):
    rows = [as_row(p, p["canonical_solution"]) for p in problems if p["task_id"] in HELPER_PROBLEMS]
    assert all("helpers" in meta for meta, _ in rows)
    results, _ = score_all(rows, sandbox, threads=1)
    assert [r.total for r in results] == [1.0] * len(HELPER_PROBLEMS)


@pytest.mark.parametrize("task_id, cheat", [
    # every root is a zero of a polynomial that is always 0
    ("HumanEval/32", "    return 0.0\n\ndef poly(xs, x):\n    return 0.0\n"),
    # decoding is trivial if encoding does nothing
    ("HumanEval/38", "    return s\n\ndef encode_cyclic(s):\n    return s\n"),
    ("HumanEval/50", "    return s\n\ndef encode_shift(s):\n    return s\n"),
])
def test_a_program_rewriting_a_prompt_helper_does_not_pass(problems, sandbox, task_id, cheat):
    """Issue 23, class 7: the tests call the prompt's helpers from the dataset's source, not the program's."""
    (problem,) = [p for p in problems if p["task_id"] == task_id]
    meta, reply = as_row(problem, cheat)
    assert code_tests(meta, reply, sandbox=sandbox).total == 0.0
