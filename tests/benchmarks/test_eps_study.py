"""benchmarks/eps_study.py (issue 24): every arm is a valid config on both tasks, the token arm really changes the
clamp scope, gains are paired by seed, and the pre-registered decision rule reads as written in docs/results.md."""
from __future__ import annotations

import os

import pytest

from benchmarks.eps_study import ARMS, COMMON, EPS_BEGIN, EPS_END, decide, paired, run_seconds, time_line, write_section
from benchmarks.mechanism import TASKS
from common.config import load_config


@pytest.mark.parametrize("task", ["countdown", "sudoku"])
def test_every_arm_is_a_valid_config(task):
    config, task_overrides = TASKS[task]
    cfgs = {name: load_config(config, [*overrides, *COMMON, *task_overrides]) for name, (_, overrides) in ARMS.items()}
    assert cfgs["gdsd_tok"].algorithm.eps_scope == "token" and cfgs["gdsd_seq"].algorithm.eps_scope == "sequence"
    assert cfgs["gdsd_tok"].algorithm.eps == cfgs["gdsd_seq"].algorithm.eps == 4e-4
    assert cfgs["gdsd_seq1e-1"].algorithm.eps == 0.1
    assert {c.eval.num_prompts for c in cfgs.values()} == {128}


def row(task, name, seed, before, after, ok=True):
    return {"task": task, "name": name, "seed": seed, "ok": ok, "before": before, "after": after,
            "frac_key": "clamp_frac", "by_j": {"clamp_frac": [0.0, 1.0]}, "kl_max": 0.1, "dips": 0,
            "rewards": [before, after]}


def test_gains_are_paired_by_seed_and_failed_runs_left_out():
    rows = [row("countdown", "gdsd_seq", 0, 0.1, 0.2), row("countdown", "gdsd_seq", 1, 0.1, 0.15),
            row("countdown", "gdsd_tok", 1, 0.1, 0.35), row("countdown", "gdsd_tok", 0, 0.1, 0.3),
            row("countdown", "gdsd_tok", 2, 0.1, 0.5), row("countdown", "gdsd_seq", 2, 0.1, 0.0, ok=False)]
    assert paired(rows, "countdown", "gdsd_tok") == pytest.approx([0.2, 0.25, 0.4])
    assert paired(rows, "countdown", "gdsd_tok", "gdsd_seq") == pytest.approx([0.1, 0.2])  # seed 2 unpaired


@pytest.mark.parametrize("countdown, sudoku, verdict", [
    ([0.10, 0.12, 0.08, 0.11, 0.09], [0.0, 0.01, -0.01, 0.02, -0.02], "helps"),
    ([0.10, -0.10, 0.05, -0.05, 0.02], [0.0, 0.01, -0.01, 0.02, -0.02], "does not help"),  # not 2 SE on Countdown
    ([0.10, 0.12, 0.08, 0.11, 0.09], [-0.10, -0.12, -0.08, -0.11, -0.09], "does not help"),  # hurts Sudoku
    ([-0.10, -0.12, -0.08, -0.11, -0.09], [0.0, 0.01, -0.01, 0.02, -0.02], "does not help"),  # 2 SE, wrong sign
    ([0.1], [0.0, 0.1], "undecided"),
])
def test_decision_rule(countdown, sudoku, verdict):
    assert decide(countdown, sudoku)[0] == verdict


def test_section_replaces_only_itself(tmp_path):
    rows = [row(t, n, s, 0.1, 0.1 + 0.01 * s + (0.1 if n == "gdsd_tok" else 0)) for t in ("countdown", "sudoku")
            for n in ARMS for s in range(3)]
    (tmp_path / "results.md").write_text("# results\n\nhand-written\n")
    write_section(tmp_path, rows, command="python -m benchmarks.eps_study", wall=60, steps=20)
    write_section(tmp_path, rows, command="again", wall=60, steps=20)
    text = (tmp_path / "results.md").read_text()
    assert text.startswith("# results\n\nhand-written") and text.count(EPS_BEGIN) == text.count(EPS_END) == 1
    assert "token-ε helps" in text and "`again`" in text and (tmp_path / "eps_study.json").is_file()
    assert "](eps_study.png)" in text and (tmp_path / "eps_study.png").stat().st_size > 10_000


def test_study_time_is_summed_from_the_run_directories(tmp_path):
    run = tmp_path / "gdsd_seq-s0"
    run.mkdir()
    assert run_seconds(run) is None  # not started
    (run / "config.yaml").write_text("x")
    (run / "eval.json").write_text("{}")
    os.utime(run / "config.yaml", (1000, 1000))
    os.utime(run / "eval.json", (1200, 1200))
    assert run_seconds(run) == 200
    rows = [{"run_seconds": 200.0, "reused": True}, {"run_seconds": 160.0, "reused": False},
            {"run_seconds": None, "reused": False}]
    line = time_line(rows, wall=90, jobs=2, machine="Xeon (AVX2, 2 cores)")
    assert "2 runs of 160-200 s" in line and "on Xeon (AVX2, 2 cores)" in line
    assert "0.1 h of run time" in line and "2 runs trained, 1 reused" in line
