"""Countdown with 3 numbers: reach the target using each number once with + - * /.

Train and test are disjoint by construction: an instance (sorted numbers, target) is in the test split iff
crc32 % 8 == 0.
"""
from __future__ import annotations

import itertools
import json
import zlib
from fractions import Fraction

import numpy as np

from common.messages import PromptItem

OFFICIAL_SYSTEM_PROMPT = """
Respond in the following format:
<reasoning>
...
</reasoning>
<answer>
...
</answer>
"""
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


def format_prompt(numbers: list[int], target: int, prompt_format: str) -> tuple[str, str]:
    if prompt_format == "official":
        return (f"Using the numbers {numbers}, create an equation that equals {target}. You can use basic arithmetic "
                "operations (+, -, *, /) and each number can only be used once. Show your work in <reasoning> "
                "</reasoning> tags. And return the final answer in <answer> </answer> tags, for example "
                f"<answer> (1 + 2) / 3 </answer>.\n{OFFICIAL_SYSTEM_PROMPT}",
                "<reasoning>\n</reasoning>\n<answer>\n{}\n</answer>")
    if prompt_format == "compact":
        return f"countdown {numbers[0]},{numbers[1]},{numbers[2]} -> {target}\n", "<answer>{}</answer>"
    raise ValueError(f"task.prompt_format: unknown format {prompt_format!r}; choose 'official' or 'compact'")


def item(numbers: list[int], target: int, solution: str, prompt_format: str) -> PromptItem:
    prompt, reply = format_prompt(numbers, target, prompt_format)
    return PromptItem(uid=f"countdown:{','.join(map(str, numbers))}->{target}", task="countdown", prompt=prompt,
                      answer=reply.format(solution), meta={"numbers": numbers, "target": target})


def make_prompts(*, prompt_format: str, split: str, num: int, seed: int) -> list[PromptItem]:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    items = []
    while len(items) < num:
        numbers, target, solution = make_instance(rng)
        if in_test_split(numbers, target) == (split == "test"):
            items.append(item(numbers, target, solution, prompt_format))
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
            items.append(item(numbers, target, solve(numbers, target) or "", prompt_format))
    return items
