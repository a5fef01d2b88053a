"""GSM8K with GDSD's XML prompt (gdsd/data_utils.py get_gsm8k_questions_xml): openai/gsm8k "main", train / test.

The reference answer is the text after "####" in the dataset's `answer` (official `extract_hash_answer`); a row
without it is counted and skipped. The official GSM8K evaluation runs through lm-eval (math_eval/), so `official`
is None here.
"""
from __future__ import annotations

from typing import Any

from common.messages import PromptItem
from common.tasks import hf
from common.tasks.base import REASONING_SYSTEM_PROMPT, Task, base_summary, check_format, check_split, mean_of

HUB_NAME, HUB_CONFIG = "openai/gsm8k", "main"


def extract_hash_answer(text: str) -> str | None:
    """The official helper: what follows the first "####", stripped; None without one."""
    return text.split("####", 1)[1].strip() if "####" in text else None


def format_prompt(question: str, prompt_format: str) -> str:
    check_format(prompt_format)
    if prompt_format == "compact":
        return f"{question}\n"
    return f"{REASONING_SYSTEM_PROMPT}\n\n{question}"  # gdsd and d1 share this prompt


def row_item(index: int, row: dict[str, Any], prompt_format: str) -> PromptItem:
    question, solution = hf.field(row, "question"), hf.field(row, "answer")
    answer = extract_hash_answer(solution)
    if not answer:
        raise hf.BadRow("answer has no '#### <number>' line")
    reasoning = solution.split("####", 1)[0].strip()
    return PromptItem(uid=f"gsm8k:{index}", task="gsm8k", prompt=format_prompt(question, prompt_format),
                      answer=f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{answer}\n</answer>",
                      meta={"answer": answer})


def load(source: str | None, split: str, prompt_format: str) -> list[PromptItem]:
    check_split(split)
    check_format(prompt_format)
    source = source or HUB_NAME
    rows = hf.load_rows(source, split=split, config=HUB_CONFIG if source == HUB_NAME else None)
    return hf.to_items(rows, lambda i, r: row_item(i, r, prompt_format), source=source, split=split)


make_prompts, load_test = hf.prompt_functions(load)


def summarize(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Accuracy = the exact-match part scored its full 2.0."""
    return {**base_summary(rows), "accuracy": mean_of(rows, lambda r: r["parts"].get("correctness", 0.0) >= 2.0)}


TASK = Task(name="gsm8k", make_prompts=make_prompts, load_test=load_test, summarize=summarize, metric="accuracy")
