"""The GPU path of the real services, run on the simulated accelerator (tests/simulated_device.py) in a process of its
own: rollout actor, sampler at temperature 1 with padded prompts (both schedules), teacher targets with LoRA dropout,
bounded evaluation batches, the weight bus between a CPU and a device member, one learner step and one SFT step
under FSDP2, and the bf16 teacher gap through the configs' path.

    python tests/simulated_device_checks.py [CHECK ...]     # one JSON line per check: {"check", "ok", "error"}

tests/test_simulated_device.py runs it and turns each line into a test. A check fails on any tensor, generator or
collective on the wrong device, exactly where a GPU run would.
"""
from __future__ import annotations

import json
import socket
import sys
import tempfile
import threading
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root (run as a script)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cluster  # noqa: E402

cluster.local_env()  # gloo over loopback

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import simulated_device as sim  # noqa: E402  (registers the device type)
from common.config import TinyModelConfig, load_config  # noqa: E402
from common.messages import PromptItem, RewardResult  # noqa: E402
from common.summary import RewardMetrics  # noqa: E402
from common.tiny import make_tiny_model  # noqa: E402

CHECKS = {}
BASE = ["sampler.gen_length=16", "sampler.steps=8", "sampler.block_length=8", "algorithm.mu=2",
        "rollout.gpus_per_actor=1", "learner.gpus_per_rank=1", "learner.micro_batch_rows=4", "learner.lr=1e-3"]
LORA = ["model.lora.enabled=true", "model.lora.r=4", "model.lora.alpha=8", "model.lora.dropout=0.1"]


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


def prompts(n: int) -> list[PromptItem]:
    """Prompts of different lengths: the batch is left-padded (the padding-mask SDPA path of real rollouts)."""
    return [PromptItem(uid=f"p{i}", task="sudoku", prompt="1234"[: 1 + i % 4] * (1 + i), meta={}) for i in range(n)]


def score(texts, metas, tasks):
    """Rewards with variance inside each group (a pure function of the row), so every loss term has a gradient."""
    return [RewardResult(total=float((i * 7) % 5) / 4) for i in range(len(texts))], RewardMetrics()


def episode(cfg, engine, generator, seed_rng):
    from actors.episode import run_episode

    return run_episode(prompts(3), cfg=cfg, policy=engine.policy, reference=engine.reference, score_fn=score,
                       group_size=2, group_offset=0, version=engine.version, sample_rng=generator,
                       seed_rng=seed_rng)[0]


def assert_on_device(module: torch.nn.Module, what: str) -> None:
    wrong = [n for n, p in module.named_parameters() if p.device.type != sim.TYPE]
    assert not wrong, f"{what}: parameters not on {sim.TYPE}: {wrong[:3]}"


def learner(cfg, model):
    from learner.worker import LearnerWorker

    worker = LearnerWorker(cfg, model, rank=0, world_size=1)
    host, port = worker.address("127.0.0.1")
    worker.setup(host, port)
    return worker


@check
def rollout_actor_places_engine_and_noise(model):
    """Defects 1 and 3 of issue 20: the actor's model and its sampling generator live on the device it was given."""
    from actors.rollout import RolloutActor

    actor = RolloutActor(load_config(None, BASE), model, reward_pool=object())
    assert_on_device(actor.engine.policy.model, "rollout policy")
    assert actor.sample_rng.device.type == sim.TYPE, f"sampling noise generator on {actor.sample_rng.device}"


@check
def sampling_noise_drawn_on_the_device(model):
    """Defect 3: the actor's noise generator draws Gumbel noise for logits on the device (a CPU generator raises)."""
    from actors.episode import generate
    from actors.rollout import RolloutActor
    from common.denoiser import load_denoiser

    cfg = load_config(None, BASE + ["sampler.temperature=1.0"])
    actor = RolloutActor(cfg, model, reward_pool=object())
    policy = load_denoiser(cfg.model, model, device=sim.DEVICE)
    out = generate(policy, prompts(2), 2, sampler=cfg.sampler, generator=actor.sample_rng, chat_template=False)
    assert out.completion_ids.shape == (4, cfg.sampler.gen_length)


@check
def rollout_at_temperature_one_both_schedules(model):
    """Sampling at T = 1 (Gumbel noise; Dream: top_p + multinomial) with left-padded prompts, then teacher targets
    with LoRA dropout, all on the device."""
    from actors.rollout import RolloutActor

    for schedule in (["sampler.schedule=blocks"], ["sampler.schedule=dream", "sampler.remasking=entropy",
                                                   "sampler.top_p=0.95"]):
        cfg = load_config(None, BASE + LORA + schedule + ["sampler.temperature=1.0"])
        actor = RolloutActor(cfg, model, reward_pool=object())
        batch = episode(cfg, actor.engine, actor.sample_rng, actor.seed_rng)
        assert batch.prompt_len.unique().numel() > 1, "prompts were not padded"
        assert torch.isfinite(batch.old_logp).all() and torch.isfinite(batch.ref_logp).all()
        assert (batch.completion_ids != actor.engine.policy.mask_id).all()


@check
def evaluation_in_bounded_row_chunks(model):
    """Defect 5: an evaluation batch is generated in row chunks whose logits fit sampler.logits_budget_mb."""
    from actors.episode import evaluate
    from actors.rollout import RolloutActor
    from actors.sampling import rows_per_call
    from deploy.evaluate import eval_sampler

    cfg = load_config(None, BASE + ["sampler.logits_budget_mb=0.01"])
    actor = RolloutActor(cfg, model, reward_pool=object())
    sampler = eval_sampler(cfg)
    vocab = actor.engine.policy.model.args.vocab_size
    rows = rows_per_call(sampler, vocab_size=vocab, dtype=torch.float32)
    largest = []
    hook = actor.engine.policy.net.head.register_forward_hook(lambda m, i, out: largest.append(out.numel()))
    out = evaluate(actor.engine.policy, prompts(9), sampler=sampler, score_fn=score, generator=actor.sample_rng,
                   chat_template=False)
    hook.remove()
    assert 1 <= rows < 9 and len(out) == 9
    assert max(largest) * 4 <= cfg.sampler.logits_budget_mb * 2**20, (max(largest), rows)


