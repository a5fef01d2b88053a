"""The paper recipe's task side against the official GDSD code: prompts for a concrete row, the official evaluation's
parsers and metric, the item draw, and the dataset-backed tasks from local fixtures in the real formats."""
import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from common.config import ConfigError, load_config
from common.messages import PromptItem
from common import arith
from common.tasks import TASKS, countdown, get_task, gsm8k, make_prompts, math_task, sudoku

DATA = Path(__file__).resolve().parents[2] / "data"
REASONING = "\nRespond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>\n"


# ---- prompts (gdsd/data_utils.py for training, eval/data_utils.py for evaluation) ----

def test_gdsd_countdown_prompts_match_the_official_text():
    train, prefill, _ = countdown.format_prompt([44, 19, 35], 98, "gdsd")
    assert prefill == "" and train == (
        REASONING + "\nUsing only the numbers [44, 19, 35], create an arithmetic expression that evaluates to exactly "
        "98. Use every number exactly once. Use +, -, *, and / as needed. Put only the final expression inside "
        "<answer></answer> tags.")
    test, prefill, _ = countdown.format_prompt([44, 19, 35], 98, "gdsd", evaluation=True)
    assert prefill == "<reasoning>" and test == (
        REASONING + "\nUsing only the numbers [44, 19, 35], create an arithmetic expression that evaluates to exactly "
        "98. You must use all numbers from the list, and each number must be used exactly once. You may use the "
        "operations +, -, *, and / as needed. After reasoning, provide only your final expression inside "
        "<answer></answer> tags without including an equals sign or the target number. For example, if the numbers "
        "are [2, 3, 4] and the target is 5, a valid answer is: <answer>\n2*4-3\n</answer>")


def test_gdsd_sudoku_prompts_match_the_official_text():
    train, prefill, _ = sudoku.format_prompt("0024001010402401", "gdsd")
    assert prefill == "" and train.startswith(
        "\nPlease solve the following 4x4 Sudoku puzzle. The puzzle is provided as a 16-character\nstring reading "
        "left-to-right, top-to-bottom, where '0' represents empty cells.\n\nRules:\n- Fill empty cells with digits "
        "1-4.\n")
    assert train.endswith("<answer>\n[16-character solution string with no spaces or separators]\n</answer>\n"
                          "\n\nNow solve this Sudoku puzzle: 0024001010402401\n")
    assert "Example" not in train and "Important" not in train
    test, prefill, _ = sudoku.format_prompt("0024001010402401", "gdsd", evaluation=True)
    assert prefill == "<reasoning>"
    assert "**Example:**\nPuzzle: 0401002010030310\nThis puzzle grid looks like this:\n0 4 | 0 1\n0 0 | 2 0\n" in test
    assert "Solution: 2431312412434312\n" in test and "**Important:** Your solution must be a COMPLETE" in test
    assert test.endswith("</answer>\n\n\nSolve the following Sudoku puzzle: 0024001010402401\n")


def test_d1_prompt_and_unknown_formats_are_rejected_by_name():
    prompt, prefill, _ = sudoku.format_prompt("0024001010402401", "d1")
    assert prompt.endswith("</answer>\n\nSolve the following Sudoku puzzle: 0024001010402401\n") and prefill == ""
    assert "Fill empty cells with digits 1-4\n" in prompt  # d1's rules have no full stops
    with pytest.raises(ValueError, match="task.prompt_format: unknown format 'official'; choose one of"):
        sudoku.format_prompt("0024001010402401", "official")
    with pytest.raises(ConfigError, match="task.prompt_format.*'gdsd', 'd1' or 'compact'"):
        load_config(None, ["task.prompt_format=official"])


def test_generated_test_split_uses_the_evaluation_prompt():
    train = make_prompts(task="countdown", prompt_format="gdsd", split="train", num=2, seed=0)
    test = make_prompts(task="countdown", prompt_format="gdsd", split="test", num=2, seed=0)
    assert all(it.prefill == "" for it in train) and all(it.prefill == "<reasoning>" for it in test)


# ---- the official evaluation's parsers (eval/parse_and_get_acc.py) ----

def cd_item(numbers, target):
    return countdown.item(numbers, target, "", "gdsd", evaluation=True)


