"""The prepared device check: the real services (PolicyEngine, run_episode, LearnerWorker, the weight bus, the
evaluation path) on one GPU, in one process, without Ray; one JSON line per check, then a summary line.

  python -m benchmarks.gpu_check                # one H200, about 4 min (budget below), exit status 1 if a check fails
  python -m benchmarks.gpu_check --cpu-small    # the same checks on CPU at a toy shape (tests/benchmarks run it)

Needs torch, transformers, tokenizers, safetensors, pyarrow, numpy, pyyaml and pydantic; never imports ray. The GPU
image lacks pydantic: `make gpu-check-wheels` writes it and its dependencies as wheels to .whl/, and on the device
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \
      PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 -m benchmarks.gpu_check
(without pip, unzipping the wheels into /tmp/site does the same: they hold no install scripts).

Component checks (benchmarks/gpu_parts.py), on a checkpoint written on the fly with LLaDA-8B's real widths (hidden
4096, 32 heads, FFN 12288, vocabulary 126464, untied head), `--layers` blocks, random bf16 weights, loaded through
`load_denoiser` like a real checkpoint; run config = configs/sudoku_llada.yaml (bf16, LoRA r 128, T = 1, Gumbel
noise in the model dtype, teacher_source rollout, micro-batches of 6 rows) on one actor and one learner rank:
rollout, learner_step, teacher_gap_v0, weight_push, teacher_gap, weight_bus, eval_bounded (what each proves: the
docstring of gpu_parts.py). Throughput checks (benchmarks/gpu_speed.py), on a second checkpoint at
`--throughput-layers` (32: LLaDA-8B itself): rollout_throughput (tokens/s and MFU of the generate stage vs the naive
LLaDA loop) and learner_throughput (s/step and MFU after a warm-up step).

Time budget on one H200 (defaults; 989 TFLOP/s dense bf16 spec, assumed 300-500 achieved; disk or /dev/shm at
>= 1 GB/s):
  start-up (imports, CUDA context, GEMM peak)                                            ~15 s
  components, 2 layers (2.9 GB checkpoint; 18 rows x 384 tokens x 64 steps = 0.4 PFLOP rollout; two learner steps
    of mu 2; three model loads; Dream evaluation of 256 prompts x 256 tokens x 8 steps in 4 row chunks:
    32 forwards, ~1 PFLOP + ~50 GB of float32 logits traffic each)                       ~45 s
  32-layer checkpoint: 8.0 B params, 14.9 GiB written then loaded twice (page cache)     ~40 s
  rollout_throughput: 66 rows x 384 tokens x 64 forwards x 14.5 GFLOP/token = 24 PFLOP   ~50-80 s
    + warm-up ~2 s, teacher stage 2 x 132 rows x 384 tokens x 14.8 GFLOP = 1.5 PFLOP     ~5 s
    + naive 2 rows x 64 steps x ~350 tokens x 15.8 GFLOP = 0.7 PFLOP at low utilisation  ~5 s
  learner_throughput: 3 steps (1 warm-up + 2 timed) x 11 micro-batches of 6 rows;
    counted 1.5 PFLOP/step (forward + input-gradient backward), 2.25 with the recompute  ~15-25 s
  total                                                                                  ~3-4 min (limit 8)
To shrink: --throughput-layers 16 halves the largest parts, --batch 32 halves the rollout and learner, --steps 32
halves the rollout; --throughput-layers 0 skips throughput.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import shutil
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from benchmarks.common import Widths, gemm_peak
from benchmarks.gpu_model import LLADA_8B, TOY, RunShape, checkpoint_dir, param_count, run_config, write_checkpoint
from benchmarks.gpu_parts import ComponentChecks, Skipped, free_memory
from benchmarks.gpu_speed import SPEC_PEAK, learner_throughput, rollout_throughput
from common import cluster

COMPONENT_CHECKS = ["rollout", "learner_step", "teacher_gap_v0", "weight_push", "teacher_gap", "weight_bus",
                    "eval_bounded"]


class Report:
    """Runs checks, prints one JSON line each ({"check", "pass", numbers} or {"check", "pass": false, "error"}),
    and keeps them for the summary. A failing check never stops the others."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.records: list[dict] = []

    def run(self, name: str, fn: Callable[[], dict]) -> dict:
        start = time.perf_counter()
        try:
            record = {"check": name, **fn()}
        except Skipped as err:
            record = {"check": name, "pass": False, "error": f"skipped: {err}"}
        except Exception as err:  # OOM included: report it, free what we can, go on
            record = self.failure(name, err)
        free_memory(self.device)  # what a failed check's frames held is garbage now
        record["check_seconds"] = round(time.perf_counter() - start, 3)
        return self.emit(record)

    @staticmethod
    def failure(name: str, err: BaseException) -> dict:
        return {"check": name, "pass": False, "error": f"{type(err).__name__}: {err}"[:2000],
                "trace": traceback.format_exc()[-3000:]}

    def emit(self, record: dict) -> dict:
        self.records.append(record)
        print(json.dumps(record, default=str), flush=True)
        return record

    def summary(self, seconds: float) -> dict:
        failed = [r["check"] for r in self.records if not r.get("pass")]
        record = {"check": "summary", "pass": not failed, "checks": len(self.records), "failed": failed,
                  "seconds": round(seconds, 1)}
        self.records.append(record)
        print(json.dumps(record), flush=True)
        return record


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-small", action="store_true", help="CPU, toy shape (the test of this script)")
    parser.add_argument("--layers", type=int, default=None, help="blocks of the component checks' model (2)")
    parser.add_argument("--throughput-layers", type=int, default=None, help="blocks of the throughput model (32; "
                        "0 = skip the throughput checks)")
    parser.add_argument("--batch", type=int, default=None, help="throughput rollout rows, rounded up to whole "
                        "groups of the config's group size 6 (64 -> 66)")
    parser.add_argument("--steps", type=int, default=None, help="throughput diffusion steps (64, the config's)")
    parser.add_argument("--naive-rows", type=int, default=None, help="rows of the naive reference (2)")
    parser.add_argument("--learner-steps", type=int, default=None, help="timed learner steps after the warm-up (2)")
    parser.add_argument("--eval-prompts", type=int, default=None, help="prompts of the bounded evaluation (256)")
    parser.add_argument("--eval-steps", type=int, default=None, help="Dream steps of the evaluation (8)")
    parser.add_argument("--ckpt-dir", default=None, help="where to write the checkpoints (default /dev/shm when it "
                        "has room, else the temp directory); removed at the end")
    args = parser.parse_args(argv)
    small = args.cpu_small
    defaults = {"layers": 2, "throughput_layers": 2 if small else 32, "batch": 12 if small else 64,
                "steps": 8 if small else 64, "naive_rows": 1 if small else 2, "learner_steps": 2,
                "eval_prompts": 9 if small else 256, "eval_steps": 4 if small else 8}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse(argv)
    cluster.local_env()  # gloo over loopback (GLOO_SOCKET_IFNAME); nothing here imports ray
    if not args.cpu_small and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (use --cpu-small on CPU)")
    device = torch.device("cpu") if args.cpu_small else torch.device("cuda", torch.cuda.current_device())
    widths: Widths = TOY if args.cpu_small else LLADA_8B
    # toy: gen 16 in blocks of 8, prompts up to 12 tokens, LoRA r 8; GPU: the config's gen 256, block 32, prompts
    # up to 128 tokens (left-padded), LoRA r 128
    gen, block, prompt_len = (16, 8, 12) if args.cpu_small else (256, 32, 128)
    lora_r = 8 if args.cpu_small else None
    threads = torch.get_num_threads()
    start = time.perf_counter()
    report = Report(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = {"gemm": float("nan"), "spec": next((v for k, v in SPEC_PEAK.items() if k in name), None)}

    def device_record() -> dict:
        peak["gemm"] = gemm_peak(torch.bfloat16, device=device, n=256 if args.cpu_small else 8192)
        return {"pass": True, "device": name, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "torch": torch.__version__, "python": sys.version.split()[0], "widths": asdict(widths),
                "layers": args.layers, "throughput_layers": args.throughput_layers,
                "gemm_tflops": peak["gemm"] / 1e12,
                "spec_tflops": None if peak["spec"] is None else peak["spec"] / 1e12}

    report.run("device", device_record)
    dirs: list[Path] = []
    shape = {"gen": gen, "block": block, "prompt_len": prompt_len, "lora_r": lora_r, "threads": threads}
    parts = [components] + ([throughput] if args.throughput_layers > 0 else [])
    try:
        for part in parts:
            try:
                part(report, args, widths, device, peak, dirs=dirs, **shape)
            except Exception as err:  # outside its checks (its config): say so and go on with the next part
                report.emit(Report.failure(part.__name__, err))
    finally:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    report.summary(time.perf_counter() - start)
    return report.records


def components(report: Report, args, widths: Widths, device: torch.device, peak: dict, *, gen: int, block: int,
               prompt_len: int, lora_r: int | None, threads: int, dirs: list[Path]) -> None:
    """The real services at the real widths, --layers blocks (gpu_parts.py)."""
    written = report.run("checkpoint", lambda: checkpoint_record(widths, args.layers, args.ckpt_dir, device, dirs))
    if not written["pass"]:
        return
    path = Path(written["path"])
    # lr 1e-2 (not the official 3e-6): after one step the pushed adapters change S by far more than bf16 rounding,
    # so the teacher_gap check cannot pass trivially
    cfg = run_config(path, RunShape(prompts=3, gen=gen, block=block, steps=8 if args.cpu_small else 64, mu=2,
                                    lora_r=lora_r, lr=1e-2), device=device, threads=threads)
    checks = ComponentChecks(cfg, path, device, eval_prompts=args.eval_prompts, eval_steps=args.eval_steps,
                             eval_budget_mb=0.05 if args.cpu_small else None, prompt_len=prompt_len)
    try:
        for check in COMPONENT_CHECKS:
            report.run(check, getattr(checks, check))
    finally:
        checks.close()
        shutil.rmtree(path, ignore_errors=True)


def checkpoint_record(w: Widths, layers: int, where: str | None, device: torch.device, dirs: list[Path]) -> dict:
    path = checkpoint_dir(w, layers, where)
    dirs.append(path)  # removed at the end, whatever happens
    write_checkpoint(w, layers, path, device=device, seed=layers)
    free_memory(device)
    size = sum(f.stat().st_size for f in path.iterdir())
    return {"pass": True, "layers": layers, "params": param_count(w, layers), "gib": size / 2**30,
            "path": str(path)}


def throughput(report: Report, args, widths: Widths, device: torch.device, peak: dict, *, gen: int, block: int,
               prompt_len: int, lora_r: int | None, threads: int, dirs: list[Path]) -> None:
    """Throughput and MFU at --throughput-layers blocks (gpu_speed.py)."""
    written = report.run("checkpoint_throughput", lambda: checkpoint_record(widths, args.throughput_layers,
                                                                            args.ckpt_dir, device, dirs))
    if not written["pass"]:
        return
    path = Path(written["path"])
    group = 6  # configs/sudoku_llada.yaml's rollout.group_size
    cfg = run_config(path, RunShape(prompts=math.ceil(args.batch / group), gen=gen, block=block, steps=args.steps,
                                    mu=1, lora_r=lora_r), device=device, threads=threads)
    if cfg.rollout.group_size != group:
        raise RuntimeError(f"gpu_check: the config's group size is {cfg.rollout.group_size}, not {group}")
    batch = {}

    def rollout() -> dict:
        record, batch["rows"] = rollout_throughput(cfg, path, device, widths, args.throughput_layers,
                                                   naive_rows=args.naive_rows, prompt_len=prompt_len, peak=peak)
        return record

    report.run("rollout_throughput", rollout)

    def learner() -> dict:
        if "rows" not in batch:
            raise Skipped("needs the rollout_throughput check's batch")
        return learner_throughput(cfg, path, device, widths, args.throughput_layers, batch["rows"],
                                  steps=args.learner_steps, peak=peak)

    report.run("learner_throughput", learner)


if __name__ == "__main__":
    records = main()
    sys.exit(0 if records[-1]["pass"] else 1)
