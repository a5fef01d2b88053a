"""The end-of-run report: standard errors, the gain in points and in standard errors, the plot file."""
import json
import math

import pytest

from deploy.report import report, standard_error, summary


def test_standard_error_and_gain():
    assert standard_error(0.2, 100) == pytest.approx(0.04)
    assert standard_error(0.0, 64) == 0.0
    evals = {"before (step 0)": {"n": 128, "reward": 0.1, "accuracy": 0.05},
             "after (step 30)": {"n": 128, "reward": 0.4, "accuracy": 0.30}}
    text = summary(evals, "accuracy")
    se_before, se_after = math.sqrt(0.05 * 0.95 / 128), math.sqrt(0.3 * 0.7 / 128)
    assert f"| after (step 30) | 128 | 0.300 | {se_after:.3f} |" in text
    se_diff = math.sqrt(se_before ** 2 + se_after ** 2)  # independent evaluations: variances add
    assert f"gain: +25.0 points = {0.25 / se_diff:.1f} standard errors of the difference" in text


def test_report_writes_the_plot_and_names_the_files(tmp_path):
    lines = []
    for step in range(1, 13):
        lines.append({"step": step, "reward": {"mean": 0.1 + 0.01 * step},
                      "learner": {"clamp_frac": [0.0, 0.9, 1.0], "grad_norm": [0.5, 0.4, 0.3]}})
    lines.insert(0, {"step": 0, "eval": {"n": 64, "accuracy": 0.05}})
    lines.append({"step": 12, "eval": {"n": 64, "accuracy": 0.25}})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (tmp_path / "eval.json").write_text(json.dumps({"before (step 0)": {"n": 64, "accuracy": 0.05},
                                                    "after (step 12)": {"n": 64, "accuracy": 0.25}}))
    text = report(tmp_path, "countdown")
    png = tmp_path / "training.png"
    assert png.is_file() and png.stat().st_size > 10_000
    assert f"plot:    {png}" in text and str(tmp_path / "metrics.jsonl") in text
    assert "gain: +20.0 points" in text


def test_metric_se_uses_the_per_item_values_and_the_report_prefers_it():
    from deploy.report import metric_se

    # Sudoku cell accuracy per item: 0.5, 0.75, 1.0, 0.25 (mean 0.625)
    rows = [{"reward": v, "parts": {"sudoku": v}, "error": None} for v in (0.5, 0.75, 1.0, 0.25)]
    mean = 0.625
    expected = math.sqrt(sum((v - mean) ** 2 for v in (0.5, 0.75, 1.0, 0.25)) / 3 / 4)
    assert metric_se(rows, "sudoku") == pytest.approx(expected)
    # far below the Bernoulli bound sqrt(p (1 - p) / n) for a fractional metric
    assert expected < math.sqrt(mean * (1 - mean) / 4)
    evals = {"before": {"n": 4, "cell_accuracy": 0.5, "cell_accuracy_se": 0.01},
             "after": {"n": 4, "cell_accuracy": 0.6, "cell_accuracy_se": 0.02}}
    assert f"gain: +10.0 points = {0.1 / math.sqrt(0.01 ** 2 + 0.02 ** 2):.1f} standard errors" in summary(
        evals, "cell_accuracy")


def test_metric_se_of_one_item_is_undefined():
    from deploy.report import metric_se

    assert metric_se([{"reward": 1.0, "parts": {}, "error": None}], "countdown") is None


def test_busy_shares_of_the_loop():
    from deploy.report import busy_line, busy_shares

    # a loop of 3 steps after the step-0 evaluation at t = 100; step 2 logged twice (resumed): the later one counts
    records = [{"step": 0, "timestamp": 100.0, "eval": {"n": 4}}]
    for step, t, gen, score, teacher, learner in ((1, 110.0, 4.0, 1.0, 3.0, 6.0), (2, 118.0, 9.0, 9.0, 9.0, 9.0),
                                                  (2, 120.0, 4.0, 1.0, 3.0, 7.0), (3, 130.0, 5.0, 1.0, 3.0, 8.0)):
        records.append({"step": step, "timestamp": t, "busy": {
            "actor0/generate": gen, "actor0/score": score, "actor0/teacher": teacher, "learner": learner}})
    wall, share = busy_shares(records)
    assert wall == 30.0
    assert share["actor0/generate"] == pytest.approx(13.0 / 30) and share["learner"] == pytest.approx(21.0 / 30)
    line = busy_line(records)
    assert line.startswith("busy share of the training loop's 30 s wall time: "
                           "actor0 83 % (generate 43 %, score 10 %, teacher 30 %)")
    assert line.endswith("learner 70 %")
    assert busy_shares([{"step": 1, "timestamp": 1.0}]) is None