@pytest.mark.parametrize("text,expected", [
    ("<answer>3**2*1</answer>", 1),  # ** passes the official whitelist and eval
    ("<answer>\n(3+2)*1 = 5\n</answer>", 0),  # wrong target after the "=target" cut
    ("<answer>\n3*2+1=7\n</answer>", 0),
    ("<answer>\n3*2+1-0\n</answer>", 0),  # an extra number
    ("so \\boxed{3**2*1} and <answer>1+2+3</answer>", 1),  # \boxed wins over <answer>
    ("<answer>9//1*1</answer>", 0),  # the numbers are 9, 1, 1, not 3, 2, 1
    ("<answer>(3*2)/(1-1)</answer>", 0),  # division by zero: no result
    ("3**2*1", 1),  # neither box nor tags: the whole text
])
def test_official_countdown_parser(text, expected):
    assert countdown.official_correct(text, cd_item([3, 2, 1], 9)) == (expected, 1)


def test_official_countdown_strips_equals_target_and_latex():
    assert countdown.official_expression("<answer>\n44 + 19 + 35 = 98\n</answer>") == "44 + 19 + 35"
    assert countdown.official_correct("<answer>44 + 19 + 35 = 98</answer>", cd_item([44, 19, 35], 98)) == (1, 1)
    assert countdown.official_correct("\\boxed{(6 \\times 4) \\div 2}", cd_item([6, 4, 2], 12)) == (1, 1)


def test_safe_arithmetic_follows_python_and_stays_bounded():
    for expr in ["3**2*1", "7//2", "-3+2*(4-1)", "1/3", "2**-2", "10 - 2.5"]:
        assert arith.evaluate(expr) == eval(expr)  # noqa: S307 (fixed literals: the reference semantics)
    start = time.perf_counter()
    assert arith.evaluate("9**9**9") == float("inf") and arith.evaluate("__import__('os')") == float("inf")
    assert arith.evaluate("05+1") == float("inf")  # a SyntaxError for eval too
    assert time.perf_counter() - start < 1.0


def su_item(puzzle="0024001010402401", solution="3124241313422431"):
    return sudoku.item_from_row(puzzle, solution, "gdsd", evaluation=True)


@pytest.mark.parametrize("text,correct", [
    ("...</reasoning>\n<answer>\n3124241313422431\n</answer>", 8),
    ("<answer>\n```\n3124 2413\n1342 2431\n```\n</answer>", 8),  # first pattern: a fenced block, spaces removed
    ("<answer>\n3124\n</answer>", 2),  # padded with '0' to 16: only cells 0..3 can count (0 and 1 are empty)
    ("the grid is 3124241313422431 done", 8),  # last resort: any 16-digit word
    ("<answer>\n3124241313422431<|endoftext|><|endoftext|>", 8),  # stops at the EOS marker
    ("no answer at all", 0),
])
def test_official_sudoku_cascade(text, correct):
    assert sudoku.official_cells(text, su_item()) == (correct, 8)


def test_sudoku_metric_is_a_micro_average():
    """correct cells / empty cells over all items (not a mean of per-puzzle fractions)."""
    scores = [(8, 8), (0, 8), (3, 8)]
    assert sum(c for c, _ in scores) / sum(t for _, t in scores) == pytest.approx(11 / 24)


def test_official_item_draw_is_numpy_seed_42():
    from deploy.evaluate_gdsd import official_items

    state = np.random.get_state()
    try:  # the official script: init_seed(42), then the dataset's np.random.choice on the global generator
        np.random.seed(42)
        expected = np.random.choice(500, 256, replace=False)
    finally:
        np.random.set_state(state)
    items = official_items(sudoku.TASK, test_path=None, prompt_format="gdsd")
    all_items = sudoku.load_csv(str(DATA / "4x4_test_sudoku.csv"), "gdsd")
    assert [it.uid for it in items] == [all_items[i].uid for i in expected]
    cd = official_items(countdown.TASK, test_path=None, prompt_format="gdsd")
    assert len(cd) == 256 and len({it.uid for it in cd}) == len({it.uid for it in countdown.load_jsonl(
        str(DATA / "countdown_cd3_test.jsonl"), "gdsd")})  # all Countdown rows, permuted


