"""benchmarks/plan_check.py end to end at toy widths, LLaDA and Dream layouts (the real runs are LLaDA-8B / Dream-7B
widths, minutes and GBs: docs/plan.md):
every part runs in its own process (load, rollout, 2 FSDP ranks over gloo) and every comparison is produced; the
LoRA push export is exactly the plan's line. Ratios at toy width mean little (fixed overheads dominate)."""
from __future__ import annotations

import pytest

from benchmarks import plan_check

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("shape", ["llada", "dream"])
def test_toy_run_produces_every_comparison(tmp_path, shape):
    records = plan_check.main(["--toy", "--shape", shape, "--ckpt-dir", str(tmp_path), "--out",
                               str(tmp_path / "out.json")])
    rows = {r["what"]: r for r in records if "what" in r}
    assert {"checkpoint load (actor, bf16)", "actor weights", "sampling (max of forward, logits + draw)",
            "teacher (max of forward, head chunk)", "rank0 load + shard", "rank1 step (gather + activations + head + "
            "grads/AdamW)", "rank0 push export (host)", "rank0 HF export (host)"} <= set(rows)
    assert rows["rank0 push export (host)"]["ratio"] == 1.0
    summary = records[-1]
    assert summary["summary"] and [r["step"]["micro_batches"] for r in summary["raw"]["ranks"]] == [1, 1]
    assert summary["shape"] == shape and summary["widths"]["family"] == shape
    assert summary["raw"]["ranks"][0]["export"]["at_peak"]  # the largest tensors at the peak, with their ops
    again = plan_check.main(["--recompare", str(tmp_path / "out.json")])
    assert [r for r in again if "what" in r] == [r for r in records if "what" in r]
