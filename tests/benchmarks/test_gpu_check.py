"""benchmarks/gpu_check.py --cpu-small: the prepared GPU check runs end to end on CPU at a toy shape, with pydantic
and Ray unimportable (the GPU image has neither), and reports every part."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BLOCK = "import sys; sys.modules['pydantic'] = None; sys.modules['ray'] = None; "  # `import X` now fails


@pytest.mark.slow
def test_gpu_check_cpu_small_runs_without_pydantic_or_ray():
    code = BLOCK + "from benchmarks.gpu_check import main; main(['--cpu-small'])"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = {r["part"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert set(records) == {"device", "rollout", "learner", "teacher_gap"}
    rollout, learner, gap = records["rollout"], records["learner"], records["teacher_gap"]
    assert rollout["tokens_per_s"] > 0 and rollout["naive_tokens_per_s"] > 0 and rollout["speedup"] > 0
    assert rollout["naive_token_agreement"] > 0.5  # batched and naive decode the same model (bf16 ties aside)
    assert learner["grad_norm"] > 0 and learner["tokens_per_s"] > 0 and learner["mfu_measured_gemm"] > 0
    assert gap["gap_max"] >= 0 and 0 <= gap["clamped_fraction"] <= 1 and gap["eps"] == 4e-4


def test_the_check_blocks_pydantic_for_real():
    proc = subprocess.run([sys.executable, "-c", BLOCK + "import common.config"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "pydantic" in proc.stderr
