"""GSM8K-xml rewards: the five functions of the official recipe, summed by the registry (max 0.5+0.5+0.5+0.5+2.0).

Official definitions: GDSD `gdsd/rewards.py` (`gsm8k_xml`: `xmlcount_reward_func`, `soft_format_reward_func`,
`strict_format_reward_func`, `int_reward_func`, `correctness_reward_func`), adopted from d1 / Will Brown's GRPO demo.
One difference between the two: GDSD's `_count_xml` charges 0.001 per character after "\\n<answer>\\n" (so a perfect
reply with a 2-digit answer scores 0.487, not 0.5), d1's per character after "\\n</answer>\\n". `xmlcount` is GDSD's
(the default), `xmlcount_d1` is d1's (select it in `reward_functions`).
The answer is `extract_xml_answer`: the text after the last `<answer>` and before the next `</answer>`, stripped (so,
unlike the other tasks, a missing closing tag still yields an answer).
The official format checks are regexes (`re.match`, DOTALL); the functions here decide the same language with
`str.find`, in linear time (the regexes backtrack quadratically on replies with many unclosed tags).
meta: {"answer": "72"} (the reference after '####' in the GSM8K data, as a string).
"""
from __future__ import annotations

from common.messages import RewardResult
from rewards.verifiers.text import require, single


def extract_xml_answer(text: str) -> str:
    answer = text.split("<answer>")[-1]
    answer = answer.split("</answer>")[0]
    return answer.strip()


def count_xml(text: str, *, variant: str = "gdsd") -> float:
    """0.125 per well-placed tag; text after the answer costs 0.001 per character (GDSD counts from the opening
    "\\n<answer>\\n", d1 from "\\n</answer>\\n")."""
    count = 0.0
    if text.count("<reasoning>\n") == 1:
        count += 0.125
    if text.count("\n</reasoning>\n") == 1:
        count += 0.125
    if text.count("\n<answer>\n") == 1:
        count += 0.125
        after = "\n<answer>\n" if variant == "gdsd" else "\n</answer>\n"
        count -= len(text.split(after)[-1]) * 0.001
    if text.count("\n</answer>") == 1:
        count += 0.125
        count -= (len(text.split("\n</answer>")[-1]) - 1) * 0.001
    return count


def soft_format_ok(text: str) -> bool:
    """re.match(r"<reasoning>.*?</reasoning>\\s*<answer>.*?</answer>", text, re.DOTALL) is not None."""
    if not text.startswith("<reasoning>"):
        return False
    last_close = text.rfind("</answer>")
    position = len("<reasoning>")
    while True:
        end = text.find("</reasoning>", position)
        if end < 0:
            return False
        after = end + len("</reasoning>")
        skip = after
        while skip < len(text) and text[skip].isspace():
            skip += 1
        if text.startswith("<answer>", skip) and last_close >= skip + len("<answer>"):
            return True
        if skip > after:  # this whitespace run is exhausted; no later tag can start inside it
            position = skip
        else:
            position = after


def strict_format_ok(text: str) -> bool:
    """re.match(r"^<reasoning>\\n.*?\\n</reasoning>\\n<answer>\\n.*?\\n</answer>\\n$", text, re.DOTALL) is not None
    (`$` also matches before one final newline)."""
    head, middle, tail = "<reasoning>\n", "\n</reasoning>\n<answer>\n", "\n</answer>\n"
    if not text.startswith(head):
        return False
    ends = [len(text) - len(tail)]
    if text.endswith("\n"):
        ends.append(len(text) - 1 - len(tail))
    split = text.find(middle, len(head))
    return split >= 0 and any(q >= split + len(middle) and text.startswith(tail, q) for q in ends)


def xmlcount_reward(meta: dict, text: str) -> RewardResult:
    """GDSD's count (the default). Part name: 'xmlcount'."""
    return single("xmlcount", count_xml(text, variant="gdsd"))


def xmlcount_d1_reward(meta: dict, text: str) -> RewardResult:
    """d1's count. Part name: 'xmlcount_d1'."""
    return single("xmlcount_d1", count_xml(text, variant="d1"))


def soft_format_reward(meta: dict, text: str) -> RewardResult:
    return single("soft_format", 0.5 if soft_format_ok(text) else 0.0)


def strict_format_reward(meta: dict, text: str) -> RewardResult:
    return single("strict_format", 0.5 if strict_format_ok(text) else 0.0)


def int_reward(meta: dict, text: str) -> RewardResult:
    # str.isdigit, as in the official code: "72" scores, "-3" and "7.5" do not; non-ASCII digits ("٧٢") score
    # here too (format only: correctness compares strings, so they never match an ASCII reference).
    return single("int_answer", 0.5 if extract_xml_answer(text).isdigit() else 0.0)


def correctness_reward(meta: dict, text: str) -> RewardResult:
    reference = str(require(meta, "answer", "gsm8k")).strip()
    return single("correctness", 2.0 if extract_xml_answer(text) == reference else 0.0)
