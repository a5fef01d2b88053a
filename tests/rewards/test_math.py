"""MATH rewards: boxed extraction, format, math-verify equivalence, outer timeout, and use from non-main threads."""
from __future__ import annotations

import threading
import time

import pytest

from rewards.verifiers.math_answer import MathCheckError, MathChecker, last_boxed, math_correctness, math_format
from rewards.service.registry import Scorer

# sympy evaluates 9^(9^9) (370 million digits) exactly: seconds to minutes, far past the timeouts used below.
SLOW_GOLD, SLOW_PRED = "9^{9^{9}}", "9^{9^{8}}"


@pytest.fixture(scope="module")
def checker():
    checker = MathChecker(processes=2, timeout_s=20.0)
    yield checker
    checker.close()


def score(checker: MathChecker, gold: str, text: str) -> float:
    return math_correctness({"answer": gold}, text, checker=checker).total + math_format({}, text).total


@pytest.mark.parametrize("text, expected", [
    ("x\\boxed{\\frac{1}{2}}y", "\\frac{1}{2}"),
    ("\\boxed{1} then \\boxed{\\sqrt{\\frac{a}{b}}}", "\\sqrt{\\frac{a}{b}}"),
    ("$\\boxed 5$", "5"),
    ("\\fbox{7}", "7"),
    ("\\boxed{unbalanced", None),
    ("no box", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("<answer>\\boxed{3}</answer>", 1.0),  # 0.5 * (1 + 1)
    ("<answer>3</answer>", 0.75),  # 0.5 * (1 + 0.5)
    ("\\boxed{3}", 0.5),  # 0.5 * (0 + 1): no <answer>, the box is looked for in the whole reply
    ("3", 0.25),  # 0.5 * (0 + 0.5)
])
def test_format(text, expected):
    assert math_format({}, text).total == expected


def test_equivalent_forms_score_full(checker):
    assert score(checker, "\\frac{1}{2}", "<reasoning>r</reasoning><answer>\\boxed{0.5}</answer>") == 3.0
    assert score(checker, "\\frac{\\sqrt{2}}{2}", "<answer>\\boxed{\\frac{1}{\\sqrt{2}}}</answer>") == 3.0
    assert score(checker, "72", "<answer>so \\boxed{72}</answer>") == 3.0


def test_wrong_or_misplaced_answers(checker):
    assert score(checker, "72", "<answer>\\boxed{73}</answer>") == 1.0  # format only
    # the box is outside <answer>: the raw answer text "3" is compared (official), 2.0 + 0.75
    assert score(checker, "3", "\\boxed{3} <answer>3</answer>") == 2.75
    assert score(checker, "4", "\\boxed{4} <answer>3</answer>") == 0.75
    assert score(checker, "3", "<answer>\\boxed{3} then \\boxed{4}</answer>") == 1.0  # the last box counts
    assert score(checker, "4", "<answer>\\boxed{3} then \\boxed{4}</answer>") == 3.0


def test_scores_correctly_off_the_main_thread(checker):
    """math-verify's signal.alarm raises off the main thread; through the child processes it must still score."""
    results: dict[int, float] = {}

    def work(i: int) -> None:
        assert threading.current_thread() is not threading.main_thread()
        results[i] = math_correctness({"answer": f"{i}/2"}, f"<answer>\\boxed{{\\frac{{{i}}}{{2}}}}</answer>",
                                      checker=checker).total

    threads = [threading.Thread(target=work, args=(i,)) for i in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: 2.0 for i in range(1, 7)}


def test_outer_timeout_kills_the_child_and_the_next_call_works():
    checker = MathChecker(processes=1, timeout_s=0.3, inner_timeout_s=60)
    try:
        assert checker.equivalent("1", "1")  # starts the child (import time is not part of the request timeout)
        start = time.monotonic()
        with pytest.raises(MathCheckError, match="timed out"):
            checker.equivalent(SLOW_GOLD, SLOW_PRED)
        assert time.monotonic() - start < 5
        assert checker.pool.restarts == 1
        assert checker.equivalent("2", "2") and not checker.equivalent("2", "3")
    finally:
        checker.close()


def test_registry_reports_math_timeout_as_error_row():
    from rewards.service.registry import RewardServiceConfig

    scorer = Scorer(RewardServiceConfig(math_timeout_s=0.3))
    try:
        assert scorer.score("math", {"answer": "1"}, "<answer>\\boxed{1}</answer>").total == 3.0
        result = scorer.score("math", {"answer": SLOW_GOLD}, f"<answer>\\boxed{{{SLOW_PRED}}}</answer>")
        assert result.total == 0.0 and result.error is not None and result.error.startswith("math_check:")
    finally:
        scorer.close()


@pytest.mark.parametrize("text, expected", [
    ("<answer>\n5\n</answer>", 2.0),  # official: no box -> the raw <answer> text, stripped, is compared
    ("<answer>\n6\n</answer>", 0.0),
    ("5", 2.0),  # official: no <answer> -> the whole reply is the answer text
    ("<answer>\\boxed{5</answer>", 0.0),  # official: unbalanced box -> None, never equal
    ("<reasoning>the answer is 5</reasoning><answer>I think it is five, 5</answer>", 0.0),  # prose is no number
])
def test_correctness_on_the_raw_answer_text_as_officially(checker, text, expected):
    """Issue 13 point 6, GDSD `correctness_reward_func_math_xml`: `<answer>\\n5\\n</answer>` against 5 scores 2.0."""
    assert math_correctness({"answer": "5"}, text, checker=checker).total == expected


def test_first_match_rejects_a_partly_parsable_box(checker):
    """Issue 14 class 4: with any_match, math-verify falls back to an inner sub-expression of a box that fails to
    parse as a whole: nested \\frac{1}{...} around 2, then +100 (= 100.5) matched the reference 1/2."""
    attack = "\\frac{1}{" * 201 + "2" + "}" * 201 + "+100"
    assert math_correctness({"answer": "\\frac{1}{2}"}, f"<answer>\\boxed{{{attack}}}</answer>",
                            checker=checker).total == 0.0
    assert math_correctness({"answer": "\\frac{1}{2}"}, "<answer>\\boxed{\\frac{2}{4}}</answer>",
                            checker=checker).total == 2.0


def test_non_ascii_digits(checker):
    """Decision (rewards/README.md): no normalisation of our own; math-verify decides. Arabic-Indic 5 is not 5."""
    assert math_correctness({"answer": "5"}, "<answer>\\boxed{\u0665}</answer>", checker=checker).total == 0.0
