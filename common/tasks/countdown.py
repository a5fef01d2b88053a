"""Countdown with 3 numbers: reach the target using each number once with + - * /; prompts, test set, metric.

Train and test are disjoint by construction: an instance (sorted numbers, target) is in the test split iff
crc32 % 8 == 0.
"""
from __future__ import annotations

import itertools
import json
import re
import zlib
from fractions import Fraction
from typing import Any

import numpy as np

from common.messages import PromptItem
from common import arith
from common.tasks.base import (DATA_DIR, REASONING_SYSTEM_PROMPT, OfficialEval, Task, base_summary, check_format,
                               check_split, last_boxed_only_string, mean_of, remove_boxed)

OPS = "+-*/"


def _apply(a: Fraction, op: str, b: Fraction) -> Fraction | None:
    if op == "/":
        return None if b == 0 else a / b
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def solve(numbers: list[int], target: int) -> str | None:
    """One expression over all numbers that equals target (exact rationals), or None."""
    for a, b, c in itertools.permutations(numbers):
        fa, fb, fc = Fraction(a), Fraction(b), Fraction(c)
        for o1, o2 in itertools.product(OPS, repeat=2):
            left = _apply(fa, o1, fb)  # (a o1 b) o2 c
            if left is not None and _apply(left, o2, fc) == target:
                return f"({a}{o1}{b}){o2}{c}"
            right = _apply(fb, o2, fc)  # a o1 (b o2 c)
            if right is not None and _apply(fa, o1, right) == target:
                return f"{a}{o1}({b}{o2}{c})"
    return None


def in_test_split(numbers: list[int], target: int) -> bool:
    return zlib.crc32(f"{sorted(numbers)}->{target}".encode()) % 8 == 0


def make_instance(rng: np.random.Generator, max_number: int = 100) -> tuple[list[int], int, str]:
    """Random numbers and a reachable positive integer target <= max_number, with one solving expression."""
    while True:
        numbers = [int(x) for x in rng.integers(1, max_number + 1, size=3)]
        a, b, c = (Fraction(x) for x in numbers)
        o1, o2 = (OPS[i] for i in rng.integers(4, size=2))
        first = _apply(a, o1, b)
        value = None if first is None else _apply(first, o2, c)
        if value is not None and value.denominator == 1 and 1 <= value <= max_number:
            target = int(value)
            return numbers, target, solve(numbers, target) or f"({numbers[0]}{o1}{numbers[1]}){o2}{numbers[2]}"


def format_prompt(numbers: list[int], target: int, prompt_format: str, *,
                  evaluation: bool = False) -> tuple[str, str, str]:
    """(prompt, prefill, reply template); see sudoku.format_prompt."""
    check_format(prompt_format)
    reply = "<reasoning>\n</reasoning>\n<answer>\n{}\n</answer>"
    if prompt_format == "gdsd" and evaluation:  # eval/data_utils.py CTDDataset, add_reasoning=True
        return (f"{REASONING_SYSTEM_PROMPT}\nUsing only the numbers {numbers}, create an arithmetic expression that "
                f"evaluates to exactly {target}. You must use all numbers from the list, and each number must be used "
                "exactly once. You may use the operations +, -, *, and / as needed. After reasoning, provide only your "
                "final expression inside <answer></answer> tags without including an equals sign or the target "
                "number. For example, if the numbers are [2, 3, 4] and the target is 5, a valid answer is: "
                "<answer>\n2*4-3\n</answer>", "<reasoning>", reply)
    if prompt_format == "gdsd":  # gdsd/data_utils.py get_countdown_questions
        return (f"{REASONING_SYSTEM_PROMPT}\nUsing only the numbers {numbers}, create an arithmetic expression that "
                f"evaluates to exactly {target}. Use every number exactly once. Use +, -, *, and / as needed. Put only "
                "the final expression inside <answer></answer> tags.", "", reply)
    if prompt_format == "d1":
        return (f"Using the numbers {numbers}, create an equation that equals {target}. You can use basic arithmetic "
                "operations (+, -, *, /) and each number can only be used once. Show your work in <reasoning> "
                "</reasoning> tags. And return the final answer in <answer> </answer> tags, for example "
                f"<answer> (1 + 2) / 3 </answer>.\n{REASONING_SYSTEM_PROMPT}", "", reply)
    return f"countdown {numbers[0]},{numbers[1]},{numbers[2]} -> {target}\n", "", "<answer>{}</answer>"


def item(numbers: list[int], target: int, solution: str, prompt_format: str, *, evaluation: bool = False) -> PromptItem:
    prompt, prefill, reply = format_prompt(numbers, target, prompt_format, evaluation=evaluation)
    return PromptItem(uid=f"countdown:{','.join(map(str, numbers))}->{target}", task="countdown", prompt=prompt,
                      prefill=prefill, answer=reply.format(solution), meta={"numbers": numbers, "target": target})


def make_prompts(*, prompt_format: str, split: str, num: int, seed: int, source: str | None = None) -> list[PromptItem]:
    """Seeded generated instances (train and test disjoint by construction); `source` is not used (our generator)."""
    check_split(split)
    check_format(prompt_format)
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    items: list[PromptItem] = []
    while len(items) < num:
        numbers, target, solution = make_instance(rng)
        if in_test_split(numbers, target) == (split == "test"):
            items.append(item(numbers, target, solution, prompt_format, evaluation=split == "test"))
    return items


def load_jsonl(path: str, prompt_format: str) -> list[PromptItem]:
    """The paper's test set (`{"input": "a,b,c", "output": "target"}` rows); a malformed row raises naming its line."""
    items = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                numbers, target = [int(x) for x in row["input"].split(",")], int(row["output"])
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{lineno}: expected {{'input': 'a,b,c', 'output': 'n'}}: {err}") from None
            items.append(item(numbers, target, solve(numbers, target) or "", prompt_format, evaluation=True))
    return items


def official_expression(text: str) -> str:
    """The expression the official parser (eval/parse_and_get_acc.py parse_countdown_answers) reads: the last
    \\boxed{} if any, else the first <answer>...</answer>, else the whole text; LaTeX operators to Python; a trailing
    "=target" cut off."""
    equation = remove_boxed(last_boxed_only_string(text))
    if equation is None:
        match = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
        equation = match.group(1).strip() if match else text
    equation = equation.replace(r"\div", "/").replace(r"\times", "*").replace(r"\cdot", "*")
    match = re.search(r"([0-9+\-*/() ]+)=[0-9. ]+", equation)
    return match.group(1).strip() if match else equation


def official_correct(text: str, item: PromptItem) -> tuple[int, int]:
    """(1, 1) when the official parser counts the reply correct: the numbers in the expression are exactly the given
    ones and its value is within 1e-5 of the target (evaluated without eval, common/arith.py); else (0, 1)."""
    numbers, target = item.meta["numbers"], item.meta["target"]
    equation = official_expression(text)
    if sorted(int(n) for n in re.findall(r"\d+", equation)) != sorted(numbers):
        return 0, 1
    return int(abs(arith.evaluate(equation) - target) < 1e-5), 1


def summarize(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Training-reward view: the fraction of rows with a correct expression (reward 1.0)."""
    return {**base_summary(rows), "accuracy": mean_of(rows, lambda r: r["reward"] >= 1.0)}


TASK = Task(name="countdown", make_prompts=make_prompts, load_test=load_jsonl, summarize=summarize, metric="accuracy",
            default_test_path=str(DATA_DIR / "countdown_cd3_test.jsonl"),
            official=OfficialEval(num_items=256, gen_lengths=(128,), score=official_correct, metric="accuracy"))
