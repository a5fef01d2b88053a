"""deploy/metrics.py without Ray gauges: Prometheus names and tags, timestamps in metrics.jsonl, the wandb backend
(offline), the Grafana dashboard's queries, and `--print-config`. (The gauges themselves, scraped from a real Ray
node's Prometheus endpoint, are checked in test_job_submit.py.)"""
from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from common.config import MetricsConfig, RunConfig
from deploy.config_doc import reference
from deploy.metrics import Metrics, flatten, gauge_spec

REPO = Path(__file__).resolve().parents[2]
RECORD = {"reward": {"mean": 0.5, "sudoku": 0.5}, "reward_errors": 0, "zero_variance_groups": 1,
          "rollout": {"actor0/tokens_per_s": 100.0, "actor1/tokens_per_s": 120.0}, "staleness": {"max": 1},
          "bytes": {"batches": 1000}, "fleet": {"reissued_chunks": 1, "dead_nodes": 1},
          "time": {"rollout": 1.0, "update": 0.5, "sync_weights": 0.1},
          "learner": {"seconds": 0.4, "clamp_frac": [0.0, 0.25], "k2": [1e-6, 2e-6], "teacher_gap_max": 1e-3},
          "version": 3}


def documented() -> dict[str, set[str]]:
    """`ray_gdsd_*` metric -> tag keys, from the table in deploy/README.md ("Prometheus metrics")."""
    text = (REPO / "deploy" / "README.md").read_text()
    rows = re.findall(r"^\| `(ray_gdsd_[a-z0-9_]+)` \| ([^|]*) \|", text, flags=re.M)
    return {name: set(re.findall(r"`(\w+)`", tags)) for name, tags in rows}


def test_names_carry_units_and_tags_not_indices():
    names = {key: gauge_spec(key) for key in flatten(RECORD)}
    assert names["rollout/actor1/tokens_per_s"] == ("gdsd_rollout_tokens_per_second", {"actor": "1"})
    assert names["time/sync_weights"] == ("gdsd_time_sync_weights_seconds", {})
    assert names["learner/clamp_frac/first"] == ("gdsd_learner_clamp_frac", {"iteration": "first"})
    assert names["learner/clamp_frac"] == ("gdsd_learner_clamp_frac", {"iteration": "last"})
    assert names["bytes/batches"] == ("gdsd_batches_bytes", {})
    assert not any(re.search(r"actor\d", name) for name, _ in names.values())
    # every name the step record produces is documented, with the tags it carries
    docs = documented()
    for name, tags in names.values():
        assert f"ray_{name}" in docs, f"ray_{name} missing from deploy/README.md"
        assert docs[f"ray_{name}"] == {"run", *tags}, name


def test_grafana_dashboard_queries_documented_metrics():
    dash = json.loads((REPO / "deploy" / "grafana" / "gdsd_dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"ray_gdsd_[a-z0-9_]+", e)}
    used |= {f"ray_gdsd_eval_{m}" for e in exprs for m in re.findall(r"ray_gdsd_eval_\(([^)]*)\)", e)
             for m in m.split("|")}
    used.discard("ray_gdsd_eval_")
    docs = documented()
    assert used and used <= set(docs), used - set(docs)
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("reward", "accuracy", "clamp", "teacher gap", "k2", "throughput", "staleness", "weight sync"):
        assert topic in titles, topic


def test_jsonl_records_have_timestamps_and_tensorboard_can_be_off(tmp_path):
    metrics = Metrics(tmp_path, MetricsConfig(tensorboard=False), ray_gauges=False)
    before = time.time()
    metrics.log(1, RECORD)
    metrics.close()
    (record,) = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert before <= record["timestamp"] <= time.time() and record["step"] == 1 and record["reward"]["mean"] == 0.5
    assert not (tmp_path / "tensorboard").exists()


def test_wandb_offline(tmp_path):
    pytest.importorskip("wandb")  # the `dev` extra installs it
    metrics = Metrics(tmp_path, MetricsConfig(wandb=True, wandb_mode="offline", run_name="t"), ray_gauges=False,
                      config={"seed": 0})
    metrics.log(1, RECORD)
    metrics.log(2, RECORD)
    metrics.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb")), list((tmp_path / "wandb").iterdir())


def test_print_config_lists_every_key(capsys):
    from deploy import job

    assert job.main(["--print-config", "steps=7"]) == 0
    out = capsys.readouterr().out
    keys = [row.key for row in reference() if not row.section]
    assert len(keys) > 60
    for key in keys:
        assert re.search(rf"^{re.escape(key)} = ", out, flags=re.M), key
    assert re.search(r"^steps = 1  \(here: 7\)  # training steps", out, flags=re.M)
    assert "algorithm.eps = 0.0004  # clamp of the log-ratio" in out
    assert set(RunConfig.model_fields) <= {k.split(".")[0] for k in keys}


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
    assert {k: v for k, v in lines[1].items() if k != "timestamp"} == {"step": 2, "reward": {"mean": 0.75},
                                                                    "learner": {"loss": [0.5, 0.25]}}  # nested
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


def test_reward_service_sandbox_metrics_are_named_and_documented():
    """rewards/service/metrics.py's sandbox keys (issue 23 added orphans and cpu_seconds_*): each maps to a documented
    name."""
    docs = documented()
    cpu = "gdsd_reward_service_sandbox_cpu_seconds"
    expected = {"reward_service/sandbox/orphans": ("gdsd_reward_service_sandbox_orphans", {}),
                "reward_service/sandbox/cpu_seconds_total": (cpu, {"stat": "total"}),
                "reward_service/sandbox/cpu_seconds_max": (cpu, {"stat": "max"}),
                "reward_service/sandbox/timeout": ("gdsd_reward_service_sandbox_outcomes", {"outcome": "timeout"})}
    for key, (name, tags) in expected.items():
        assert gauge_spec(key) == (name, tags), key
        assert docs[f"ray_{name}"] == {"run", *tags}, name
