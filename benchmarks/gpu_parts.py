"""The component checks of benchmarks/gpu_check.py: the real services, in-process, without Ray, on one device.

Each method is one check and returns its JSON record ("pass" plus numbers); a check whose prerequisite failed raises
`Skipped`. In order (each uses what the previous ones left):
  rollout          PolicyEngine on the device, run_episode at T = 1 (Gumbel noise in the model dtype) on left-padded
                   prompts of different lengths (the padding-mask SDPA path), a local score function, teacher targets
  learner_step     LearnerWorker, world size 1, on that batch: FSDP2, its process group "cpu:gloo,<device>:nccl",
                   the real all-reduce of the step's metrics
  teacher_gap_v0   the actor's S_old vs the learner's first S_theta at version 0 (adapters B = 0): exactly 0
  weight_push      the learner's LoRA export loaded by the engine (the object-store push of the LoRA configs),
                   bit for bit
  teacher_gap      a second episode with the pushed (non-zero) adapters, a second learner step: the gap is exactly 0
                   although the adapters change S (|S_old - S_ref| > 0), so the clamp stays open
  weight_bus       the learner (device) as bus sender and a PolicyEngine on the CPU as receiver, threads of one
                   process: both derive gloo, the pushed adapters and a bucket of device tensors arrive bit for bit
  eval_bounded     an evaluation batch at the real vocabulary on Dream's schedule (logits at every masked position)
                   in row chunks within sampler.logits_budget_mb: no OOM, peak memory against the budget
"""
from __future__ import annotations

import gc
import math
import random
import threading
import time
import zlib
from pathlib import Path

import torch
import torch.distributed as dist

from actors.engine import PolicyEngine
from actors.episode import evaluate, run_episode
from actors.sampling import rows_per_call
from common.config import RunConfig, SamplerConfig
from common.denoiser import DTYPES
from common.devices import make_generator
from common.messages import PromptItem, RewardResult
from common.summary import RewardMetrics
from common.models.lora import is_adapter
from common.weight_bus import wire_format
from learner.worker import LearnerWorker

CHARS = "0123456789abcdefghijklmnopqrstuvwxyz "
NCCL_NOTE = ("an all-NCCL bus needs 2 GPUs (NCCL cannot put two ranks on one GPU): here the device sender and a CPU "
             "receiver must agree on gloo, as a learner on a GPU and an actor on a CPU would")


class Skipped(RuntimeError):
    """A check whose prerequisite failed (named in the message)."""


