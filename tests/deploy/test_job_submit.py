"""The user path end to end: `ray start --head` on loopback, `ray job submit` of the training job, run directory and
dashboard metrics checked, head stopped.

The head gets its own ports and temp dir and every CLI call names its address explicitly, so the test does not care
whether the session's `ray_local` instance (or anyone else's Ray) is running on the box.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from deploy.head import (LOOPBACK, free_port, head_env, listeners, listening_sockets, ray_cli, session_pids, start_head,
                         stop_head)

pytestmark = pytest.mark.slow
STEPS = 2


def prometheus(port: int) -> dict[str, dict[str, str]]:
    """ray_gdsd_* series of the head node's metrics endpoint (what Prometheus scrapes): name -> labels of one sample
    per name, the one with the most labels."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        if line.startswith("ray_gdsd_"):
            name, _, rest = line.partition("{")
            labels = dict(re.findall(r'(\w+)="([^"]*)"', rest.rpartition("}")[0]))
            labels["__value__"] = line.rsplit(" ", 1)[1]
            if len(labels) >= len(out.get(name, {})):
                out[name] = labels
    return out


def documented_metrics() -> dict[str, set[str]]:
    """Metric -> tag keys from deploy/README.md's table, less the Countdown-only rows (this job runs Sudoku)."""
    text = (Path(__file__).resolve().parents[2] / "deploy" / "README.md").read_text()
    rows = re.findall(r"^\| `(ray_gdsd_[a-z0-9_]+)` \| ([^|]*) \| ([^|]*) \|", text, flags=re.M)
    return {name: set(re.findall(r"`(\w+)`", tags)) for name, tags, meaning in rows
            if not meaning.strip().startswith("Countdown")}


def wait_for(address: str, submission_id: str, seconds: float, ray_tmp: str | None = None) -> tuple[str, set]:
    deadline, status, sockets = time.monotonic() + seconds, "PENDING", set()
    while time.monotonic() < deadline:
        status = job_status(address, submission_id)
        if ray_tmp:
            sockets |= {(ip, name) for ip, _, _, name in listeners(ray_tmp)}
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(1.0)
    return status, sockets


def job_logs(address: str, submission_id: str) -> str:
    return subprocess.run([ray_cli(), "job", "logs", "--address", address, submission_id], env=head_env(),
                          capture_output=True, text=True, timeout=60).stdout


def job_status(address: str, submission_id: str) -> str:
    from ray.job_submission import JobSubmissionClient  # an HTTP client: no ray.init in this process

    return str(JobSubmissionClient(address).get_job_status(submission_id).value)


