"""The machine's CPU: its name next to every time or result quoted from it (developers' guide: state the CPU and its
ISA; GEMM kernels and float rounding differ between an AVX2 and an AVX-512 / AMX box), and the intra-op threads a
phase of work uses."""
from __future__ import annotations

import os
import platform
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch


def cpu_name() -> str:
    """The CPU model, its vector ISA and the core count, for a record (a time is quoted with the CPU and ISA)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.processor() or "unknown")
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    isa = " + ".join(name for flag, name in (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("amx_tile", "AMX"))
                     if flag in flags) or "ISA unknown"
    return f"{model} ({isa}, {os.cpu_count()} cores)"


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run the block with `n` torch intra-op threads, then restore the process's count (also on error). A rollout
    actor evaluates this way with `eval.torch_threads`: before the first and after the last step the learner waits,
    so the cores it holds are free."""
    if n < 1:
        raise ValueError(f"intra_op_threads: {n} threads; at least 1")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
