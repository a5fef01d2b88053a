"""One run per run directory (deploy/run_dir.py): refusals, --overwrite, the resume config diff, keep_last pruning,
and the original failure end to end (a second job into a used run_dir mixed its records into the first one's)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from common.config import ConfigError, load_config
from deploy.report import plot
from deploy.run_dir import OUTPUTS, claim, clear_outputs, prune_checkpoints, resolve_paths, resume_conflicts


CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "sudoku_tiny.yaml")


def cfg_for(run_dir, *overrides):
    return load_config(CONFIG, [f"run_dir={run_dir}", *overrides])


def write_run(run_dir, *overrides):
    """What a finished run leaves behind (names as the Trainer writes them)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg_for(run_dir, *overrides).model_dump(mode="json")))
    record = {"step": 1, "reward": {"mean": 0.25}, "learner": {"clamp_frac": [0.0, 1.0]}}
    (run_dir / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    (run_dir / "checkpoint" / "step000001").mkdir(parents=True)
    (run_dir / "checkpoint" / "latest").write_text("step000001")
    assert plot(run_dir, "cell_accuracy").parent == run_dir  # the report's training.png (the job's last write)


def test_empty_or_missing_run_dir_is_claimed_and_left_untouched(tmp_path):
    claim(cfg_for(tmp_path / "new"), resume=False, overwrite=False)
    (tmp_path / "empty").mkdir()
    claim(cfg_for(tmp_path / "empty"), resume=False, overwrite=False)
    assert not (tmp_path / "new").exists() and list((tmp_path / "empty").iterdir()) == []  # claim touches nothing
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="run_dir.*not a directory"):
        claim(cfg_for(tmp_path / "file"), resume=False, overwrite=False)


def test_used_run_dir_is_refused_without_a_flag(tmp_path):
    write_run(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"not empty.*--resume.*--overwrite"):
        claim(cfg_for(tmp_path / "run"), resume=False, overwrite=False)
    with pytest.raises(ConfigError, match="contradict"):
        claim(cfg_for(tmp_path / "run"), resume=True, overwrite=True)


def test_overwrite_clears_outputs_only_and_never_a_foreign_directory(tmp_path):
    run = tmp_path / "run"
    write_run(run)
    claim(cfg_for(run), resume=False, overwrite=True)
    clear_outputs(run)
    assert list(run.iterdir()) == []
    (run / "notes.txt").write_text("mine")
    (run / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match="notes.txt"):
        claim(cfg_for(run), resume=False, overwrite=True)
    assert (run / "notes.txt").read_text() == "mine"
    assert "notes.txt" not in OUTPUTS


def test_resume_config_diff_names_breaking_keys_and_allows_the_harmless(tmp_path):
    run = tmp_path / "run"
    write_run(run)
    # more steps, another evaluation / checkpoint cadence, more actors, another metrics backend: one run still
    claim(cfg_for(run, "steps=80", "eval.every=5", "checkpoint.keep_last=2", "rollout.num_actors=2",
                  "metrics.tensorboard=false", "pipeline.weight_sync=broadcast"), resume=True, overwrite=False)
    with pytest.raises(ConfigError) as err:
        claim(cfg_for(run, "algorithm.beta=0.01", "learner.lr=1e-4", "eval.every=5"), resume=True, overwrite=False)
    message = str(err.value)
    assert "algorithm.beta: 0.001 -> 0.01" in message and "learner.lr: 3e-05 -> 0.0001" in message
    assert "eval.every" not in message.split("(changeable")[0]


def test_resume_conflicts_is_exact_on_nested_dicts():
    base = load_config(CONFIG).model_dump(mode="json")
    changed = load_config(CONFIG, ["reward.service={format_weight: 0.5}",
                                                       "rollout.resources={rollout_node: 1}"]).model_dump(mode="json")
    assert resume_conflicts(base, changed) == ["reward.service: {} -> {'format_weight': 0.5}"]
    assert resume_conflicts(base, base) == []


def test_resume_without_saved_config_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match="config.yaml does not exist"):
        claim(cfg_for(tmp_path / "run"), resume=True, overwrite=False)


def test_relative_run_dir_is_refused_under_job_submit_only(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cfg = resolve_paths(cfg_for("runs/x"))
    assert cfg.run_dir == str(tmp_path / "runs" / "x") and cfg.cache_dir == str(tmp_path / "runs" / "cache")
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    with pytest.raises(ConfigError, match=r"'run_dir'.*relative.*ray job submit"):
        resolve_paths(cfg_for("runs/x"))
    assert resolve_paths(cfg_for(tmp_path / "abs")).run_dir == str(tmp_path / "abs")


def test_prune_keeps_the_newest_and_always_the_latest(tmp_path):
    ckpt = tmp_path / "checkpoint"
    for s in (1, 2, 3, 4, 10):
        (ckpt / f"step{s:06d}").mkdir(parents=True)
    (ckpt / "latest").write_text("step000010")
    assert prune_checkpoints(ckpt, 0) == []
    removed = prune_checkpoints(ckpt, 2)
    assert sorted(p.name for p in removed) == ["step000001", "step000002", "step000003"]
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest", "step000004", "step000010"]
    # `latest` pointing at an older step (a learner restart reloaded it) is never removed
    (ckpt / "step000011").mkdir()
    (ckpt / "latest").write_text("step000004")
    prune_checkpoints(ckpt, 1)
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest", "step000004", "step000011"]


@pytest.mark.slow
def test_second_job_into_a_used_run_dir_fails_clearly_and_keep_last_prunes(jobs, tmp_path):
    """The original failure: a second run without --resume appended its steps to metrics.jsonl (1..3 then 1..2) and
    moved `latest` back. Now the first run's directory is untouched and the second job says what to do."""
    run = tmp_path / "run"
    jobs.run("first", "steps=3", "checkpoint.every=1", "checkpoint.keep_last=2", "checkpoint.export_hf_each=true",
             f"run_dir={run}")
    ckpt = run / "checkpoint"
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest", "step000002", "step000003"]
    assert (ckpt / "latest").read_text() == "step000003"
    assert json.loads((ckpt / "step000003" / "hf" / "config.json").read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "learner" in r] == [1, 2, 3]
    assert all(isinstance(r["timestamp"], float) for r in records)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}

    start = time.monotonic()
    proc = jobs.start("second", "steps=2", f"run_dir={run}")
    assert proc.wait(timeout=120) == 2
    assert time.monotonic() - start < 30  # refused before Ray starts (the interpreter and imports only)
    log = jobs.log("second")
    assert f"run_dir {run} is not empty" in log and "--resume" in log and "--overwrite" in log
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # nothing written, nothing moved

    # --resume with a changed algorithm key: refused, naming it
    proc = jobs.start("changed", "steps=4", "algorithm.beta=0.5", f"run_dir={run}", resume=True)
    assert proc.wait(timeout=120) == 2
    assert "algorithm.beta: 0.001 -> 0.5" in jobs.log("changed")
