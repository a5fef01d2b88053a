"""benchmarks/mechanism.py: the study's per-run summary from a run's metrics.jsonl, and docs/results.md sections that
survive regenerating each other (compare.py keeps what is below its marker; the study replaces only its own part)."""
from __future__ import annotations

import json
import math

from benchmarks.compare import KEEP_FROM, kept_sections
from benchmarks.mechanism import ARMS, STUDY_BEGIN, STUDY_END, TASKS, dips, summarise, write_section
from common.config import load_config


def fake_run(run_dir, *, frac_key: str, mu: int, rewards: list[float], kl_key: str = "k2") -> dict:
    """A run directory's metrics.jsonl with one record per step (+ an evaluation record, which must be skipped)."""
    run_dir.mkdir(parents=True)
    with open(run_dir / "metrics.jsonl", "w") as f:
        f.write(json.dumps({"step": 0, "eval": {"cell_accuracy": 0.1}}) + "\n")
        for step, reward in enumerate(rewards, 1):
            learner = {frac_key: [0.0] + [1.0] * (mu - 1), "param_delta": [0.02 * 0.9**j for j in range(mu)],
                       "grad_norm": [0.1] * mu, kl_key: [0.5 * step] * mu}
            f.write(json.dumps({"step": step, "reward": {"mean": reward}, "zero_variance_groups": 1,
                                "learner": learner}) + "\n")
    return {"ok": True, "rewards": rewards, "before": {"cell_accuracy": 0.1},
            "after": {"cell_accuracy": 0.3, "cell_accuracy_se": 0.01}}


def test_summary_per_inner_iteration(tmp_path):
    result = fake_run(tmp_path / "r", frac_key="clamp_frac", mu=3, rewards=[0.0, 0.2, 0.2, 0.25])
    row = summarise(result, tmp_path / "r", "cell_accuracy")
    assert row["by_j"]["clamp_frac"] == [0.0, 1.0, 1.0]
    assert all(math.isclose(a, b) for a, b in zip(row["by_j"]["param_delta"], [0.02, 0.018, 0.0162]))
    assert math.isclose(row["moved_per_step"], 0.02 + 0.018 + 0.0162)
    assert row["kl_max"] == 2.0 and row["kl_key"] == "k2" and row["zero_variance_groups"] == 4
    assert not row["collapsed"] and (row["before"], row["after"]) == (0.1, 0.3)
    collapsed = summarise(fake_run(tmp_path / "c", frac_key="clip_frac", mu=2, rewards=[0.2, 0.0, 0.01, 0.0]),
                          tmp_path / "c", "cell_accuracy")
    assert collapsed["collapsed"] and collapsed["frac_key"] == "clip_frac"
    # a token-level loss (diffu_grpo) logs its per-token k3 as "kl", no k2: the study's table reads that instead
    token = summarise(fake_run(tmp_path / "t", frac_key="clip_frac", mu=2, rewards=[0.2, 0.3], kl_key="kl"),
                      tmp_path / "t", "cell_accuracy")
    assert token["kl_key"] == "kl" and token["kl_max"] == 1.0
    assert collapsed["dips"] == 3  # every step after the 0.2 is below half of it
    assert summarise({"ok": False, "log": "x"}, tmp_path / "missing", "cell_accuracy") == {"ok": False, "log": "x"}


def test_sections_survive_each_other(tmp_path):
    rows = []
    for i, name in enumerate(ARMS):
        res = fake_run(tmp_path / name, frac_key="clamp_frac" if "gdsd" in name else "clip_frac", mu=2,
                       rewards=[0.1, 0.2, 0.3])
        rows.append(summarise({**res, "task": "sudoku", "name": name, "lr": 5e-5, "seed": 0}, tmp_path / name,
                              "cell_accuracy"))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "results.md").write_text(f"# compare table\n\n{KEEP_FROM}\n\n## hand-written derivation\n")
    section = write_section(docs, rows, [], command="python -m benchmarks.mechanism", wall=60, steps=3)
    text = (docs / "results.md").read_text()
    assert text.startswith("# compare table") and "## hand-written derivation" in text and section in text
    assert all(label in section for label, _ in ARMS.values()) and (docs / "mechanism_sudoku.png").is_file()
    # a second study run replaces its section, keeping everything else
    write_section(docs, rows[:1], [], command="again", wall=1, steps=3)
    text = (docs / "results.md").read_text()
    assert text.count(STUDY_BEGIN) == 1 and text.count(STUDY_END) == 1 and "`again`" in text
    assert "## hand-written derivation" in text
    # compare.py rewrites the table above the marker and keeps the rest (study included)
    assert kept_sections(docs / "results.md").strip().startswith(KEEP_FROM) and "`again`" in kept_sections(
        docs / "results.md")
    assert kept_sections(tmp_path / "none.md") == ""


def test_arms_are_valid_configs():
    for task, (config, task_overrides) in TASKS.items():
        for name, (_, overrides) in ARMS.items():
            cfg = load_config(config, [*overrides, *task_overrides])
            assert cfg.algorithm.name == name.split("_")[0]
        assert load_config(config, ARMS["espo_mu8"][1]).algorithm.mu == 8
        assert load_config(config, ARMS["gdsd_eps1e-1"][1]).algorithm.eps == 0.1


def test_dips_count_relapses_below_half_the_best_so_far():
    assert dips([0.0, 0.2, 0.15, 0.09, 0.3, 0.16, 0.14]) == 2  # 0.09 < 0.1 and 0.14 < 0.15; 0.15, 0.16 are not
    assert dips([0.1, 0.2, 0.3]) == 0 and dips([0.5]) == 0 and dips([0.0, 0.0]) == 0