def make_prompts(n: int, max_len: int, seed: int) -> list[PromptItem]:
    """n prompts of different lengths (max_len / 2 .. max_len characters = tokens of the char tokenizer), so the
    batch is left-padded."""
    rng = random.Random(seed)
    lengths = [max(1, max_len - (i * max_len) // (2 * max(1, n - 1))) for i in range(n)]
    return [PromptItem(uid=f"p{i}", task="sudoku", prompt="".join(rng.choice(CHARS) for _ in range(k)), meta={})
            for i, k in enumerate(lengths)]


def score(texts: list[str], metas: list[dict], tasks: list[str]) -> tuple[list[RewardResult], RewardMetrics]:
    """A plain local score function (no reward service): a pure function of the text with variance in each group,
    so every GDSD term has a gradient."""
    results = [RewardResult(total=(zlib.crc32(t.encode()) % 5) / 4) for t in texts]
    return results, RewardMetrics(rows=len(results), reward_sum=sum(r.total for r in results))


def sync(device: torch.device) -> None:
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def on_device(module: torch.nn.Module, device: torch.device) -> bool:
    return all(p.device.type == device.type for p in module.parameters())


def adapter_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA tensors of `module`, copied (a state dict aliases the parameters, which a later load overwrites)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items() if is_adapter(k)}


def start_learner(cfg: RunConfig, path: Path) -> tuple[LearnerWorker, tuple[str, int]]:
    """A LearnerWorker at world size 1 as the LearnerGroup sets it up, without Ray (rendezvous on loopback).
    Returns it and its store's address (where actors join the weight bus)."""
    worker = LearnerWorker(cfg, str(path), rank=0, world_size=1)
    host, port = worker.address("127.0.0.1")
    worker.setup(host, port)
    return worker, (host, port)


def stop_learner(worker: LearnerWorker | None) -> None:
    """Close the worker's bus and rendezvous socket and the process group (also after a failed setup: worker None)."""
    if worker is not None and worker.bus is not None:
        worker.bus.close()
    if dist.is_initialized():
        dist.destroy_process_group()
    if worker is not None:
        worker._listen.close()


class ComponentChecks:
    def __init__(self, cfg: RunConfig, path: Path, device: torch.device, *, eval_prompts: int, eval_steps: int,
                 eval_budget_mb: float | None, prompt_len: int, seed: int = 0) -> None:
        self.cfg, self.path, self.device, self.seed = cfg, path, device, seed
        self.eval_prompts, self.eval_steps, self.eval_budget_mb = eval_prompts, eval_steps, eval_budget_mb
        self.prompt_len = prompt_len
        self.engine: PolicyEngine | None = None
        self.worker: LearnerWorker | None = None
        self.address: tuple[str, int] | None = None
        self.batches: list = []
        self.stats: list[dict] = []
        self.pushed: dict[str, torch.Tensor] | None = None

    def _episode(self, seed: int):
        engine, cfg = self.engine, self.cfg
        sample_rng = make_generator(self.device, seed)  # noise is drawn where the logits are
        seed_rng = make_generator("cpu", seed + 1)  # mask seeds: CPU (masks are a pure function of the seed)
        prompts = make_prompts(cfg.rollout.prompts_per_step, self.prompt_len, seed)
        return run_episode(prompts, cfg=cfg, policy=engine.policy, reference=engine.reference, score_fn=score,
                           group_size=cfg.rollout.group_size, group_offset=0, version=engine.version,
                           sample_rng=sample_rng, seed_rng=seed_rng)

    def rollout(self) -> dict:
        start = time.perf_counter()
        self.engine = engine = PolicyEngine(self.cfg, str(self.path), device=self.device)
        load_seconds = time.perf_counter() - start
        batch, summary = self._episode(self.seed + 10)
        self.batches.append(batch)
        G = self.cfg.rollout.group_size
        groups = batch.completion_ids.view(-1, G, batch.completion_ids.shape[1])
        varied = sum(int(len({tuple(r.tolist()) for r in g}) > 1) for g in groups)
        lengths = sorted(set(batch.prompt_len.tolist()))
        ok = {"engine_on_device": on_device(engine.policy.model, self.device),
              "prompts_left_padded": len(lengths) > 1 and batch.prompt_ids.shape[1] == max(lengths),
              "no_mask_left": bool((batch.completion_ids != engine.policy.mask_id).all()),
              "targets_finite": bool(torch.isfinite(batch.old_logp).all() and torch.isfinite(batch.ref_logp).all()),
              "groups_vary_at_t1": varied == groups.shape[0]}
        return {"pass": all(ok.values()), **ok, "rows": batch.num_rows, "prompt_lengths": lengths,
                "gen": self.cfg.sampler.gen_length, "steps": self.cfg.sampler.steps,
                "temperature": self.cfg.sampler.temperature, "gumbel_dtype": self.cfg.sampler.gumbel_dtype,
                "dtype": self.cfg.model.dtype, "lora_r": self.cfg.model.lora.r,
                "lora_targets": list(self.cfg.model.lora.target_modules), "load_seconds": load_seconds,
                "generate_seconds": summary.generate_seconds, "teacher_seconds": summary.teacher_seconds,
                "tokens_per_s": summary.tokens_per_second, "forwards": summary.forwards}

    def learner_step(self) -> dict:
        if not self.batches:
            raise Skipped("needs the rollout check's batch")
        start = time.perf_counter()
        self.worker, self.address = start_learner(self.cfg, self.path)
        worker = self.worker
        setup_seconds = time.perf_counter() - start
        backend = dist.get_backend_config()
        start = time.perf_counter()
        stats = worker.train_step(self.batches[0].to_arrow())
        sync(self.device)
        self.stats.append(stats)
        rows, micro = self.batches[0].num_rows, self.cfg.learner.micro_batch_rows
        want = "gloo" if self.device.type == "cpu" else f"{self.device.type}:nccl"
        loss = [v for k, vs in stats.items() if k.startswith("loss") for v in vs]
        ok = {"backend_per_device_type": want in backend.replace(" ", ""),
              "learner_on_device": worker.device.type == self.device.type
              and on_device(worker.denoiser.net, self.device),
              "metrics_finite": all(math.isfinite(v) for v in loss + stats["grad_norm"]),
              "gradient_flows": stats["grad_norm"][0] > 0,
              "micro_batches_are_actor_chunks": stats["micro_batches"] == math.ceil(rows / micro)}
        return {"pass": all(ok.values()), **ok, "backend": backend, "rows": rows, "micro_batch_rows": micro,
                "micro_batches": stats["micro_batches"], "mu": self.cfg.algorithm.mu, "grad_norm": stats["grad_norm"],
                "loss": {k: v for k, v in stats.items() if k.startswith("loss")}, "setup_seconds": setup_seconds,
                "step_seconds": time.perf_counter() - start}

    def _gap(self, stats: dict, batch) -> dict:
        eps = self.cfg.algorithm.eps
        effect = float((batch.old_logp[:, 0] - batch.ref_logp[:, 0]).abs().max())
        return {"teacher_gap_max": stats["teacher_gap_max"], "clamp_frac_first": stats["clamp_frac"][0],
                "clamp_frac": stats["clamp_frac"], "eps": eps, "band": [math.log1p(-eps), math.log1p(eps)],
                "adapter_effect_max": effect, "s_old_mean": float(batch.old_logp[:, 0].mean()),
                "dtype": self.cfg.model.dtype, "micro_batch_rows": self.cfg.learner.micro_batch_rows}

    def teacher_gap_v0(self) -> dict:
        if not self.stats:
            raise Skipped("needs the learner_step check")
        out = self._gap(self.stats[0], self.batches[0])
        return {"pass": out["teacher_gap_max"] == 0.0 and out["clamp_frac_first"] == 0.0, **out,
                "note": "version 0: LoRA B = 0, so this pins dtype, RoPE tables, row chunks and padding, not dropout"}

    def weight_push(self) -> dict:
        if self.worker is None or self.engine is None or not self.stats:
            raise Skipped("needs the rollout and learner_step checks")
        state, version = self.worker.export_weights()
        self.engine.load(state, version)
        self.pushed = state
        got = adapter_state(self.engine.policy.model)
        exact = set(got) == set(state) and all(torch.equal(got[k].cpu(), v) for k, v in state.items())
        moved = sum(int(v.count_nonzero()) for k, v in state.items() if k.endswith("lora_B"))
        return {"pass": exact and moved > 0, "bit_exact": exact, "tensors": len(state), "version": version,
                "bytes": sum(v.numel() * v.element_size() for v in state.values()), "lora_B_nonzero": moved}

    def teacher_gap(self) -> dict:
        if self.pushed is None:
            raise Skipped("needs the weight_push check")
        batch, _ = self._episode(self.seed + 20)
        self.batches.append(batch)
        stats = self.worker.train_step(batch.to_arrow())
        self.stats.append(stats)
        out = self._gap(stats, batch)
        ok = out["teacher_gap_max"] == 0.0 and out["clamp_frac_first"] == 0.0 and out["adapter_effect_max"] > 0
        return {"pass": ok, "version": int(batch.policy_version[0]), **out}

    def weight_bus(self) -> dict:
        if self.worker is None or self.engine is None:
            raise Skipped("needs the rollout and learner_step checks")
        worker = self.worker
        receiver = PolicyEngine(self.cfg, str(self.path), device=torch.device("cpu"), name="cpu-receiver")
        # a bucket of tensors that live on the device: the device engine's adapters, in the wire format
        device_state = wire_format(adapter_state(self.engine.policy.model), DTYPES[self.cfg.model.dtype])
        errors: list[BaseException] = []
        sent: dict = {}

        def sender() -> None:  # learner rank 0: the bus's rank 0
            try:
                if self.device.type != "cpu":
                    torch.accelerator.set_device_index(self.device.index or 0)
                worker.join_weight_bus(0, 2)
                sent["version"], sent["bytes"] = worker.broadcast_weights()
                sent["device_bytes"] = worker.bus.send(device_state, 1000 + sent["version"])
            except BaseException as err:  # reported by the main thread
                errors.append(err)

        thread = threading.Thread(target=sender, daemon=True)
        thread.start()
        start = time.perf_counter()
        receiver.join_bus(self.address, 1, 2, 0, sender_signature=worker.weight_signature())
        first = receiver.load_staged(receiver.receive())
        pushed = adapter_state(receiver.policy.model)
        second = receiver.load_staged(receiver.receive())
        thread.join(timeout=self.cfg.pipeline.weight_sync_timeout_s)
        seconds = time.perf_counter() - start
        if errors:
            raise errors[0]
        expected = worker.export_weights()[0]  # what broadcast_weights sent (the learner has not stepped since)
        exact_push = set(pushed) == set(expected) and all(torch.equal(pushed[k], v) for k, v in expected.items())
        got = adapter_state(receiver.policy.model)
        exact_device = all(torch.equal(got[k], v.cpu()) for k, v in device_state.items())
        backends = {"sender": worker.bus.backend, "receiver": receiver.bus.backend}
        receiver.bus.close()
        ok = {"agree_on_gloo": set(backends.values()) == {"gloo"}, "push_bit_exact": exact_push,
              "device_tensors_bit_exact": exact_device, "sender_on_device": worker.denoiser.device.type ==
              self.device.type, "device_tensors_on_device": all(v.device.type == self.device.type
                                                               for v in device_state.values())}
        return {"pass": all(ok.values()), **ok, "backends": backends, "versions": [first, second],
                "bytes": sent.get("bytes"), "device_bytes": sent.get("device_bytes"), "seconds": seconds,
                "note": NCCL_NOTE}

    def eval_bounded(self) -> dict:
        if self.engine is None:
            raise Skipped("needs the rollout check's engine")
        policy = self.engine.policy
        budget = self.eval_budget_mb or self.cfg.sampler.logits_budget_mb
        # the official evaluation's settings (deploy/evaluate.py::eval_sampler: temperature 0) on Dream's schedule,
        # where every masked position of the completion gets logits at every step
        sampler = SamplerConfig(gen_length=self.cfg.sampler.gen_length, steps=self.eval_steps, temperature=0.0,
                                schedule="dream", remasking="entropy", logits_budget_mb=budget)
        vocab = policy.model.args.vocab_size
        dtype = next(policy.model.parameters()).dtype
        rows = rows_per_call(sampler, vocab_size=vocab, dtype=dtype)
        largest: list[int] = []
        hook = policy.net.head.register_forward_hook(lambda m, i, out: largest.append(out.numel()))
        free_memory(self.device)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        resident = torch.cuda.memory_allocated(self.device) if cuda else None
        start = time.perf_counter()
        try:
            out = evaluate(policy, make_prompts(self.eval_prompts, self.prompt_len, self.seed + 30), sampler=sampler,
                           score_fn=score, generator=make_generator(self.device, self.seed + 31), chat_template=False)
        finally:
            hook.remove()
        sync(self.device)
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(self.device) if cuda else None
        budget_bytes = budget * 2**20
        logits_bytes = max(largest) * torch.empty((), dtype=dtype, device="meta").element_size()
        ok = {"all_rows_returned": len(out) == self.eval_prompts,
              "split_in_row_chunks": math.ceil(self.eval_prompts / rows) > 1,
              "logits_within_budget": logits_bytes <= budget_bytes}
        record = {"pass": all(ok.values()), **ok, "prompts": self.eval_prompts, "gen": sampler.gen_length,
                  "steps": sampler.steps, "vocab": vocab, "rows_per_call": rows,
                  "chunks": math.ceil(self.eval_prompts / rows), "budget_gib": budget_bytes / 2**30,
                  "largest_logits_gib": logits_bytes / 2**30, "seconds": seconds}
        if cuda:  # everything above the models: logits, the draw's float32 copies, activations
            record.update(resident_gib=resident / 2**30, peak_gib=peak / 2**30,
                          peak_above_resident_gib=(peak - resident) / 2**30,
                          peak_above_resident_over_budget=(peak - resident) / budget_bytes,
                          device_total_gib=torch.cuda.get_device_properties(self.device).total_memory / 2**30)
        return record

    def close(self) -> None:
        stop_learner(self.worker)
        self.worker = self.engine = None
        self.batches, self.pushed = [], None
        free_memory(self.device)