def test_ray_job_submit_on_loopback_head(ray_tmp, jobs, tmp_path):
    port, dashboard_port, metrics_port = free_port(), free_port(), free_port()
    address = f"http://127.0.0.1:{dashboard_port}"
    run_dir = tmp_path / "run"
    start_head(ray_tmp, port=port, dashboard_port=dashboard_port, metrics_port=metrics_port, num_cpus=8)

    # the dashboard (it hosts the job server) and every other socket of the head listen on loopback only
    sockets = listeners(ray_tmp)
    assert any(p == dashboard_port for _, p, _, _ in sockets), sockets
    assert all(ip in LOOPBACK for ip, *_ in sockets), sockets
    assert {ip for ip, p, _, _ in listening_sockets() if p == dashboard_port} == {"127.0.0.1"}  # `ss -ltnp` view

    def submit(submission_id: str, *overrides: str) -> None:
        cmd = [ray_cli(), "job", "submit", "--address", address, "--submission-id", submission_id, "--no-wait",
               "--working-dir", ".", "--runtime-env", "deploy/runtime_env.yaml", "--",
               "python", "-m", "deploy.job", "--config", "configs/sudoku_tiny.yaml", *jobs.tiny, f"steps={STEPS}",
               f"cache_dir={tmp_path / 'cache'}", *overrides]
        subprocess.run(cmd, cwd=jobs.repo, env=head_env(), check=True, capture_output=True, text=True, timeout=120)

    # a relative run_dir would land in Ray's copy of the working dir, where nobody finds it: refused at once
    relative_id = f"gdsd-test-rel-{uuid.uuid4().hex[:8]}"
    submit(relative_id, "run_dir=runs/relative")
    # more logical CPUs than the head has (8): the job used to sit at "GDSD: 0%" forever; now it fails, naming keys
    too_big_id = f"gdsd-test-cpu-{uuid.uuid4().hex[:8]}"
    submit(too_big_id, f"run_dir={tmp_path / 'too_big'}", "rollout.cpus_per_actor=7")
    status, _ = wait_for(address, relative_id, 120)
    logs = job_logs(address, relative_id)
    assert status == "FAILED", f"{status}\n{logs[-3000:]}"
    assert "config key 'run_dir': 'runs/relative' is relative" in logs and "absolute path" in logs, logs[-3000:]
    status, _ = wait_for(address, too_big_id, 120)
    logs = job_logs(address, too_big_id)
    assert status == "FAILED", f"{status}\n{logs[-3000:]}"
    assert "CPU: the config asks for 8.5 (rollout.num_actors x rollout.cpus_per_actor = 7" in logs, logs[-3000:]
    assert "the cluster has 8" in logs and "deploy.head start --num-cpus" in logs

    submission_id = f"gdsd-test-{uuid.uuid4().hex[:8]}"
    # the weight bus too: its gloo pairs and store must stay on loopback
    submit(submission_id, f"run_dir={run_dir}", "pipeline.weight_sync=broadcast")
    status, job_sockets = wait_for(address, submission_id, 300, ray_tmp)
    logs = job_logs(address, submission_id)
    assert status == "SUCCEEDED", f"job {submission_id}: {status}\n{logs[-4000:]}"
    assert logs.count(f"run_dir: {run_dir}") == 2, logs[-4000:]  # where the outputs are, at start and at the end

    # the run directory: one record per step, a checkpoint, TensorBoard events, the evaluation table, the HF export
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "learner" in r]
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    assert all(r["learner"]["global_rows"] == 2 * 6 for r in steps)  # prompts_per_step x group_size
    assert (run_dir / "checkpoint" / "latest").read_text().strip() == f"step{STEPS:06d}"
    assert json.loads((run_dir / "checkpoint" / f"step{STEPS:06d}" / "trainer_state.json").read_text())["step"] == STEPS
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    eval_md = (run_dir / "eval.md").read_text()
    assert "before (step 0)" in eval_md and f"after (step {STEPS})" in eval_md
    assert json.loads((run_dir / "final" / "config.json").read_text())
    assert "Started a local Ray instance" not in logs  # it joined the head it was submitted to
    assert "constructor arguments in the object store" not in logs  # reward workers are passed by name

    # every documented metric reaches the node's Prometheus endpoint with its tags (reported every few seconds)
    deadline, series = time.monotonic() + 90, {}  # reported every ~10 s; slower on a loaded box
    while time.monotonic() < deadline and series.get("ray_gdsd_version", {}).get("__value__") != f"{STEPS}.0":
        series = prometheus(metrics_port)
        time.sleep(1.0)
    assert series.get("ray_gdsd_version", {}).get("__value__") == f"{STEPS}.0", sorted(series)
    documented = documented_metrics()
    assert len(documented) > 25
    code_only = {name for name in documented
                 if any(part in name for part in ("sandbox_seconds", "sandbox_outcomes", "sandbox_cpu_seconds"))}
    missing = sorted(set(documented) - set(series) - code_only)  # a Sudoku run runs no sandboxed program
    assert not missing, f"documented in deploy/README.md but not exported: {missing}"
    for name, tags in documented.items():
        if name in code_only:
            continue
        assert tags <= set(series[name]), (name, tags, series[name])
        assert series[name]["run"] == "run"  # the run_dir's name
    assert series["ray_gdsd_rollout_tokens_per_second"]["actor"] == "0"
    assert not any(re.search(r"actor\d", name) for name in series)
    undocumented = sorted(set(series) - set(documented_metrics()) - {"ray_gdsd_eval_accuracy"})
    assert not undocumented, f"exported but not documented in deploy/README.md: {undocumented}"

    # every process of the job (driver, actors, learner ranks with their TCPStore, the weight bus) on loopback only
    non_loopback = {s for s in job_sockets if s[0] not in LOOPBACK}
    assert not non_loopback, f"job processes listened on non-loopback addresses: {sorted(non_loopback)}"

    # `deploy.head stop` leaves nothing of the head listening (Ray's client server included, which names only the
    # GCS address, not the temp dir)
    head_pids = set(session_pids(ray_tmp))
    from deploy.head import _cmdline

    assert any("ray.util.client.server" in " ".join(_cmdline(pid)) for pid in head_pids)
    stop_head(ray_tmp)
    assert not [s for s in listening_sockets() if s[2] in head_pids], "processes of the head still listen"
