"""The memory plan (deploy/plan.py) against measurement at real width, on CPU, with `--layers` blocks (default 2) and
random bf16 weights (benchmarks/gpu_model.py), at a few rows:
  --shape llada (default): LLaDA-8B's widths (hidden 4096, 32 heads, FFN 12288, vocabulary 126464, untied head) in
    configs/sudoku_llada.yaml's setting (bf16, LoRA r 128 on wq/wk/wv/w_up with dropout, activation checkpointing,
    Gumbel noise in bf16)
  --shape dream: Dream-7B's widths (hidden 3584, 28 heads / 4 kv heads, FFN 18944, vocabulary 152064, untied head,
    q/k/v bias, shifted logits) in configs/sudoku_dream.yaml's setting (bf16, LoRA r 128 on all seven projections
    with dropout, activation checkpointing, Dream's sampler with top_p / top_k)

  nice -n 10 python -m benchmarks.plan_check [--shape llada|dream] [--out docs/plan_check.json] [--layers 2]
      [--ckpt-dir DIR] [--toy]

Several GB of RAM and minutes of CPU: run it alone. Each part runs in a process of its own, one after the other
(peak RSS is per process):
  load      load_denoiser of the checkpoint in bf16 (what an actor does): peak RSS and peak anonymous RSS against the
            checkpoint's bytes (the safetensors file is memory-mapped: its pages count in RSS, not in RssAnon)
  rollout   PolicyEngine + one episode: the sampler (`sampling` lines), scores, teacher targets (`teacher` lines)
  learner   2 FSDP ranks over gloo (LearnerWorker as the LearnerGroup sets it up, without Ray): setup, one step on
            the rollout's batch, the LoRA push export and rank 0's HF export
Measured per part: RSS and RssAnon from /proc/self/status every 10 ms (peak minus the process's baseline after its
imports), and LiveBytes (benchmarks/live_bytes.py: bytes of the tensors created inside, at their peak; the CPU has no
allocator statistics). Compared with the plan's lines for the same shapes (P = the batch's prompt width). One JSON
record per comparison and a summary; ratio = plan / measured.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from common.machine import cpu_name
from benchmarks.gpu_model import DREAM_7B, LLADA_8B, TOY, TOY_DREAM, checkpoint_dir, write_checkpoint
from benchmarks.live_bytes import LiveBytes

GIB = 2**30
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# --shape: (real widths, toy widths, the run config whose setting is measured)
SHAPES = {"llada": (LLADA_8B, TOY, "sudoku_llada.yaml"), "dream": (DREAM_7B, TOY_DREAM, "sudoku_dream.yaml")}
TOP = 6  # the largest tensors live at a LiveBytes peak, recorded with the op that made each


class RssPeak:
    """Peak VmRSS / RssAnon of this process between `mark()` calls (sampled every 10 ms on a thread)."""

    def __init__(self) -> None:
        self.rss = self.anon = 0
        self._stop = False
        self.sample()
        self.base_rss, self.base_anon = self.rss, self.anon
        threading.Thread(target=self._run, daemon=True).start()

    @staticmethod
    def read() -> tuple[int, int]:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        kib = lambda k: int(fields[k].split()[0]) * 1024  # noqa: E731
        return kib("VmRSS"), kib("RssAnon")

    def sample(self) -> None:
        rss, anon = self.read()
        self.rss, self.anon = max(self.rss, rss), max(self.anon, anon)

    def _run(self) -> None:
        while not self._stop:
            self.sample()
            time.sleep(0.01)

    def mark(self) -> dict:
        """Peaks since the last mark (above the baseline), then reset to the current values."""
        self.sample()
        out = {"rss_gib": (self.rss - self.base_rss) / GIB, "rss_anon_gib": (self.anon - self.base_anon) / GIB}
        self.rss, self.anon = self.read()
        return out


def plan_for(config: str, overrides: list[str]):
    """The plan of the run's config at the checkpoint's shapes (model.path's config.json)."""
    from common.config import load_config
    from deploy.plan import build_plan, model_args

    cfg = load_config(CONFIGS / config, overrides)
    return build_plan(cfg, model_args(cfg), gpu_mem_gib=None)


def top(m: LiveBytes) -> list[list]:
    """The largest tensors live at the peak: [op that created it, GiB]."""
    return [[op, round(n / GIB, 4)] for op, n in m.at_peak]


def lines(section, phase: str | None = "all") -> dict[str, float]:
    return {x.name: x.bytes / GIB for x in section.lines if phase == "all" or x.phase == phase}


# ---- parts (each in its own process) -----------------------------------------------------------------------------
def part_load(cfg, path: str, queue) -> None:
    from common.denoiser import load_denoiser

    rss = RssPeak()  # after the imports: the baseline is the interpreter with torch and transformers loaded
    torch.set_num_threads(2)
    start = time.perf_counter()
    policy = load_denoiser(cfg.model, path, device="cpu")
    seconds = time.perf_counter() - start
    held = sum(t.numel() * t.element_size() for t in policy.net.state_dict().values())
    queue.put({"part": "load", "seconds": seconds, "params_gib": held / GIB, **rss.mark()})


def part_rollout(cfg, path: str, out: str, queue) -> None:
    from actors.engine import PolicyEngine
    from actors.episode import generate, score, teacher_targets
    from actors.advantages import leave_one_out
    from benchmarks.gpu_parts import make_prompts, score as local_score
    from common.batch import RolloutBatch
    from common.devices import make_generator
    from common.tokenize import completion_mask
    import pyarrow  # noqa: F401  (before the baseline)

    rss = RssPeak()
    torch.set_num_threads(2)
    engine = PolicyEngine(cfg, path, device=torch.device("cpu"))
    load = rss.mark()
    G = cfg.rollout.group_size
    prompts = make_prompts(cfg.rollout.prompts_per_step, 24, seed=0)
    with LiveBytes(TOP) as sampling:
        start = time.perf_counter()
        gen = generate(engine.policy, prompts, G, sampler=cfg.sampler, generator=make_generator("cpu", 1),
                       chat_template=False)
        generate_seconds = time.perf_counter() - start
    sampled = rss.mark()
    scores = score(local_score, gen)
    with LiveBytes(TOP) as teacher:
        start = time.perf_counter()
        targets = teacher_targets(cfg, engine.policy, engine.reference, gen, generator=make_generator("cpu", 2))
        teacher_seconds = time.perf_counter() - start
    taught = rss.mark()
    B = len(gen.items)
    batch = RolloutBatch(
        prompt_ids=gen.prompt_ids, prompt_len=gen.prompt_len, completion_ids=gen.completion_ids,
        completion_mask=completion_mask(gen.completion_ids, engine.policy.eos_id), reveal_step=gen.reveal_step,
        group_id=torch.arange(B, dtype=torch.int64) // G, reward=scores.reward,
        advantage=leave_one_out(scores.reward, G) + torch.linspace(-0.5, 0.5, B),  # a signal for every row
        mask_seeds=targets.mask_seeds.expand(B, -1, -1).contiguous(), mask_row=torch.arange(B),
        mask_batch_rows=torch.full((B,), B), old_logp=targets.old_logp, ref_logp=targets.ref_logp,
        policy_version=torch.zeros(B, dtype=torch.int64), prompt_uid=[it.uid for it in gen.items],
        task=[it.task for it in gen.items], text=gen.texts)
    import pyarrow as pa

    table = batch.to_arrow()
    with pa.OSFile(out, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    queue.put({"part": "rollout", "rows": B, "prompt_width": int(gen.prompt_ids.shape[1]), "load": load,
               "sampling": {**sampled, "live_gib": sampling.peak / GIB, "seconds": generate_seconds,
                            "at_peak": top(sampling)},
               "teacher": {**taught, "live_gib": teacher.peak / GIB, "seconds": teacher_seconds,
                           "at_peak": top(teacher)},
               "batch_bytes": table.nbytes, "process": {"rss_gib": (rss.rss - rss.base_rss) / GIB}})


def part_rank(rank: int, cfg, path: str, batch_file: str, export_dir: str, store: str, queue) -> None:
    import pyarrow as pa
    import torch.distributed as dist

    from learner.worker import LearnerWorker

    rss = RssPeak()
    first = rss.mark()
    worker = LearnerWorker(cfg, path, rank=rank, world_size=2)
    if rank == 0:
        host, port = worker.address("127.0.0.1")
        Path(store + ".tmp").write_text(str(port))
        os.replace(store + ".tmp", store)
    else:
        while not Path(store).is_file():
            time.sleep(0.1)
        host, port = "127.0.0.1", int(Path(store).read_text())
    start = time.perf_counter()
    worker.setup(host, port)
    setup = {**rss.mark(), "seconds": time.perf_counter() - start}
    with pa.memory_map(batch_file) as source:
        table = pa.ipc.open_file(source).read_all()
    with LiveBytes(TOP) as live:
        start = time.perf_counter()
        stats = worker.train_step(table)
        step_seconds = time.perf_counter() - start
    step = {**rss.mark(), "live_gib": live.peak / GIB, "held_after_gib": live.now / GIB, "seconds": step_seconds,
            "micro_batches": stats["micro_batches"], "grad_norm": stats["grad_norm"], "at_peak": top(live)}
    with LiveBytes(TOP) as live:
        worker.export_weights()
    push = {**rss.mark(), "live_gib": live.peak / GIB, "at_peak": top(live)}
    with LiveBytes(TOP) as live:
        worker.export_hf(export_dir)
    export = {**rss.mark(), "live_gib": live.peak / GIB, "at_peak": top(live)}
    dist.destroy_process_group()
    queue.put({"part": f"rank{rank}", "first": first, "setup": setup, "step": step, "push": push, "export": export,
               "process": {"rss_gib": (max(rss.rss, rss.read()[0]) - rss.base_rss) / GIB}})


def run(target, *args) -> list[dict]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, queue)) for a in args]
    for p in procs:
        p.start()
    results = [queue.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"{target.__name__} exited with {p.exitcode}")
    return results


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llada", help="the model's widths and run config")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--ckpt-dir", default=None)
    parser.add_argument("--toy", action="store_true", help="toy widths (a smoke run of seconds)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--recompare", default=None, help="a previous --out file: compare its measurements with the "
                        "current plan (no new run)")
    args = parser.parse_args(argv)
    if args.recompare:
        return recompare(args.recompare, args.out)
    records: list[dict] = []
    work = Path(tempfile.mkdtemp(prefix="plan_check_"))
    real, toy, config = SHAPES[args.shape]
    widths = toy if args.toy else real
    ckpt = checkpoint_dir(widths, args.layers, args.ckpt_dir or tempfile.gettempdir())
    try:
        rss = RssPeak()
        write_checkpoint(widths, args.layers, ckpt, device=torch.device("cpu"), seed=0)
        file_bytes = sum(f.stat().st_size for f in ckpt.glob("*.safetensors"))
        # the same thread count on both sides: the GEMM reduction order (and so S_old vs S_theta) depends on it
        base = [f"model.path={ckpt}", *BASE]
        from common.config import load_config

        cfg = load_config(CONFIGS / config, [*base, "rollout.gpus_per_actor=0", "learner.gpus_per_rank=0"])
        (load,) = run(part_load, (cfg, str(ckpt)))
        (rollout,) = run(part_rollout, (cfg, str(ckpt), str(work / "batch.arrow")))
        store = str(work / "port")
        ranks = sorted(run(part_rank, *[(r, cfg, str(ckpt), str(work / "batch.arrow"), str(work / "export"), store)
                                        for r in range(2)]), key=lambda x: x["part"])
        plan = plan_for(config, [*base, f"cluster.plan_prompt_tokens={rollout['prompt_width']}"])
        records += compare(plan, load, rollout, ranks, file_bytes)
        records.append({"summary": True, "shape": args.shape, "config": config, "widths": widths.__dict__,
                        "cpu": cpu_name(), "threads": torch.get_num_threads(),
                        "layers": args.layers, "checkpoint_gib": file_bytes / GIB, "writer_rss_gib": rss.mark(),
                        "raw": {"load": load, "rollout": rollout, "ranks": ranks}})
    finally:
        shutil.rmtree(ckpt, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    for r in records:
        print(json.dumps(r), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(records, indent=1))
    return records


BASE = ["model.mask_token_id=null", "model.eos_token_id=null", "model.chat_template=false", "sampler.gen_length=32",
        "sampler.block_length=32", "sampler.steps=4", "rollout.num_actors=1", "rollout.prompts_per_step=2",
        "rollout.group_size=2", "learner.num_ranks=2", "learner.micro_batch_rows=2", "algorithm.mu=1",
        "eval.num_prompts=0", "rollout.torch_threads=1", "learner.torch_threads=1"]


def recompare(path: str, out: str | None) -> list[dict]:
    """The measurements of a previous run against the current plan (the shapes from its summary record)."""
    from benchmarks.common import Widths, model_args
    from common.models import hf_config_from_args
    from common.tiny import make_tokenizer

    old = json.loads(Path(path).read_text())
    summary = old[-1]
    w = Widths(**summary["widths"])
    tok = make_tokenizer(w.vocab)
    shapes = Path(tempfile.mkdtemp(prefix="plan_check_shapes_"))
    try:
        args = model_args(w, summary["layers"], mask_id=tok.mask_token_id, eos_id=tok.eos_token_id,
                          pad_id=tok.pad_token_id)
        (shapes / "config.json").write_text(json.dumps(hf_config_from_args(args)))
        raw = summary["raw"]
        plan = plan_for(summary.get("config", "sudoku_llada.yaml"),
                        [f"model.path={shapes}", *BASE, f"cluster.plan_prompt_tokens={raw['rollout']['prompt_width']}"])
        file_bytes = summary["checkpoint_gib"] * GIB
        records = compare(plan, raw["load"], raw["rollout"], raw["ranks"], file_bytes) + [summary]
    finally:
        shutil.rmtree(shapes, ignore_errors=True)
    for r in records:
        print(json.dumps({k: v for k, v in r.items() if k != "raw"}), flush=True)
    if out:
        Path(out).write_text(json.dumps(records, indent=1))
    return records


def compare(plan, load: dict, rollout: dict, ranks: list[dict], file_bytes: int) -> list[dict]:
    """plan / measured for each line that a measurement isolates."""
    actor, learner, export = lines(plan.actor), lines(plan.learner), lines(plan.export)
    out = []

    def add(what: str, plan_gib: float, measured_gib: float, how: str) -> None:
        out.append({"what": what, "plan_gib": round(plan_gib, 3), "measured_gib": round(measured_gib, 3),
                    "ratio": round(plan_gib / measured_gib, 3) if measured_gib else None, "measured_as": how})

    add("checkpoint load (actor, bf16)", actor["weights"], load["rss_anon_gib"], "RssAnon peak - baseline")
    add("checkpoint load: file pages mapped", file_bytes / GIB, load["rss_gib"] - load["rss_anon_gib"],
        "RSS - RssAnon at the peak (page cache, reclaimable)")
    add("actor weights", actor["weights"], rollout["load"]["rss_anon_gib"], "RssAnon after PolicyEngine()")
    add("sampling (max of forward, logits + draw)", max(actor["sampling forward"], actor["sampling logits + draw"]),
        rollout["sampling"]["live_gib"], "LiveBytes peak of generate()")
    add("teacher (max of forward, head chunk)", max(actor["teacher forward"], actor["teacher head chunk"]),
        rollout["teacher"]["live_gib"], "LiveBytes peak of teacher_targets() (logsumexp's internal exp buffer "
        "included)")
    add("actor process peak", plan.actor.peak()[0] / GIB, rollout["process"]["rss_gib"],
        "peak RSS - baseline (weights + the largest phase)")
    for r in ranks:
        name = r["part"]
        loaded = learner["load (before sharding)"] + learner["base shard"] + learner["LoRA params + grads + AdamW"] / 4
        add(f"{name} load + shard", loaded, r["setup"]["rss_anon_gib"],
            "RssAnon peak during setup (whole model, then shards)")
        # the step's moments: the root's all-gather (before any activation), or the activations + the head chunk;
        # grads + AdamW state appear in the step
        step_plan = (learner["all-gather buffers"] + learner["LoRA params + grads + AdamW"] * 0.75
                     + max(learner.get("root all-gather", 0.0),
                           learner["activations (micro-batch)"] + learner["head chunk"]))
        add(f"{name} step (gather + activations + head + grads/AdamW)", step_plan, r["step"]["live_gib"],
            "LiveBytes peak of train_step()")
    add("rank0 push export (host)", export["push (adapters)"], ranks[0]["push"]["live_gib"],
        "LiveBytes peak of export_weights()")
    add("rank0 HF export (host)", export["HF export"], ranks[0]["export"]["live_gib"],
        "LiveBytes peak of export_hf()")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
