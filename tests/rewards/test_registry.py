"""The registry: configured functions are summed, overrides take effect, config mistakes are named."""
from __future__ import annotations

import pytest

from rewards.service.registry import DEFAULT_REWARD_FUNCTIONS, RewardServiceConfig, Scorer, error_kind

GSM8K = "<reasoning>\nr\n</reasoning>\n<answer>\n72\n</answer>\n"


def test_no_module_level_scorer_or_function_table():
    """Issue 10 section 4: nothing is created at import; a Scorer owns its functions, sandbox and checker."""
    import rewards.verifiers.coding
    import rewards.verifiers.math_answer
    import rewards.service.registry

    assert not hasattr(rewards.service.registry, "score") and not hasattr(rewards.service.registry, "reward_functions")
    assert not hasattr(rewards.verifiers.coding, "default_sandbox")
    assert not hasattr(rewards.verifiers.math_answer, "default_checker")
    a = Scorer()
    b = Scorer(RewardServiceConfig(reward_functions={**DEFAULT_REWARD_FUNCTIONS, "gsm8k": ["correctness"]}))
    assert a.score("gsm8k", {"answer": "72"}, GSM8K).total == pytest.approx(3.987)
    assert b.score("gsm8k", {"answer": "72"}, GSM8K).parts == {"correctness": 2.0}
    assert a.sandbox is not b.sandbox


def test_replies_over_the_length_cap_are_refused_and_counted():
    from rewards.service.metrics import summarize

    scorer = Scorer(RewardServiceConfig(max_reply_chars=100))
    long = scorer.score("gsm8k", {"answer": "72"}, GSM8K + "x" * 90)
    assert long.total == 0.0 and error_kind(long.error) == "too_long"
    assert scorer.score("gsm8k", {"answer": "72"}, GSM8K).total == pytest.approx(3.987)
    assert summarize([long], []).errors == {"too_long": 1}


def test_scorer_config_picks_functions_per_task():
    scorer = Scorer(RewardServiceConfig(reward_functions={"gsm8k": ["int_answer", "strict_format"]}))
    assert scorer.score("gsm8k", {"answer": "1"}, GSM8K).parts == {"int_answer": 0.5, "strict_format": 0.5}
    assert error_kind(scorer.score("sudoku", {}, "x").error) == "unknown_task"


@pytest.mark.parametrize("functions", [{"gsm8k": ["corectness"]}, {"math": []}])
def test_unknown_or_empty_function_lists_are_named(functions):
    with pytest.raises(ValueError, match="reward_functions.*choose from"):
        Scorer(RewardServiceConfig(reward_functions=functions))


def test_bytes_replies_are_decoded():
    assert Scorer().score("gsm8k", {"answer": "72"}, GSM8K.encode()).total == pytest.approx(3.987)
