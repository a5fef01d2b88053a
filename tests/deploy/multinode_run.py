"""A training run on a multi-node Ray cluster on this machine (run by tests/deploy/test_multinode.py in a process of
its own, with RAY_TMPDIR private: `ray.cluster_utils.Cluster` writes its address where a plain ray.init() would look).

Nodes: a head (driver, reward service: `reward_node`), a learner node (`learner_node`), two rollout nodes
(`rollout_node`), each a raylet with its own object store. The config places the 2 learner ranks with
`learner.resources={learner_node: 1}` (one STRICT_PACK placement group), the 2 rollout actors with
`rollout.resources={rollout_node: 1}` and the reward pool actor and its worker with `reward.resources={reward_node: 1}`
(the head advertises 2: one worker + the pool), so the reward service is not on the node that is killed. At step
KILL_STEP, right after the actors were handed their chunks, the rollout node hosting actor 1 is killed (its raylet and
every process on it, not gracefully) and a replacement rollout node joins, as an autoscaler or KubeRay would bring one;
the run must finish with every row once.

Writes a JSON report: where each actor and rank ran, the object stores that held every step's rollout batches and
every weight push (Ray's object directory), the run's result and metrics records.

    python tests/deploy/multinode_run.py OUT.json WORKDIR
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from common import cluster as local  # noqa: E402

local.local_env()  # before ray is imported: every node and worker process inherits these
# ruff: noqa: E402

import json
import time

import ray
from ray._private.state import actors as gcs_actors
from ray.cluster_utils import Cluster
from ray.experimental import get_object_locations

from common.config import load_config
from deploy.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
STEPS, KILL_STEP = 3, 1
TINY = ["model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.intermediate_size=128", "sft.enabled=false",
        "sampler.gen_length=40", "sampler.block_length=8", "sampler.steps=10", "algorithm.mu=2",
        "rollout.prompts_per_step=2", "eval.num_prompts=0", "checkpoint.export_hf=false"]
# node death noticed within ~2 s (defaults: 5 failed checks of 3 s). Objects above 4 KiB go to the object store: Ray
# passes smaller ones (default: below 100 KiB) inline through the caller, so the tiny model's batches (~10 KiB) would
# never touch an object store, while a real one's are far above the default (GSM8K: ~330 KiB per actor and step).
# Still above what must stay inline: a restartable actor's constructor arguments (the config, ~3 KiB) are needed
# again at its restart, and Ray does not keep them in the object store for that (ray-project/ray#53727)
SYSTEM = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_timeout_ms": 500,
          "health_check_failure_threshold": 4, "max_direct_call_object_size": 4096}
NODE = dict(node_ip_address="127.0.0.1", object_store_memory=80 * 2**20, include_dashboard=False)


def node_of_actors() -> dict[str, str]:
    """Live actor name -> node id (Ray's actor table)."""
    return {a["Name"]: a["Address"]["NodeID"] for a in gcs_actors().values() if a["State"] == "ALIVE" and a["Name"]}


def nodes_of_class(name: str) -> list[str]:
    """Node ids of the live actors of one class (the unnamed RewardWorkers)."""
    return sorted(a["Address"]["NodeID"] for a in gcs_actors().values()
                  if a["State"] == "ALIVE" and a["ActorClassName"].endswith(name))


def main(out: str, workdir: str) -> None:
    work = Path(workdir)
    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "num_cpus": 3, "resources": {"reward_node": 2},
                                                            "_system_config": SYSTEM})
    learner_node = cluster.add_node(**NODE, num_cpus=2, resources={"learner_node": 2})
    rollout_nodes = [cluster.add_node(**NODE, num_cpus=1, resources={"rollout_node": 1}) for _ in range(2)]
    ray.init(address=cluster.address, log_to_driver=True)
    report: dict = {"nodes": {"head": cluster.head_node.node_id, "learner": learner_node.node_id,
                              "rollout": [n.node_id for n in rollout_nodes]}, "batches": [], "pushes": []}
    cfg = load_config(REPO / "configs" / "sudoku_tiny.yaml", [
        *TINY, f"steps={STEPS}", f"run_dir={work / 'run'}", f"cache_dir={work / 'cache'}",
        "rollout.num_actors=2", "rollout.resources={rollout_node: 1}", "reward.resources={reward_node: 1}",
        "learner.num_ranks=2",
        "learner.micro_batch_rows=6", "learner.resources={learner_node: 1}", "learner.placement=STRICT_PACK"])
    trainer = Trainer(cfg)
    fleet = trainer.fleet
    ray.get([a.ping.remote() for a in fleet.actors])  # every actor is up (a kill must hit a running one)
    report["placed"] = node_of_actors()
    report["reward_workers"] = nodes_of_class("RewardWorkerImpl")

    # observe (not replace): the object locations after each learner step and each weight push
    train_step, submit, push_weights = trainer.learner.train_step, fleet.submit, fleet.push_weights

    def observed_train_step(batch_refs):
        stats = train_step(batch_refs)
        report["batches"].append([sorted(v["node_ids"]) for v in get_object_locations(batch_refs).values()])
        return stats

    def observed_push(state_ref, version):
        pushes = push_weights(state_ref, version)
        ray.get(pushes)  # sync mode waits for them anyway
        report["pushes"].append(sorted(get_object_locations([state_ref])[state_ref]["node_ids"]))
        return pushes

    def submit_then_kill(step, prompts, group_size, **kwargs):
        chunks = submit(step, prompts, group_size, **kwargs)
        if step == KILL_STEP:
            victim = node_of_actors()["rollout-1"]
            (node,) = [n for n in rollout_nodes if n.node_id == victim]
            cluster.remove_node(node, allow_graceful=False)  # actor 1 dies mid-rollout, with its object store
            report["killed"] = victim
            report["replacement"] = cluster.add_node(**NODE, num_cpus=1, resources={"rollout_node": 1}).node_id
        return chunks

    trainer.learner.train_step, fleet.push_weights, fleet.submit = observed_train_step, observed_push, submit_then_kill
    start = time.monotonic()
    try:
        report["result"] = trainer.run()
    finally:
        report["placed_after"] = node_of_actors()
        report["reward_workers_after"] = nodes_of_class("RewardWorkerImpl")
        trainer.shutdown()
    report["seconds"] = time.monotonic() - start
    lines = (work / "run" / "metrics.jsonl").read_text().splitlines()
    report["records"] = [r for r in map(json.loads, lines) if "learner" in r]
    Path(out).write_text(json.dumps(report, indent=1))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
