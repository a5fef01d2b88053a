"""HumanEval in the real sandbox: all 164 canonical solutions pass, and `pass` bodies do not."""
from __future__ import annotations

import pytest

from rewards.humaneval import as_row, load_problems, score_all


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
