"""Helpers of the job-level tests: tiny settings, job subprocesses with their own Ray temp dir, metrics.jsonl reader."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from deploy.head import head_env, stop_head

REPO = Path(__file__).resolve().parents[2]
CONFIG = "configs/sudoku_tiny.yaml"
# the tiny model and sampler of every job-level test (one step is well under a second on one core)
TINY = ["model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.intermediate_size=128", "sft.enabled=false",
        "sampler.gen_length=40", "sampler.block_length=8", "sampler.steps=10", "algorithm.mu=2",
        "rollout.prompts_per_step=2", "eval.num_prompts=4"]


@pytest.fixture
def ray_tmp():
    """A short, private Ray temp dir (Unix socket paths under it must stay below 107 bytes); every process that
    names it is stopped afterwards, even if the test failed (never `ray stop`: it kills every Ray on the machine)."""
    path = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    yield path
    stop_head(path, grace=5)
    shutil.rmtree(path, ignore_errors=True)


class Jobs:
    """Runs `python -m deploy.job --config configs/sudoku_tiny.yaml <TINY> ...` as a subprocess on its own local Ray
    instance, whose files live under ray_tmp (RAY_TMPDIR): it never meets the test session's instance, and the
    ray_tmp fixture stops whatever it leaves behind."""

    tiny, repo = TINY, REPO

    def __init__(self, ray_tmp: str, logs: Path) -> None:
        self.ray_tmp, self.logs = ray_tmp, logs

    def command(self, *overrides: str, resume: bool = False, config: str = CONFIG,
                tiny: bool = True) -> list[str]:
        # a private cache_dir: the tiny base model is written there, never into the checkout's runs/cache
        return [sys.executable, "-m", "deploy.job", "--config", config, *(TINY if tiny else []),
                f"cache_dir={self.logs / 'cache'}", *overrides] + (["--resume"] if resume else [])

    def start(self, name: str, *overrides: str, resume: bool = False, config: str = CONFIG,
              tiny: bool = True) -> subprocess.Popen:
        env = {**head_env(), "RAY_TMPDIR": self.ray_tmp}
        log = (self.logs / f"{name}.log").open("w")
        return subprocess.Popen(self.command(*overrides, resume=resume, config=config, tiny=tiny), cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()

    def run(self, name: str, *overrides: str, resume: bool = False, timeout: float = 240, config: str = CONFIG,
            tiny: bool = True) -> None:
        proc = self.start(name, *overrides, resume=resume, config=config, tiny=tiny)
        try:
            rc = proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert rc == 0, f"job {name} exited with {rc}:\n{self.log(name)[-4000:]}"

    @staticmethod
    def step_records(run_dir: Path) -> list[dict]:
        """The per-step training records of metrics.jsonl (evaluation records carry no 'learner' key)."""
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if "learner" in r]


@pytest.fixture
def jobs(ray_tmp, tmp_path) -> Jobs:
    return Jobs(ray_tmp, tmp_path)
