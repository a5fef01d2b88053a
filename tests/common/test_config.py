import pytest
from pydantic import ValidationError

from common.config import ConfigError, load_config


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sampler:\n  gen_length: 64\n  block_length: 32\n  steps: 32\n"
                    "algorithm:\n  beta: 0.01\n  name: gdsd\n")
    cfg = load_config(path, ["sampler.temperature=0", "algorithm.name=gdsd_tlc", "model.path=/m"])
    assert cfg.sampler.gen_length == 64 and cfg.sampler.temperature == 0.0
    assert cfg.algorithm.beta == 0.01 and cfg.algorithm.name == "gdsd_tlc" and cfg.model.path == "/m"
    with pytest.raises(ValidationError, match="frozen"):
        cfg.sampler.steps = 3  # frozen: validated once, never mutated


@pytest.mark.parametrize("override,names", [
    ("sampler.stepz=3", "sampler.stepz"),
    ("samplr.steps=3", "samplr"),
    ("sampler.steps=-1", "sampler.steps"),
    ("algorithm.name=ppo", "algorithm.name"),
    ("algorithm.eps=2", "algorithm.eps"),
    ("sampler.steps=7", "multiple of the number of blocks"),
    ("sampler.gen_length=33", "multiple of block_length"),
    ("model.dtype=float16", "model.dtype"),
    ("sampler.steps.x=1", "sampler.steps"),
    ("learner.lr", "key.sub=value"),
])
def test_bad_config_names_the_key(override, names):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["sampler.gen_length=64", override])
    assert names in str(err.value)


@pytest.mark.parametrize("override,names", [
    ("reward.resources={CPU: 1}", "config key 'reward.resources': Value error, 'CPU' is not a custom resource: set "
                                  "reward.cpus_per_worker instead"),
    ("reward.resources={GPU: 1}", "'GPU' is not a custom resource: set no GPU"),
    ("rollout.resources={GPU: 1}", "config key 'rollout.resources': Value error, 'GPU' is not a custom resource: set "
                                   "rollout.gpus_per_actor instead"),
    ("learner.resources={CPU: 2}", "set learner.cpus_per_rank instead"),
    ("learner.resources={learner_node: 0}", "config key 'learner.resources': Value error, resource 'learner_node': "
                                            "amount 0 must be > 0"),
    ("reward.resources={reward_node: 0.00001}", "resource 'reward_node': amount 1e-05 must be > 0 and a multiple of "
                                                "0.0001"),
    ("reward.resources={reward_node: -1}", "config key 'reward.resources'"),
])
def test_bad_custom_resources_name_the_key(override, names):
    """rollout.resources, reward.resources, learner.resources: custom Ray resources only, amounts Ray can place."""
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert names in str(err.value), str(err.value)


def test_custom_resources_load():
    cfg = load_config(None, ["reward.resources={reward_node: 1}", "rollout.resources={rollout_node: 0.5}",
                             "learner.resources={learner_node: 2}"])
    assert (cfg.reward.resources, cfg.rollout.resources, cfg.learner.resources) == (
        {"reward_node": 1.0}, {"rollout_node": 0.5}, {"learner_node": 2.0})
    assert load_config(None).reward.resources == {}


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match="valid keys here: .*gen_length"):
        load_config(None, ["sampler.gen_len=3"])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_shipped_configs_load():
    from pathlib import Path

    paths = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
    assert paths
    for path in paths:
        load_config(path)
