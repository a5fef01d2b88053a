"""The machine a measurement ran on, named next to every time or result quoted from it (developers' guide: state the
CPU and its ISA; GEMM kernels and float rounding differ between an AVX2 and an AVX-512 / AMX box)."""
from __future__ import annotations

import os
import platform
from pathlib import Path


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
