"""The user path end to end: `ray start --head` on loopback, `ray job submit` of the training job, run directory and
dashboard metrics checked, head stopped.

The head gets its own ports and temp dir and every CLI call names its address explicitly, so the test does not care
whether the session's `ray_local` instance (or anyone else's Ray) is running on the box.
"""
from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import uuid

import pytest

from deploy.head import LOOPBACK, free_port, head_env, listeners, listening_sockets, ray_cli, start_head

pytestmark = pytest.mark.slow
STEPS = 2


def prometheus(port: int) -> dict[str, float]:
    """ray_gdsd_* samples of the head node's metrics endpoint (what the dashboard's Grafana panels read)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("ray_gdsd_"):
            name, value = line.split("{")[0], line.rsplit(" ", 1)[1]
            out[name] = float(value)
    return out


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

    submission_id = f"gdsd-test-{uuid.uuid4().hex[:8]}"
    cmd = [ray_cli(), "job", "submit", "--address", address, "--submission-id", submission_id, "--no-wait",
           "--working-dir", ".", "--runtime-env", "deploy/runtime_env.yaml", "--",
           "python", "-m", "deploy.job", "--config", "configs/sudoku_tiny.yaml", *jobs.tiny, f"steps={STEPS}",
           f"run_dir={run_dir}", f"cache_dir={tmp_path / 'cache'}",
           "pipeline.weight_sync=broadcast"]  # the weight bus too: its gloo pairs and store must stay on loopback
    subprocess.run(cmd, cwd=jobs.repo, env=head_env(), check=True, capture_output=True, text=True, timeout=120)

    deadline, status, job_sockets = time.monotonic() + 300, "PENDING", set()
    while time.monotonic() < deadline:
        status = job_status(address, submission_id)
        job_sockets |= {(ip, name) for ip, _, _, name in listeners(ray_tmp)}
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(1.0)
    logs = subprocess.run([ray_cli(), "job", "logs", "--address", address, submission_id], env=head_env(),
                          capture_output=True, text=True, timeout=60).stdout
    assert status == "SUCCEEDED", f"job {submission_id}: {status}\n{logs[-4000:]}"

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

    # the driver's gauges reach the node's Prometheus endpoint as ray_gdsd_* (reported every few seconds)
    deadline, gauges = time.monotonic() + 90, {}  # reported every ~10 s; slower on a loaded box
    while time.monotonic() < deadline and gauges.get("ray_gdsd_version") != STEPS:
        gauges = prometheus(metrics_port)
        time.sleep(1.0)
    assert gauges.get("ray_gdsd_version") == STEPS, sorted(gauges)
    assert "ray_gdsd_reward_mean" in gauges and "ray_gdsd_time_update" in gauges

    # every process of the job (driver, actors, learner ranks with their TCPStore, the weight bus) on loopback only
    non_loopback = {s for s in job_sockets if s[0] not in LOOPBACK}
    assert not non_loopback, f"job processes listened on non-loopback addresses: {sorted(non_loopback)}"
