"""Evaluation harness pieces without Ray: the official greedy sampler settings, metrics, the paper's test sets."""
from pathlib import Path

import pytest

from common.config import load_config
from common.tasks import countdown, sudoku
from deploy.evaluate import eval_prompts, eval_sampler, markdown_table, summarize

DATA = Path(__file__).resolve().parents[2] / "data"  # shipped with the project (data/README.md)


def test_official_eval_sampler_defaults():
    cfg = load_config(None, ["sampler.gen_length=256", "sampler.block_length=32", "sampler.steps=64"])
    s = eval_sampler(cfg)
    assert (s.gen_length, s.steps, s.block_length, s.temperature) == (256, 128, 32, 0.0)  # steps = gen_len / 2
    s = eval_sampler(cfg, cfg.eval.model_copy(update={"gen_length": 64, "steps": 64, "block_length": 64}))
    assert (s.gen_length, s.steps, s.block_length) == (64, 64, 64)


def test_summarize_sudoku_and_countdown():
    rows = [{"reward": 1.0, "parts": {"sudoku": 1.0}, "error": None},
            {"reward": 0.5, "parts": {"sudoku": 0.5}, "error": None},
            {"reward": 0.0, "parts": {}, "error": "bad_input: x"}]
    s = summarize(rows, "sudoku")
    assert s["n"] == 3 and s["errors"] == 1
    assert s["cell_accuracy"] == pytest.approx(0.5) and s["solved"] == pytest.approx(1 / 3)
    c = summarize([{"reward": 1.0, "parts": {}, "error": None}, {"reward": 0.1, "parts": {}, "error": None}],
                  "countdown")
    assert c["accuracy"] == 0.5
    assert "| run | 3 |" in markdown_table({"run": s})


def test_held_out_prompts_come_from_the_test_split():
    cfg = load_config(None, ["eval.num_prompts=20"])
    items = eval_prompts(cfg)
    assert len(items) == 20
    assert all(sudoku.in_test_split(it.meta["puzzle"]) for it in items)


def test_paper_test_sets_load():
    cfg = load_config(None, ["task.name=countdown", f"task.test_path={DATA / 'countdown_cd3_test.jsonl'}",
                             "eval.num_prompts=0"])
    items = eval_prompts(cfg)
    assert len(items) == 256 and all(len(it.meta["numbers"]) == 3 for it in items)
    cfg = load_config(None, [f"task.test_path={DATA / '4x4_test_sudoku.csv'}", "eval.num_prompts=10"])
    assert len(eval_prompts(cfg)) == 10


def test_bad_countdown_row_is_named(tmp_path):
    path = tmp_path / "cd.jsonl"
    path.write_text('{"input": "1,2,3", "output": "6"}\n{"input": "1,2"}\n')
    with pytest.raises(ValueError, match=r"cd.jsonl:2"):
        countdown.load_jsonl(str(path), "compact")


def test_gdsd_protocol_end_to_end_on_the_tiny_model(tiny_model_dir, tmp_path):
    """`python -m deploy.evaluate --protocol gdsd MODEL_DIR TASK` on the tiny model: the official item draw, greedy
    sampling, whole-completion decode, the official parser and the table row (a few items, short completions)."""
    import json
    import subprocess
    import sys

    out = tmp_path / "sudoku.json"
    proc = subprocess.run([sys.executable, "-m", "deploy.evaluate", "--protocol", "gdsd", tiny_model_dir, "sudoku",
                           "--limit", "3", "--gen-lengths", "16,32", "--prompt-format", "compact", "--batch-size", "2",
                           "--device", "cpu", "--out", str(out)], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| sudoku | " in proc.stdout and "| 16 | 8 | 16 | 3 | cell_accuracy |" in proc.stdout
    results = json.loads(out.read_text())
    assert [(r["gen_length"], r["steps"], r["block_length"], r["n"]) for r in results] == [(16, 8, 16, 3), (32, 16, 32, 3)]
    for r in results:
        assert r["total"] == 3 * 8 and 0 <= r["correct"] <= r["total"]  # 8 empty cells per puzzle, micro-averaged
        assert r["value"] == r["correct"] / r["total"] and len(r["generations"]) == 3


def test_gdsd_protocol_countdown_in_process_and_rejects_tasks_without_one(tiny_model_dir):
    from deploy.evaluate_gdsd import evaluate_protocol, table

    cfg = load_config(None, ["task.name=countdown", "task.prompt_format=compact"])
    results = evaluate_protocol(cfg, tiny_model_dir, "countdown", limit=2, gen_lengths=[8])
    assert results[0]["n"] == 2 and results[0]["total"] == 2 and results[0]["metric"] == "accuracy"
    assert "| countdown |" in table(results)
    with pytest.raises(SystemExit, match="lm-eval"):
        evaluate_protocol(load_config(None, ["task.name=gsm8k"]), tiny_model_dir, "gsm8k", limit=1)
