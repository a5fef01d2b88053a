"""The algorithm registry and the one validation pass (common/algorithms.py, common/config.py::validate)."""
from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys

import pytest

from common.algorithms import ALGORITHMS, TRAINABLE
from common.config import AlgorithmConfig, ConfigError, build_config, dump_config, load_config

TOKEN_ONLY = [n for n, s in ALGORITHMS.items() if s.trainable and s.teacher_sources == ("learner",)]


def official(name: str) -> list[str]:
    return ALGORITHMS[name].overrides()


def test_importing_the_config_imports_no_torch():
    code = ("import sys, json, common.config, common.algorithms; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'ray'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_every_config_field_the_registry_names_exists():
    fields = set(AlgorithmConfig.model_fields)
    for name, spec in ALGORITHMS.items():
        assert set(spec.reads) <= fields, name
        assert set(spec.loss_kwargs) <= set(spec.reads), name
        assert set(spec.official) <= set(spec.reads), name
        if spec.needs_old:
            assert "teacher_source" in spec.reads, name


def test_the_losses_registry_is_derived_from_the_algorithm_registry():
    from learner.losses import LOSSES

    assert list(LOSSES) == list(ALGORITHMS)
    for name, spec in LOSSES.items():
        assert spec.algorithm is ALGORITHMS[name]
        params = inspect.signature(spec.fn).parameters
        for kw in ALGORITHMS[name].loss_kwargs:
            assert params[kw].kind is inspect.Parameter.KEYWORD_ONLY, (name, kw)


@pytest.mark.parametrize("beta", [0.0, 1e-3])
def test_one_rule_says_who_holds_the_reference_copy(beta):
    """AlgorithmSpec.reference_on (asked by the actors' engine, the learner and deploy/plan.py) against the table of
    docs/design.md, "The algorithm registry": S_ref from the actor for the sequence-level KL losses, from the learner
    for d1's per-token one, nobody for the ratio-free losses or beta = 0."""
    table = {"gdsd": "actor", "gdsd_tlc": "actor", "espo": "actor", "diffu_grpo": "learner", "spg": None, "wd1": None}
    assert {name: spec.reference_on(beta) for name, spec in ALGORITHMS.items()} == {
        name: holder if beta > 0 else None for name, holder in table.items()}


@pytest.mark.parametrize("source", ["rollout", "learner"])
def test_one_rule_says_who_computes_s_old(source):
    """AlgorithmSpec.old_on (asked by the episode, the learner's update paths, validation and deploy/plan.py): the
    actor only for sequence-level S(x0) with teacher_source=rollout, the learner for the rest with a ratio."""
    seq = "actor" if source == "rollout" else "learner"
    assert {name: spec.old_on(source) for name, spec in ALGORITHMS.items()} == {
        "gdsd": seq, "gdsd_tlc": seq, "espo": seq, "diffu_grpo": "learner", "spg": None, "wd1": None}


@pytest.mark.parametrize("name", TRAINABLE)
def test_each_trainable_algorithm_loads_at_its_official_settings(name):
    cfg = load_config(None, official(name))
    assert cfg.algorithm.name == name
    for key, value in ALGORITHMS[name].official.items():
        assert getattr(cfg.algorithm, key) == value
    assert build_config(dump_config(cfg)) == cfg  # the run directory's config.yaml reloads


def test_compare_runs_every_trainable_algorithm_at_its_official_settings():
    from benchmarks.compare import METHODS

    assert list(METHODS) == list(TRAINABLE)
    assert METHODS["espo"] == ["algorithm.name=espo", "algorithm.beta=0.01", "algorithm.clip_eps=0.2",
                               "algorithm.mu=2", "algorithm.num_mc=1"]


def test_an_untrainable_algorithm_fails_at_load_time(monkeypatch):
    # every registered algorithm trains today: mark one untrainable, as a new registry entry without its path would be
    monkeypatch.setitem(ALGORITHMS, "spg", dataclasses.replace(ALGORITHMS["spg"], trainable=False))
    with pytest.raises(ConfigError, match=r"algorithm.name=spg: the learner does not implement it"):
        load_config(None, ["algorithm.name=spg"])


def test_spg_trains_and_reads_its_own_keys():
    cfg = load_config(None, ["algorithm.name=spg", "algorithm.eubo_beta=1.0", "algorithm.mix_weight=1.0"])
    assert (cfg.algorithm.eubo_beta, cfg.algorithm.mix_weight) == (1.0, 1.0)
    with pytest.raises(ConfigError, match="algorithm.mix_weight"):
        load_config(None, ["algorithm.name=spg", "algorithm.mix_weight=1.5"])
    with pytest.raises(ConfigError, match="algorithm.eubo_beta"):
        load_config(None, ["algorithm.name=spg", "algorithm.eubo_beta=0"])
    # official eubo_beta: Sudoku 1.0, the other tasks 1.5 (facebookresearch/SPG slurm_scripts/spg_mix)
    assert "algorithm.eubo_beta=1.0" in ALGORITHMS["spg"].overrides("sudoku")
    assert "algorithm.eubo_beta=1.5" in ALGORITHMS["spg"].overrides("countdown") == ALGORITHMS["spg"].overrides()
    assert load_config(None, ALGORITHMS["spg"].overrides("sudoku")).algorithm.eubo_beta == 1.0


@pytest.mark.parametrize("name,key,value", [("wd1", "beta", 0.0), ("wd1", "teacher_source", "learner"),
                                            ("gdsd", "clip_eps", 0.3), ("espo", "psi", 2.0),
                                            ("diffu_grpo", "num_mc", 2), ("gdsd", "p_mask_prompt", 0.2),
                                            ("espo", "eps_scope", "token"), ("spg", "beta", 0.0),
                                            ("gdsd", "eubo_beta", 1.0), ("espo", "mix_weight", 1.0)])
def test_a_key_the_algorithm_ignores_is_an_error_when_set(name, key, value):
    extra = ["algorithm.teacher_source=learner"] if name in TOKEN_ONLY and key != "teacher_source" else []
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"algorithm.name={name}", *extra, f"algorithm.{key}={value}"])
    assert f"algorithm.name={name} ignores algorithm.{key}; remove it" in str(err.value)
    load_config(None, [f"algorithm.name={name}", *extra])  # at its default the key is fine: it was not set