@check
def weight_bus_between_cpu_and_device_members(model):
    """Defect 4: a learner on the CPU and an actor on the device agree on one backend (gloo) and the pushed weights
    arrive in the actor's model on its device."""
    from actors.engine import PolicyEngine
    from common.denoiser import DTYPES, load_denoiser
    from common.weight_bus import WeightBus, signature, wire_format

    cfg = load_config(None, BASE + ["pipeline.weight_sync=broadcast"])
    source = load_denoiser(cfg.model, model, device="cpu")
    with torch.no_grad():
        for p in source.net.parameters():
            p.add_(0.5)
    state = wire_format(source.net.state_dict(), DTYPES[cfg.model.dtype])
    store = dist.TCPStore("127.0.0.1", 0, 2, True, wait_for_workers=False)
    port = store.port
    errors, buses = [], {}

    def sender():
        try:
            client = dist.TCPStore("127.0.0.1", port, 2, False)
            bus = WeightBus.join(client, cfg.pipeline, rank=0, world_size=2, generation=0, device=torch.device("cpu"))
            buses["sender"] = bus
            bus.send(state, 3)
        except Exception as err:  # reported by the main thread
            errors.append(err)

    thread = threading.Thread(target=sender)
    with sim.simulated_accelerator():
        engine = PolicyEngine(cfg, model, device=sim.DEVICE)
        thread.start()
        engine.join_bus(("127.0.0.1", port), 1, 2, 0, sender_signature=signature(state))
        version = engine.receive()
        thread.join()
        assert not errors, errors
        assert engine.bus.backend == buses["sender"].backend == "gloo"
        engine.load_staged(version)
        got = engine.policy.net.state_dict()
        for name, value in state.items():
            assert got[name].device.type == sim.TYPE, name
            assert torch.equal(got[name].cpu(), value), name


def run_learner_step(model, extra):
    """An actor episode on the device, then one learner step (FSDP2, world size 1) on the device: its metrics."""
    from actors.rollout import RolloutActor

    cfg = load_config(None, BASE + extra)
    actor = RolloutActor(cfg, model, reward_pool=object())
    batch = episode(cfg, actor.engine, actor.sample_rng, actor.seed_rng)
    worker = learner(cfg, model)
    try:
        assert_on_device(worker.denoiser.net, "learner")
        stats = worker.train_step(batch.to_arrow())
        signature = worker.weight_signature()
        pushed = worker.export_weights()[0]
    finally:
        dist.destroy_process_group()
    from common.weight_bus import signature as sign

    assert signature == sign(actor.engine.wire_like()), "the learner's weight signature differs from the actor's"
    assert sign(pushed) == signature
    return stats


@check
def learner_step_on_the_device(model):
    """Defect 2: a learner rank on the device (LoRA, fp32) runs a GDSD step; every reduction happens where its
    tensors are; S_old from the actor equals the learner's first S_theta."""
    stats = run_learner_step(model, LORA)
    assert stats["teacher_gap_max"] == 0.0 and stats["clamp_frac"][0] == 0.0, stats
    assert all(v == v for v in stats["grad_norm"]) and stats["grad_norm"][0] > 0


@check
def sandwich_and_token_paths_on_the_device(model):
    """SPG's SandwichPath (EUBO + ELBO, no teacher) and the per-token TokenPath (diffu-GRPO, learner-side targets)
    run their step where the rank's tensors are, as the sequence path does."""
    for extra in (["algorithm.name=spg"], ["algorithm.name=diffu_grpo", "algorithm.teacher_source=learner"]):
        stats = run_learner_step(model, LORA + extra)
        assert all(v == v for v in stats["grad_norm"]) and stats["grad_norm"][0] > 0, (extra, stats)


@check
def bf16_teacher_gap_is_zero(model):
    """Defect 6: in bf16 with LoRA, the actor's S_old and the learner's first S_theta (FSDP, no input cast) agree
    exactly, so GDSD's clamp stays open."""
    stats = run_learner_step(model, LORA + ["model.dtype=bfloat16"])
    assert stats["teacher_gap_max"] == 0.0 and stats["clamp_frac"][0] == 0.0, stats


@check
def sft_step_on_the_device(model):
    """The SFT warm start's step reduces its loss on the device too."""
    cfg = load_config(None, BASE)
    worker = learner(cfg, model)
    try:
        out = worker.sft_step(["12", "123"], ["1", "2"])
    finally:
        dist.destroy_process_group()
    assert out["loss"] > 0 and out["tokens"] > 0


def main(names: list[str]) -> None:
    tmp = Path(tempfile.mkdtemp())
    model = str(make_tiny_model(TinyModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                                                max_positions=256, seed=0), tmp / "model"))
    for name in names or list(CHECKS):
        try:
            if name == "weight_bus_between_cpu_and_device_members":  # enters the simulation itself (threads)
                CHECKS[name](model)
            else:
                with sim.simulated_accelerator():
                    CHECKS[name](model)
            result = {"check": name, "ok": True, "error": None}
        except Exception as err:  # one line per check, whatever happened
            result = {"check": name, "ok": False, "error": f"{type(err).__name__}: {err}",
                      "trace": traceback.format_exc()[-3000:]}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    socket.setdefaulttimeout(120)
    main(sys.argv[1:])
