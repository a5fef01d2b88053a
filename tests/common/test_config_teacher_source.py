"""RunConfig cross-section checks: per-token algorithms need learner-side targets, which need synchronous mode."""
import pytest

from common.config import ConfigError, load_config
from learner.losses import LOSSES


@pytest.mark.parametrize("name", ["diffu_grpo", "wd1"])
def test_token_algorithms_need_teacher_source_learner(name):
    with pytest.raises(ConfigError, match="algorithm.teacher_source=learner"):
        load_config(None, [f"algorithm.name={name}"])
    cfg = load_config(None, [f"algorithm.name={name}", "algorithm.teacher_source=learner"])
    assert cfg.algorithm.p_mask_prompt == 0.15
    LOSSES[name].kwargs_from(cfg.algorithm)  # every registry field exists in AlgorithmConfig


def test_teacher_source_learner_needs_synchronous_mode():
    with pytest.raises(ConfigError, match="pipeline.max_staleness=0"):
        load_config(None, ["algorithm.teacher_source=learner", "pipeline.max_staleness=1"])
    load_config(None, ["algorithm.teacher_source=rollout", "pipeline.max_staleness=1"])  # async with actor targets


def test_p_mask_prompt_range():
    with pytest.raises(ConfigError, match="p_mask_prompt"):
        load_config(None, ["algorithm.p_mask_prompt=1.5"])
