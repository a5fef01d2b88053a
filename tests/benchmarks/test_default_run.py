"""benchmarks/default_run.py: a finished run is read back (not run again) into the gain and its standard errors."""
import json
import math

from benchmarks.default_run import run_one, table


def test_a_finished_run_is_reused_and_summarised(tmp_path):
    run_dir = tmp_path / "avx2-s1"
    run_dir.mkdir()
    evals = {"before (step 0)": {"n": 512, "accuracy": 0.16, "accuracy_se": 0.016},
             "after (step 24)": {"n": 512, "accuracy": 0.31, "accuracy_se": 0.020}}
    (run_dir / "eval.json").write_text(json.dumps(evals))
    records = [{"step": 0, "timestamp": 0.0, "eval": evals["before (step 0)"]},
               {"step": 1, "timestamp": 10.0, "busy": {"actor0/generate": 6.0, "actor0/score": 1.0,
                                                        "actor0/teacher": 2.0, "learner": 8.0}}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run_dir / "timing.json").write_text(json.dumps({"rc": 0, "wall_s": 400.0, "load_start": 0.5, "load_end": 2.0}))
    row = run_one("no/such/config.yaml", 1, "avx2", tmp_path, [])  # a fresh run would fail on this config
    assert row["ok"] and row["wall_s"] == 400.0 and row["n"] == 512
    assert abs(row["gain"] - 0.15) < 1e-12
    assert abs(row["gain_se"] - 0.15 / math.sqrt(0.016 ** 2 + 0.020 ** 2)) < 1e-9
    assert row["busy"]["learner"] == 0.8
    text = table([row])
    assert "| avx2 | 1 | 512 | 0.160 ± 0.016 | 0.310 ± 0.020 | +15.0 | 5.9 | 400 | 90 %, 80 % |" in text


def test_a_failed_run_is_a_row_not_an_exception(tmp_path):
    row = run_one("no/such/config.yaml", 0, "default", tmp_path, [])
    assert not row["ok"] and row["rc"] == 2
    assert "failed (rc 2" in table([row])
