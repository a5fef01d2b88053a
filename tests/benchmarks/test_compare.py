"""benchmarks/compare.py reuses a finished run only when its saved config is the one it would run now, and reports
mean ± standard error over seeds."""
from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from benchmarks.compare import METHODS, finished, mean_se
from common.config import dump_config, load_config

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "sudoku_tiny.yaml")


def overrides(run_dir, method="gdsd", seed=0, steps=40):
    return [f"seed={seed}", f"steps={steps}", f"run_dir={run_dir}", *METHODS[method]]


def write_run(run_dir, data: dict, *, evaluated: bool = True) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    if evaluated:
        (run_dir / "eval.json").write_text(json.dumps({"after (step 40)": {"cell_accuracy": 0.5}}))


def test_reuses_only_a_finished_run_of_the_same_config(tmp_path):
    run_dir = tmp_path / "gdsd-s0"
    saved = dump_config(load_config(CONFIG, overrides(run_dir)))
    write_run(run_dir, saved)
    assert finished(run_dir, CONFIG, overrides(run_dir))
    assert not finished(run_dir, CONFIG, overrides(run_dir, seed=1))
    assert not finished(run_dir, CONFIG, overrides(run_dir, steps=41))
    assert not finished(run_dir, CONFIG, overrides(run_dir, method="espo"))
    assert not finished(run_dir, CONFIG, [*overrides(run_dir), "learner.lr=1e-4"])


def test_a_run_without_its_evaluation_is_not_finished(tmp_path):
    run_dir = tmp_path / "gdsd-s0"
    write_run(run_dir, dump_config(load_config(CONFIG, overrides(run_dir))), evaluated=False)
    assert not finished(run_dir, CONFIG, overrides(run_dir))
    assert not finished(tmp_path / "never-ran", CONFIG, overrides(tmp_path / "never-ran"))
    # a run stopped during training: eval.json holds only the evaluation before it
    (run_dir / "eval.json").write_text(json.dumps({"before (step 0)": {"cell_accuracy": 0.1}}))
    assert not finished(run_dir, CONFIG, overrides(run_dir))


def test_a_field_added_since_counts_at_its_default(tmp_path):
    run_dir = tmp_path / "gdsd-s0"
    saved = dump_config(load_config(CONFIG, overrides(run_dir)))
    del saved["pipeline"]["weight_sync"]  # an older run's config.yaml, written before the field existed
    write_run(run_dir, saved)
    assert finished(run_dir, CONFIG, overrides(run_dir))
    assert not finished(run_dir, CONFIG, [*overrides(run_dir), "pipeline.weight_sync=broadcast"])


def test_mean_and_standard_error():
    mean, se = mean_se([0.1, 0.2, 0.6])
    ref_sd = math.sqrt(sum((x - 0.3) ** 2 for x in (0.1, 0.2, 0.6)) / 2)  # sample standard deviation
    assert math.isclose(mean, 0.3) and math.isclose(se, ref_sd / math.sqrt(3))
    assert mean_se([0.4]) == (0.4, 0.0)


def test_report_lists_the_methods_compared_only(tmp_path):
    from benchmarks.compare import report

    run = {"method": "spg", "seed": 0, "ok": True, "rewards": [0.1, 0.2], "before": {"cell_accuracy": 0.5},
           "after": {"cell_accuracy": 0.6}}
    failed = {"method": "espo", "seed": 0, "ok": False}
    text = report([run, failed], tmp_path, command="c", metric="cell_accuracy", wall=60.0, task="sudoku")
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert [r.split(" | ")[0] for r in rows] == ["| espo", "| spg"]  # registry order; gdsd etc. were not run
    assert "0/1 failed" in rows[0] and "| 0.500 | 0.600 ± 0.000 | +0.100 ± 0.000 |" in rows[1]
