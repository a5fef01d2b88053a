"""GSM8K-xml rewards: the five functions of the official recipe, summed by the registry (max 0.5+0.5+0.5+0.5+2.0).

Official definitions: d1 `diffu-grpo/reward_func.py` (adopted from Will Brown's GRPO demo), unchanged in GDSD:
`xmlcount_reward_func` (`count_xml`), `soft_format_reward_func`, `strict_format_reward_func`, `int_reward_func`,
`correctness_reward_func`. The answer is `extract_xml_answer`: the text after the last `<answer>` and before the next
`</answer>`, stripped (so, unlike the other tasks, a missing closing tag still yields an answer).
meta: {"answer": "72"} (the reference after '####' in the GSM8K data, as a string).
"""
from __future__ import annotations

import re

from common.messages import RewardResult
from rewards.common_text import require, single

# Both patterns are matched with re.DOTALL, as in d1 (Will Brown's original strict pattern had no DOTALL).
STRICT_FORMAT_RE = re.compile(r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n$", re.DOTALL)
SOFT_FORMAT_RE = re.compile(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", re.DOTALL)


def extract_xml_answer(text: str) -> str:
    answer = text.split("<answer>")[-1]
    answer = answer.split("</answer>")[0]
    return answer.strip()


def count_xml(text: str) -> float:
    """0.125 per well-placed tag; text after the closing answer tag costs 0.001 per character."""
    count = 0.0
    if text.count("<reasoning>\n") == 1:
        count += 0.125
    if text.count("\n</reasoning>\n") == 1:
        count += 0.125
    if text.count("\n<answer>\n") == 1:
        count += 0.125
        count -= len(text.split("\n</answer>\n")[-1]) * 0.001
    if text.count("\n</answer>") == 1:
        count += 0.125
        count -= (len(text.split("\n</answer>")[-1]) - 1) * 0.001
    return count


def xmlcount_reward(meta: dict, text: str) -> RewardResult:
    return single("xmlcount", count_xml(text))


def soft_format_reward(meta: dict, text: str) -> RewardResult:
    return single("soft_format", 0.5 if SOFT_FORMAT_RE.match(text) else 0.0)


def strict_format_reward(meta: dict, text: str) -> RewardResult:
    return single("strict_format", 0.5 if STRICT_FORMAT_RE.match(text) else 0.0)


def int_reward(meta: dict, text: str) -> RewardResult:
    # str.isdigit, as in the official code: "72" scores, "-3" and "7.5" do not.
    return single("int_answer", 0.5 if extract_xml_answer(text).isdigit() else 0.0)


def correctness_reward(meta: dict, text: str) -> RewardResult:
    reference = str(require(meta, "answer", "gsm8k")).strip()
    return single("correctness", 2.0 if extract_xml_answer(text) == reference else 0.0)
