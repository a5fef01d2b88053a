"""The deployment files parse and agree with the code and configs they name: runtime_env.yaml (validated by Ray's own
RuntimeEnv), the cluster launcher YAML (Ray's schema + the checks `ray up` runs before it contacts a cloud), the
KubeRay RayJob (structure, worker groups sized like the config its entrypoint runs)."""
from __future__ import annotations

import json
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
    # the GPU node types hold exactly the 8 + 8 GPU paper configs' actors and ranks (the learner is one placement
    # group on one node: GPUs beyond its ranks would sit idle)
    for name in ("gsm8k_llada_gdsd", "gsm8k_llada_espo", "math_llada_gdsd", "math_llada_gdsd_tlc"):
        cfg = load_config(REPO / "configs" / "paper" / f"{name}.yaml")
        assert types["rollout_gpu"]["resources"]["GPU"] == cfg.rollout.num_actors * cfg.rollout.gpus_per_actor, name
        assert types["learner_gpu"]["resources"]["GPU"] == cfg.learner.num_ranks * cfg.learner.gpus_per_rank, name
        assert cfg.model.lora.enabled and cfg.learner.placement == "STRICT_PACK"
        # the head holds the reward service with reward.resources={reward_node: 1}: each worker and the pool actor
        assert types["head"]["resources"]["reward_node"] == cfg.reward.num_workers + 1, name
        check_sized_from_plan(cfg, object_store=_flag(head_start, "--object-store-memory"),
                              shm=_size(next(o for o in raw["docker"]["run_options"] if "--shm-size" in o)))
    for command in raw["worker_start_ray_commands"]:
        if "ray start" in command:
            assert _flag(command, "--object-store-memory") == _flag(head_start, "--object-store-memory")
    assert any("datasets" in c for c in raw["setup_commands"])  # GSM8K / MATH


def _flag(command: str, name: str) -> int:
    return int(command.split(f"{name}=")[1].split()[0])


def _size(text: str) -> int:
    """'24Gi', '--shm-size=24g' -> bytes."""
    value = text.split("=")[-1].strip().lower().removesuffix("i").removesuffix("b")
    return int(float(value[:-1]) * 2 ** {"k": 10, "m": 20, "g": 30}[value[-1]])


def check_sized_from_plan(cfg, *, object_store: int, shm: int) -> None:
    """Object store and /dev/shm sized from deploy/plan.py: the store holds the plan's bytes at once several times
    over (pushes read by every actor of a node, evaluation rows), /dev/shm holds the store; every actor and rank fits
    one H200."""
    from deploy.plan import build_plan, model_args, problems

    plan = build_plan(cfg, model_args(cfg, DEPLOY / "shapes" / "llada-8b-instruct.json"), gpu_mem_gib=140.0,
                      nodes=2)
    held = next(x.bytes for x in plan.traffic.lines if x.name == "held at once")
    assert 8 * held <= object_store < shm, (held, object_store, shm)
    assert problems(plan) == [] and plan.gpus_needed <= plan.nodes * plan.gpus_per_node


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
    # the reward service on the head: reward.resources asked by each worker and by the pool actor
    head_resources = json.loads(yaml.safe_load(cluster["headGroupSpec"]["rayStartParams"]["resources"]))
    assert cfg.reward.resources == {"reward_node": 1.0}
    assert head_resources == {"reward_node": cfg.reward.num_workers + 1}
    for group in [cluster["headGroupSpec"], *groups.values()]:
        env = {e["name"]: e["value"] for e in group["template"]["spec"]["containers"][0]["env"]}
        assert env["RAY_AUTH_MODE"] == "disabled" and "GLOO_SOCKET_IFNAME" in env
        mounts = {m["mountPath"] for m in group["template"]["spec"]["containers"][0]["volumeMounts"]}
        assert "/mnt/runs" in mounts  # run_dir is shared: every rank writes its checkpoint shard there
    assert cfg.run_dir.startswith("/mnt/runs/") and cfg.cache_dir.startswith("/mnt/runs/")
    assert cfg.model.lora.enabled and cfg.cluster.gpu_mem_gib == 140 and cfg.task.source.startswith("/mnt/data/")
    shm = next(v for v in cluster["headGroupSpec"]["template"]["spec"]["volumes"] if v["name"] == "dshm")
    for group in [cluster["headGroupSpec"], *groups.values()]:
        check_sized_from_plan(cfg, object_store=int(group["rayStartParams"]["object-store-memory"]),
                              shm=_size(shm["emptyDir"]["sizeLimit"]))
