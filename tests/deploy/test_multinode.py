"""A run across several Ray nodes on this machine (tests/deploy/multinode_run.py: `ray.cluster_utils.Cluster`, a
head, a learner node and two rollout nodes, each with its own raylet and object store): actors and learner ranks land
where `rollout.resources` / `learner.resources` / `reward.resources` say, rollout batches and weight pushes cross
object stores, and a rollout node killed mid-step costs no row and exactly its own chunk (re-issued to the actor Ray
restarts on a replacement node; the reward service, on the head by `reward.resources`, is untouched; the metrics show
the lost node and the re-issue)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.head import head_env

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
STEPS, KILL_STEP, ROWS = 3, 1, 2 * 6  # multinode_run.py: 2 prompts x G 6 per step


def test_multinode_placement_object_stores_and_node_loss(ray_tmp, tmp_path):
    out = tmp_path / "report.json"
    env = {**os.environ, **head_env(), "RAY_TMPDIR": ray_tmp}  # a private temp dir: nobody else joins this cluster
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "deploy" / "multinode_run.py"), str(out),
                           str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=480)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    report = json.loads(out.read_text())
    nodes, placed = report["nodes"], report["placed"]

    # placement: ranks on the learner node (one STRICT_PACK group), one actor on each rollout node, the reward pool
    # and its worker on the head (the only node with reward_node), before and after the kill
    assert placed["learner-rank0"] == placed["learner-rank1"] == nodes["learner"]
    assert {placed["rollout-0"], placed["rollout-1"]} == set(nodes["rollout"])
    assert placed["reward-pool"] == report["placed_after"]["reward-pool"] == nodes["head"]
    assert report["reward_workers"] == report["reward_workers_after"] == [nodes["head"]]

    # every step's batches were read into the learner node's object store from a rollout node's; every push was read
    # from the learner node's store into every rollout node's (the replacement's after the kill)
    assert len(report["batches"]) == STEPS
    rollout_nodes = set(nodes["rollout"]) | {report["replacement"]}
    for step, locations in enumerate(report["batches"]):
        assert len(locations) == 2  # one batch per actor
        for where in locations:
            assert nodes["learner"] in where and rollout_nodes & set(where), (step, where)
    for version, where in enumerate(report["pushes"], start=1):
        alive = ({placed["rollout-0"], report["replacement"]} if version > KILL_STEP else set(nodes["rollout"]))
        assert nodes["learner"] in where and alive <= set(where), (version, where)

    # the node loss: actor 1 restarted on the replacement node, its chunk (and only it: actor 0 and the reward service
    # were elsewhere) re-issued once, no row lost or doubled
    assert report["killed"] == placed["rollout-1"]
    assert report["placed_after"]["rollout-1"] == report["replacement"]
    assert report["placed_after"]["rollout-0"] == placed["rollout-0"]
    reissued = report["result"]["reissued_chunks"]
    assert report["result"]["step"] == STEPS and reissued == 1
    records = report["records"]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert [r["learner"]["global_rows"] for r in records] == [ROWS] * STEPS
    assert [r["fleet"]["dead_nodes"] for r in records] == [0] + [1] * (STEPS - 1)
    assert [r["fleet"]["reissued_chunks"] for r in records] == [0] + [reissued] * (STEPS - 1)