def test_shipped_test_sets_are_the_task_defaults():
    assert Path(get_task("sudoku").default_test_path) == DATA / "4x4_test_sudoku.csv"
    assert Path(get_task("countdown").default_test_path) == DATA / "countdown_cd3_test.jsonl"
    assert len(countdown.load_jsonl(get_task("countdown").default_test_path, "gdsd")) == 256
    assert get_task("sudoku").official.gen_lengths == (128, 256)
    assert get_task("countdown").official.gen_lengths == (128,)
    assert {name for name, t in TASKS.items() if t.official} == {"sudoku", "countdown"}


def test_task_summaries_own_their_metric():
    rows = [{"reward": 2.0, "parts": {"correctness": 2.0, "math_correctness": 2.0, "code_tests": 1.0}, "error": None},
            {"reward": 0.5, "parts": {"correctness": 0.0, "math_correctness": 0.0, "code_tests": 0.5}, "error": "x"}]
    for name in ("gsm8k", "math", "code"):
        out = get_task(name).summarize(rows)
        assert out[get_task(name).metric] == 0.5 and out["errors"] == 1 and out["n"] == 2


# ---- dataset-backed tasks, from local files in the hub formats ----

def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_gsm8k_from_a_local_file_with_hash_answers(tmp_path, caplog):
    src = write_jsonl(tmp_path / "gsm8k_train.jsonl", [
        {"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
        {"question": "No answer line here", "answer": "just text"},
        {"question": "Half of 10?", "answer": "10 / 2 = 5\n#### 5"}])
    with caplog.at_level(logging.WARNING):
        items = make_prompts(task="gsm8k", prompt_format="gdsd", split="train", num=5, seed=0, source=src)
    assert len(items) == 5 and {it.meta["answer"] for it in items} == {"7", "5"}
    assert "skipped 1 of 3 rows" in caplog.text and "row 1" in caplog.text
    first = next(it for it in items if it.meta["answer"] == "7")
    assert first.prompt == REASONING + "\n\nTom has 3 apples and buys 4 more. How many?"
    assert gsm8k.extract_hash_answer("a\n#### 1,234 ") == "1,234"


def test_math_from_a_local_parquet_with_boxed_answers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "math_test.parquet"
    pq.write_table(pa.table({"problem": ["What is $1+1$?", "Simplify $\\frac{2}{4}$.", "Bad"],
                             "solution": ["It is $\\boxed{2}$.", "We get $\\boxed{\\frac{1}{2}}$.", "no box"],
                             "unique_id": ["a", "b", "c"]}), path)
    items = get_task("math").load_test(str(path), "gdsd")
    assert [it.meta["answer"] for it in items] == ["2", "\\frac{1}{2}"]
    assert items[0].prompt.endswith("You are a math expert. Solve the problem step by step. Wrap the final answer in "
                                    "a \\boxed{}.\n\nWhat is $1+1$?")
    assert math_task.HUB_NAME == "ankner/math-500"


def test_code_rows_need_tests_and_carry_the_system_prompt(tmp_path):
    src = write_jsonl(tmp_path / "code.jsonl", [
        {"question": "Write add(a, b).", "test_cases": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]},
        {"question": "No tests", "test_cases": []}])
    items = make_prompts(task="code", prompt_format="gdsd", split="train", num=1, seed=0, source=src)
    assert items[0].prompt == "Write add(a, b).\nTest cases: assert add(1, 2) == 3"
    assert items[0].system.startswith("You are a helpful assistant.") and len(items[0].meta["tests"]) == 2
    with pytest.raises(ValueError, match="task.source"):
        make_prompts(task="code", prompt_format="gdsd", split="train", num=1, seed=0)


def test_all_bad_rows_is_an_error_naming_them(tmp_path):
    src = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "no hash"}])
    with pytest.raises(ValueError, match=r"no usable row.*row 0"):
        gsm8k.load(src, "train", "gdsd")


def test_prefill_and_system_reach_the_encoded_prompt(denoiser):
    from common.tokenize import encode_prompts

    ids, lengths = encode_prompts(denoiser.tokenizer, ["ab", "c"], prefills=["<r>", ""])
    assert denoiser.tokenizer.decode(ids[0, -int(lengths[0]):].tolist()) == "ab<r>"
    with pytest.raises(ValueError, match="chat_template"):
        encode_prompts(denoiser.tokenizer, ["ab"], systems=["sys"])
    assert PromptItem(uid="x", task="t", prompt="p").prefill == ""
