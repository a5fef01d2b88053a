"""deploy/metrics.py: the run's one metrics sink (JSONL + TensorBoard; Ray gauges are exercised by test_job_submit)."""
from __future__ import annotations

import json
import math

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from deploy.metrics import Metrics, flatten


def test_flatten_nests_with_slashes_and_keeps_first_and_last_of_lists():
    values = {"reward": {"mean": 0.5, "parts": {"sudoku": 1}}, "loss": [3.0, 2.0, 1.0], "ok": True,
              "name": "gdsd", "empty": [], "mixed": [1, "a"], "version": 4}
    assert flatten(values) == {"reward/mean": 0.5, "reward/parts/sudoku": 1.0, "loss/first": 3.0, "loss": 1.0,
                               "version": 4.0}  # booleans, strings, empty and non-numeric lists are not scalars


def test_log_writes_every_record_to_jsonl_and_finite_scalars_to_tensorboard(tmp_path):
    metrics = Metrics(tmp_path, ray_gauges=False)
    first = metrics.log(1, {"reward": {"mean": 0.25}, "learner": {"loss": [2.0, 1.0]}, "gap": math.nan})
    metrics.log(2, {"reward": {"mean": 0.75}, "learner": {"loss": [0.5, 0.25]}})
    metrics.close()
    assert first["reward/mean"] == 0.25 and first["learner/loss/first"] == 2.0 and math.isnan(first["gap"])
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]
    assert lines[1] == {"step": 2, "reward": {"mean": 0.75}, "learner": {"loss": [0.5, 0.25]}}  # nested, as logged
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"reward/mean", "learner/loss", "learner/loss/first"} <= set(events.Tags()["scalars"])
    assert "gap" not in events.Tags()["scalars"]  # NaN is kept in the JSONL only
    assert [(e.step, e.value) for e in events.Scalars("learner/loss")] == [(1, 1.0), (2, 0.25)]


def test_a_second_sink_appends_to_the_same_file(tmp_path):
    for step in (1, 2):  # a resumed run opens the sink again
        sink = Metrics(tmp_path, ray_gauges=False)
        sink.log(step, {"x": step})
        sink.close()
    assert [json.loads(line)["x"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