def test_an_ignored_key_set_in_yaml_is_an_error_too(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("algorithm: {name: wd1, psi: 2.0, eps: 0.001}\n")
    with pytest.raises(ConfigError, match=r"wd1 ignores algorithm.eps; remove it"):
        load_config(path)


@pytest.mark.parametrize("name", TOKEN_ONLY)
def test_per_token_algorithms_need_learner_side_targets(name):
    with pytest.raises(ConfigError, match=r"algorithm.teacher_source=rollout: .* set algorithm.teacher_source=learner"):
        load_config(None, [f"algorithm.name={name}"])
    cfg = load_config(None, [f"algorithm.name={name}", "algorithm.teacher_source=learner"])
    assert cfg.algorithm.p_mask_prompt == 0.15


def test_teacher_source_learner_needs_synchronous_mode():
    with pytest.raises(ConfigError,
                       match=r"set pipeline.max_staleness=0 \(got 1\) or algorithm.teacher_source=rollout"):
        load_config(None, ["algorithm.teacher_source=learner", "pipeline.max_staleness=1"])
    cfg = load_config(None, ["algorithm.teacher_source=rollout", "pipeline.max_staleness=1"])  # async, actor targets
    assert cfg.pipeline.max_staleness == 1


def test_p_mask_prompt_range():
    with pytest.raises(ConfigError, match=r"config key 'algorithm.p_mask_prompt': .*less than or equal to 1"):
        load_config(None, ["algorithm.p_mask_prompt=1.5"])


@pytest.mark.parametrize("overrides,ok", [
    # 1 actor, 2 prompts x 6 = 12 rows: micro-batches of 6 feed 2 ranks, of 7 rows make 2 (7 + 5), of 12 only one
    (["rollout.prompts_per_step=2", "learner.num_ranks=2", "learner.micro_batch_rows=6"], True),
    (["rollout.prompts_per_step=2", "learner.num_ranks=2", "learner.micro_batch_rows=7"], True),
    (["rollout.prompts_per_step=2", "learner.num_ranks=2", "learner.micro_batch_rows=12"], False),
    # 2 actors: 3 prompts split 1 + 2 (6 + 12 rows) -> micro-batches are pooled: 1 + 1 of 12 rows feed 2 ranks
    (["rollout.prompts_per_step=3", "rollout.num_actors=2", "learner.num_ranks=2", "learner.micro_batch_rows=12"],
     True),
    (["rollout.prompts_per_step=3", "rollout.num_actors=2", "learner.num_ranks=3", "learner.micro_batch_rows=12"],
     False),
])
def test_every_rank_gets_a_micro_batch(overrides, ok):
    if ok:
        load_config(None, overrides)
        return
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    for key in ("learner.micro_batch_rows", "learner.num_ranks", "rollout.prompts_per_step"):
        assert key in str(err.value)


def test_group_normalised_losses_need_whole_groups_per_micro_batch():
    assert load_config(None, ["algorithm.name=wd1", "learner.micro_batch_rows=12"])
    with pytest.raises(ConfigError, match=r"learner.micro_batch_rows=8 must be a multiple of rollout.group_size=6"):
        load_config(None, ["algorithm.name=wd1", "learner.micro_batch_rows=8"])


def test_replaced_keys_name_their_successor():
    for key in ("learner.grad_accum=2", "rollout.logprob_rows=4"):
        with pytest.raises(ConfigError, match=r"was replaced by learner.micro_batch_rows"):
            load_config(None, [key])


def test_rollout_teacher_targets_refuse_settings_that_cannot_match_exactly():
    """teacher_source=rollout needs the learner to rerun the actor's forwards: filtering rows out of the actors'
    chunks, or actors and learner on different device types, are refused with the reason."""
    with pytest.raises(ConfigError, match=r"filter_zero_advantage=true removes rows from the actors' row chunks"):
        load_config(None, ["learner.filter_zero_advantage=true"])
    assert load_config(None, ["learner.filter_zero_advantage=true", "algorithm.teacher_source=learner"])
    with pytest.raises(ConfigError, match=r"different device types"):
        load_config(None, ["rollout.gpus_per_actor=1"])
    assert load_config(None, ["rollout.gpus_per_actor=1", "learner.gpus_per_rank=1"])
    assert load_config(None, ["algorithm.name=wd1", "rollout.gpus_per_actor=1", "learner.micro_batch_rows=12"])


def test_more_actors_than_prompts_is_an_error():
    with pytest.raises(ConfigError, match=r"rollout.num_actors=3 > rollout.prompts_per_step=2"):
        load_config(None, ["rollout.num_actors=3", "rollout.prompts_per_step=2"])


def test_sft_batch_rules():
    with pytest.raises(ConfigError, match=r"sft.batch_size=1 < learner.num_ranks=2"):
        load_config(None, ["sft.enabled=true", "sft.batch_size=1", "learner.num_ranks=2",
                           "rollout.prompts_per_step=4"])
    with pytest.raises(ConfigError, match=r"sft.batch_size=64 > sft.num_examples=10"):
        load_config(None, ["sft.enabled=true", "sft.batch_size=64", "sft.num_examples=10"])


def test_every_violated_rule_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["algorithm.name=wd1", "algorithm.beta=0", "rollout.num_actors=9"])
    assert "ignores algorithm.beta" in str(err.value) and "rollout.num_actors=9" in str(err.value)

