"""The `make run` default as a real job, shortened: it starts from the start shipped in the repository (no SFT on
this machine), overlaps rollout and update (pipeline.max_staleness), and reports each service's busy share."""
from __future__ import annotations

import re
import subprocess
import tomllib

import pytest
import yaml

from tests.deploy.conftest import REPO


def make_run_config() -> str:
    """The CONFIG `make run` uses (Makefile)."""
    return re.search(r"^CONFIG \?= (\S+)$", (REPO / "Makefile").read_text(), re.M).group(1)


@pytest.mark.slow
def test_the_make_run_default_runs_from_its_shipped_start_with_rollout_and_update_overlapping(jobs, tmp_path):
    config = make_run_config()
    cfg = yaml.safe_load((REPO / config).read_text())
    assert not cfg["sft"]["enabled"] and cfg["pipeline"]["max_staleness"] >= 1
    run_dir = tmp_path / "run"
    jobs.run("default", "steps=3", "eval.num_prompts=8", "checkpoint.export_hf=false", f"run_dir={run_dir}",
             config=config, tiny=False, timeout=400)
    used = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert used["model"]["path"] == str((REPO / cfg["model"]["path"]).resolve())  # the shipped start, made absolute
    assert "SFT warm start" not in jobs.log("default")
    records = jobs.step_records(run_dir)
    assert [r["step"] for r in records] == [1, 2, 3]
    # the batch of step 2 was sampled while step 1 trained: by the weights before step 1's update
    assert max(r["staleness"]["max"] for r in records) == 1
    assert all(r["busy"]["learner"] > 0 and r["busy"]["actor0/generate"] > 0 for r in records)
    assert "busy share of the training loop's" in jobs.log("default")


def test_make_run_installs_what_the_job_needs_and_make_test_the_tools(tmp_path):
    """A newcomer's first `make run` does not wait for the test and lint tools (Makefile: .installed-run), and
    `make test` adds them; the job's own imports (matplotlib for training.png) are runtime dependencies."""
    def planned(target: str) -> str:
        return subprocess.run(["make", "-n", target, f"VENV={tmp_path / 'venv'}"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout

    run, test = planned("run"), planned("test")
    assert "pip install -q -e .\n" in run and ".[dev]" not in run and "deploy.job" in run
    assert "pip install -q -e .\n" in test and "pip install -q -e '.[dev]'" in test and "pytest" in test
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("matplotlib") for d in deps["dependencies"])
    assert not any(d.startswith("matplotlib") for d in deps["optional-dependencies"]["dev"])
