"""The learner's placement group (learner/group.py): STRICT_PACK by default (every rank on one node), PACK when a
multi-node learner is configured; the job creates it before any rollout actor (deploy/trainer.py)."""
import pytest
import ray
from ray.util import placement_group_table

from common.config import load_config
from learner.group import LearnerGroup

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("placement", [None, "PACK"])
def test_learner_placement_strategy(ray_local, tiny_model_dir, placement):
    overrides = ["learner.num_ranks=2", "learner.cpus_per_rank=1", "learner.micro_batch_rows=6"]
    if placement:
        overrides.append(f"learner.placement={placement}")
    group = LearnerGroup(load_config(None, overrides), tiny_model_dir)
    try:
        table = placement_group_table(group.placement)
        assert table["strategy"] == (placement or "STRICT_PACK")
        nodes = {ray.get(w.address.remote("127.0.0.1"))[0] for w in group.workers}
        assert nodes == {"127.0.0.1"}
    finally:
        group.shutdown()


def test_a_group_that_fails_to_start_leaves_no_names_behind(ray_local, tiny_model_dir, tmp_path):
    """A rank failing in setup (here: no model at the path) removes the named placement group and kills the named
    ranks, so the next group in the namespace (a learner restart, the next job) can take the names."""
    cfg = load_config(None, ["learner.num_ranks=2", "learner.cpus_per_rank=1", "learner.micro_batch_rows=6"])
    with pytest.raises(ray.exceptions.RayError, match="missing"):
        LearnerGroup(cfg, str(tmp_path / "missing"))
    group = LearnerGroup(cfg, tiny_model_dir)
    group.shutdown()
