"""The deployment files parse and agree with the code and configs they name: runtime_env.yaml (validated by Ray's own
RuntimeEnv), the cluster launcher YAML (Ray's schema + the checks `ray up` runs before it contacts a cloud), the
KubeRay RayJob (structure, worker groups sized like the config its entrypoint runs)."""
from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from common.cluster import LOCAL_ENV
from common.config import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
REPO = DEPLOY.parent


def load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def test_runtime_env():
    from ray.runtime_env import RuntimeEnv

    env = load("runtime_env.yaml")
    assert set(env) <= {"excludes", "env_vars"}  # no working_dir (the CLI's --working-dir), no pip (CUDA torch)
    RuntimeEnv(working_dir=".", **env)  # raises on a bad field or a non-string env value
    assert {".venv", "runs"} <= set(env["excludes"])
    for key in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED"):  # the job-level part of the local environment
        assert env["env_vars"][key] == LOCAL_ENV[key]


def test_cluster_launcher_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = load("cluster.yaml")
    validate_config(prepare_config(yaml.safe_load((DEPLOY / "cluster.yaml").read_text())))
    types = raw["available_node_types"]
    assert raw["head_node_type"] == "head" and types["head"]["resources"]["GPU"] == 0
    assert types["rollout_gpu"]["resources"]["rollout_node"] == types["rollout_gpu"]["resources"]["GPU"]
    assert types["learner_gpu"]["resources"]["learner_node"] == types["learner_gpu"]["resources"]["GPU"]
    head_start = " ".join(raw["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=disabled" in head_start and "--dashboard-host=127.0.0.1" in head_start
    assert all("RAY_AUTH_MODE=disabled" in c for c in raw["worker_start_ray_commands"] if "ray start" in c)
    # the GPU node types hold exactly the paper configs' actors and ranks (the learner is one placement group on one
    # node: GPUs beyond its ranks would sit idle)
    for name in ("sudoku_llada", "countdown_llada", "sudoku_dream"):
        cfg = load_config(REPO / "configs" / f"{name}.yaml")
        assert types["rollout_gpu"]["resources"]["GPU"] == cfg.rollout.num_actors * cfg.rollout.gpus_per_actor, name
        assert types["learner_gpu"]["resources"]["GPU"] == cfg.learner.num_ranks * cfg.learner.gpus_per_rank, name


def test_kuberay_rayjob():
    job = load("kuberay_rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:4] == ["python", "-m", "deploy.job", "--config"]
    cfg = load_config(REPO / argv[4], argv[5:])  # the config and overrides the entrypoint runs are valid
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["env_vars"]["RAY_AUTH_MODE"] == LOCAL_ENV["RAY_AUTH_MODE"]

    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == __import__("ray").__version__
    assert cluster["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"rollout", "learner"}

    def gpus(group: dict) -> int:
        container = group["template"]["spec"]["containers"][0]
        return group["replicas"] * int(container["resources"]["limits"]["nvidia.com/gpu"])

    assert gpus(groups["rollout"]) == cfg.rollout.num_actors * cfg.rollout.gpus_per_actor
    assert gpus(groups["learner"]) == cfg.learner.num_ranks * cfg.learner.gpus_per_rank
    assert "rollout_node" in groups["rollout"]["rayStartParams"]["resources"]
    assert "learner_node" in groups["learner"]["rayStartParams"]["resources"]
    for group in [cluster["headGroupSpec"], *groups.values()]:
        env = {e["name"]: e["value"] for e in group["template"]["spec"]["containers"][0]["env"]}
        assert env["RAY_AUTH_MODE"] == "disabled" and "GLOO_SOCKET_IFNAME" in env
        mounts = {m["mountPath"] for m in group["template"]["spec"]["containers"][0]["volumeMounts"]}
        assert "/mnt/runs" in mounts  # run_dir is shared: every rank writes its checkpoint shard there
    assert cfg.run_dir.startswith("/mnt/runs/") and cfg.cache_dir.startswith("/mnt/runs/")
