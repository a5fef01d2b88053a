"""The registry: configured functions are summed, overrides take effect, config mistakes are named."""
from __future__ import annotations

import pytest

from rewards import registry
from rewards.registry import DEFAULT_REWARD_FUNCTIONS, RewardConfig, Scorer, error_kind

GSM8K = "<reasoning>\nr\n</reasoning>\n<answer>\n72\n</answer>\n"


def test_module_score_follows_reward_functions_overrides(monkeypatch):
    assert registry.score("gsm8k", {"answer": "72"}, GSM8K).total == 4.0
    monkeypatch.setattr(registry, "reward_functions", {**DEFAULT_REWARD_FUNCTIONS, "gsm8k": ["correctness"]})
    result = registry.score("gsm8k", {"answer": "72"}, GSM8K)
    assert result.parts == {"correctness": 2.0} and result.total == 2.0


def test_scorer_config_picks_functions_per_task():
    scorer = Scorer(RewardConfig(reward_functions={"gsm8k": ["int_answer", "strict_format"]}))
    assert scorer.score("gsm8k", {"answer": "1"}, GSM8K).parts == {"int_answer": 0.5, "strict_format": 0.5}
    assert error_kind(scorer.score("sudoku", {}, "x").error) == "unknown_task"


@pytest.mark.parametrize("functions", [{"gsm8k": ["corectness"]}, {"math": []}])
def test_unknown_or_empty_function_lists_are_named(functions):
    with pytest.raises(ValueError, match="reward_functions.*choose from"):
        Scorer(RewardConfig(reward_functions=functions))


def test_bytes_replies_are_decoded():
    assert Scorer().score("gsm8k", {"answer": "72"}, GSM8K.encode()).total == 4.0
