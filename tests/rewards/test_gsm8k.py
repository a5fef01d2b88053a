"""GSM8K-xml rewards: the five official functions on hand-worked replies (values worked out by hand below)."""
from __future__ import annotations

import random
import re
import time

import pytest

from rewards.verifiers.gsm8k import count_xml, soft_format_ok, strict_format_ok
from rewards.service.registry import DEFAULT_REWARD_FUNCTIONS, RewardServiceConfig, Scorer

META = {"answer": "72"}
PERFECT = "<reasoning>\n48 + 24 = 72\n</reasoning>\n<answer>\n72\n</answer>\n"


def parts(text: str) -> dict[str, float]:
    return Scorer().score("gsm8k", META, text).parts


def test_perfect_reply_scores_every_part():
    # GDSD xmlcount (issue 13 point 5): four tags x 0.125, minus 0.001 per char after "\n<answer>\n" ("72\n</answer>\n":
    # 13 chars), one char ("\n") after "\n</answer>" (minus 1: 0) -> 0.487
    assert parts(PERFECT) == {"xmlcount": pytest.approx(0.487), "soft_format": 0.5, "strict_format": 0.5,
                              "int_answer": 0.5, "correctness": 2.0}
    assert Scorer().score("gsm8k", META, PERFECT).total == pytest.approx(3.987)


def test_d1_xmlcount_stays_selectable():
    # d1 charges only what follows "\n</answer>\n": nothing in a perfect reply -> 0.5
    config = RewardServiceConfig(reward_functions={**DEFAULT_REWARD_FUNCTIONS,
                                                   "gsm8k": ["xmlcount_d1", "correctness"]})
    assert Scorer(config).score("gsm8k", META, PERFECT).parts == {"xmlcount_d1": 0.5, "correctness": 2.0}


def test_trailing_text_costs_a_thousandth_per_char_and_breaks_strict_format():
    got = parts(PERFECT.rstrip("\n") + "\nabc")
    # after "\n<answer>\n": "72\n</answer>\nabc" (16 chars): -0.016; "\n</answer>" by "\nabc" (4 chars, minus 1): -0.003
    assert got["xmlcount"] == pytest.approx(0.5 - 0.019)
    assert count_xml(PERFECT.rstrip("\n") + "\nabc", variant="d1") == pytest.approx(0.5 - 0.006)
    assert got["strict_format"] == 0.0 and got["soft_format"] == 0.5  # soft is re.match: unanchored at the end
    assert got["correctness"] == 2.0


def test_compact_reply_gets_only_answer_parts():
    assert parts("<answer>72</answer>") == {"xmlcount": 0.0, "soft_format": 0.0, "strict_format": 0.0,
                                            "int_answer": 0.5, "correctness": 2.0}


def test_multiline_reasoning_passes_strict_format():
    text = "<reasoning>\nline one\nline two\n</reasoning>\n<answer>\n72\n</answer>\n"
    assert parts(text)["strict_format"] == 0.5


def test_soft_format_allows_whitespace_between_blocks_and_no_newlines():
    got = parts("<reasoning>r</reasoning>  \n <answer>72</answer>")
    assert got["soft_format"] == 0.5 and got["strict_format"] == 0.0 and got["xmlcount"] == 0.0


@pytest.mark.parametrize("answer, int_part, correct", [("72", 0.5, 2.0), ("72.0", 0.0, 0.0), ("-72", 0.0, 0.0),
                                                       ("73", 0.5, 0.0), ("seventy-two", 0.0, 0.0)])
def test_int_and_correctness(answer, int_part, correct):
    got = parts(f"<reasoning>\nr\n</reasoning>\n<answer>\n{answer}\n</answer>\n")
    assert (got["int_answer"], got["correctness"]) == (int_part, correct)


def test_official_quirk_a_bare_reply_is_its_own_answer():
    # extract_xml_answer splits on tags that are absent, so a bare "72" is the extracted answer (as in d1).
    assert parts("72")["correctness"] == 2.0


def test_duplicate_tags_lose_xml_points():
    doubled = PERFECT + PERFECT
    assert parts(doubled)["xmlcount"] == 0.0


def test_format_checks_decide_the_official_regexes():
    """Independent reference: the official patterns (re.match, DOTALL) on random tag soup."""
    soft = re.compile(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", re.DOTALL)
    strict = re.compile(r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n$", re.DOTALL)
    pieces = ["<reasoning>", "</reasoning>", "<answer>", "</answer>", "\n", " ", "x", "\t", "\u2003", "5"]
    rng = random.Random(0)
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 9)))
        if rng.random() < 0.5:
            text = "<reasoning>" + ("\n" if rng.random() < 0.7 else "") + text
        assert soft_format_ok(text) == bool(soft.match(text)), repr(text)
        assert strict_format_ok(text) == bool(strict.match(text)), repr(text)


def test_extraction_is_linear_on_unclosed_tags():
    """Issue 14 class 5: the official regexes take seconds at 128 KB and minutes at 1 MB on replies like these.
    The bound is loose on purpose (a shared, loaded machine): quadratic behaviour would miss it by orders."""
    scorer = Scorer(RewardServiceConfig(max_reply_chars=1 << 21))
    for text in ["<reasoning>" + "</reasoning>" * 80_000, "<answer>" * 130_000, "<reasoning>\n" * 80_000]:
        start = time.monotonic()
        for task, meta in (("gsm8k", META), ("sudoku", {"puzzle": "0" * 16, "solution": "1" * 16}),
                           ("countdown", {"numbers": [1, 2, 3], "target": 6})):
            scorer.score(task, meta, text)
        assert time.monotonic() - start < 10.0


def test_non_ascii_digits_are_format_only():
    """Decision (rewards/README.md): str.isdigit as officially, so Arabic-Indic digits earn int_answer, never
    correctness (string comparison with the ASCII reference)."""
    got = parts("<reasoning>\nr\n</reasoning>\n<answer>\n\u0667\u0662\n</answer>\n")
    assert got["int_answer"] == 0.5 and got["correctness"] == 0.0
