"""GSM8K-xml rewards: the five official functions on hand-worked replies (values worked out by hand below)."""
from __future__ import annotations

import pytest

from rewards.registry import Scorer

META = {"answer": "72"}
PERFECT = "<reasoning>\n48 + 24 = 72\n</reasoning>\n<answer>\n72\n</answer>\n"


def parts(text: str) -> dict[str, float]:
    return Scorer().score("gsm8k", META, text).parts


def test_perfect_reply_scores_every_part():
    # xmlcount: four tags x 0.125, nothing after "\n</answer>\n", one char ("\n") after "\n</answer>" -> 0.5
    assert parts(PERFECT) == {"xmlcount": 0.5, "soft_format": 0.5, "strict_format": 0.5, "int_answer": 0.5,
                              "correctness": 2.0}
    assert Scorer().score("gsm8k", META, PERFECT).total == 4.0


def test_trailing_text_costs_a_thousandth_per_char_and_breaks_strict_format():
    got = parts(PERFECT.rstrip("\n") + "\nabc")
    # "\n</answer>\n" is followed by "abc" (3 chars): -0.003; "\n</answer>" by "\nabc" (4 chars, minus 1): -0.003
    assert got["xmlcount"] == pytest.approx(0.5 - 0.006)
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
