"""The training loop (docs/design.md, "Architecture"): each step is three visible phases, each in a timing scope of
the same name:

  rollout       actors generate G completions per prompt, score them, compute teacher targets (refs only here)
  update        the learner group pulls the batches by ref and runs mu inner iterations
  sync_weights  rank 0 sends the new weights to every actor (object store or broadcast: deploy/weight_sync.py)

Async mode (pipeline.max_staleness = k > 0): up to k rollout batches are in flight ahead of the learner.
"""
from __future__ import annotations

import json
import logging
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from ray.exceptions import RayActorError
from tqdm import tqdm

from common.config import RunConfig, dump_config
from common.summary import RolloutSummary
from common.tasks import get_task, make_prompts
from deploy.evaluate import eval_prompts, eval_sampler, markdown_table, summarize
from deploy.fleet import RolloutFleet, merge_reward_metrics, reward_service_config
from deploy.metrics import Metrics
from deploy.report import metric_se
from deploy.run_dir import prune_checkpoints
from deploy.staleness import StalenessGate
from deploy.warmstart import base_model, warm_start
from deploy.weight_sync import weight_sync
from learner.group import LearnerGroup

log = logging.getLogger(__name__)


class Trainer:
    def __init__(self, cfg: RunConfig, *, resume: bool = False) -> None:
        self.cfg = cfg
        reward_service_config(cfg)  # a bad reward.service key fails before the SFT warm start
        self.run_dir = Path(cfg.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(dump_config(cfg), sort_keys=False))
        cache = Path(cfg.cache_dir)
        model_path = base_model(cfg, cache)
        if cfg.sft.enabled:
            model_path = warm_start(cfg, model_path, cache)
        self.model_path = model_path
        # the learner's placement group first (learner/group.py): actors created before it could take its node's GPUs
        self.learner = LearnerGroup(cfg, model_path)
        self.fleet = RolloutFleet(cfg, model_path)
        self.weight_sync = weight_sync(cfg, self.learner, self.fleet)
        self.metrics = Metrics(self.run_dir, cfg.metrics, config=cfg.model_dump(mode="json"))
        B = cfg.rollout.prompts_per_step
        self.prompts = make_prompts(task=cfg.task.name, prompt_format=cfg.task.prompt_format, split="train",
                                    num=cfg.steps * B, seed=cfg.task.seed, source=cfg.task.source)
        self.step = 0
        self.evals: dict[str, dict[str, float]] = {}
        self.learner_restarts = 0
        self.last_checkpoint: Path | None = None  # saved or loaded by this run (never an older run's leftover)
        if resume:
            self._resume()

    # ---- the loop --------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg, G, B = self.cfg, self.cfg.rollout.group_size, self.cfg.rollout.prompts_per_step
        if self.step == 0 and cfg.eval.num_prompts:
            self.evaluate("before (step 0)")
        gate = StalenessGate(cfg.pipeline.max_staleness, submitted=self.step)
        in_flight: deque = deque()
        progress = tqdm(total=cfg.steps, initial=self.step, desc=cfg.algorithm.name, dynamic_ncols=True)
        while self.step < cfg.steps:
            times: dict[str, float] = {}
            while gate.can_submit(version=self.step, total_steps=cfg.steps):
                s = gate.mark_submitted()
                in_flight.append(self.fleet.submit(s, self.prompts[s * B:(s + 1) * B], G,
                                                   version=self.weight_sync.version))
            with timed(times, "rollout"):
                batch_refs, summaries = self.fleet.collect(in_flight.popleft(), G, weights=self.weight_sync)
            self._check_rows(summaries, B)
            with timed(times, "update"):
                try:
                    stats = self.learner.train_step(batch_refs)
                except RayActorError as err:
                    if self.learner_restarts >= cfg.learner.max_restarts:
                        raise
                    self._restart_learner(err)
                    # batches in flight were (or will be) sampled by weights newer than the checkpoint: drop them
                    gate, in_flight = StalenessGate(cfg.pipeline.max_staleness, submitted=self.step), deque()
                    progress.reset(total=cfg.steps)
                    progress.update(self.step)
                    continue
            with timed(times, "sync_weights"):
                # sync mode: the next rollout must sample with the new weights
                self.weight_sync.push(wait=cfg.pipeline.max_staleness == 0)
            self.step += 1
            flat = self._log(stats, summaries, times)
            progress.update(1)
            progress.set_postfix(reward=f"{flat['reward/mean']:.3f}",
                                 clamp=f"{flat.get('learner/clamp_frac/first', 0):.2f}")
            # evaluate first, so that a checkpoint of this step carries its evaluation into a resumed run
            if cfg.eval.every and self.step % cfg.eval.every == 0 and self.step < cfg.steps:
                self.evaluate(f"step {self.step}")
            if cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0 and self.step < cfg.steps:
                self.save_checkpoint()
        progress.close()
        self.save_checkpoint()
        if cfg.checkpoint.export_hf:
            self.learner.export_hf(str(self.run_dir / "final"))
        if cfg.eval.num_prompts:
            self.evaluate(f"after (step {self.step})")
        return {"step": self.step, "eval": self.evals, "reissued_chunks": self.fleet.reissued,
                "learner_restarts": self.learner_restarts}

    def _check_rows(self, summaries: list[RolloutSummary], num_prompts: int) -> None:
        """Every prompt of the step answered exactly once (re-issued chunks must not lose or duplicate rows)."""
        groups = sorted(g for s in summaries for g in s.groups)
        if groups != list(range(num_prompts)):
            raise RuntimeError(f"step {self.step}: rollout groups {groups} != 0..{num_prompts - 1}")

    def _log(self, stats: dict, summaries: list[RolloutSummary], times: dict[str, float]) -> dict[str, float]:
        rows = sum(s.rows for s in summaries)
        reward = sum(s.reward_mean * s.rows for s in summaries) / rows
        parts = {k: sum(s.reward_parts.get(k, 0.0) * s.rows for s in summaries) / rows
                 for k in {k for s in summaries for k in s.reward_parts}}
        record = {
            "reward": {"mean": reward, **parts},
            "reward_errors": sum(s.reward_errors for s in summaries),
            "reward_service": merge_reward_metrics(summaries),
            "zero_variance_groups": sum(s.zero_variance_groups for s in summaries),
            "rollout": {f"actor{s.actor}/tokens_per_s": s.tokens_per_second for s in summaries},
            "staleness": {"max": max(stats["staleness"], default=0)},
            "bytes": {"batches": sum(s.batch_bytes for s in summaries)},
            # cumulative: chunks re-issued after an actor died (or restarted) and Ray nodes lost so far
            "fleet": {"reissued_chunks": self.fleet.reissued, "dead_nodes": self.fleet.dead_nodes()},
            "time": times,
            # seconds each service worked on this step (deploy/report.py: the share of the loop's wall time)
            "busy": busy_seconds(summaries, stats),
            "learner": {k: v for k, v in stats.items() if k not in ("staleness",)},
            "version": stats["version"],
        }
        if self.step == 1 or self.step % 10 == 0:  # show what the policy writes now, and how fast
            for prompt, text, reward in summaries[0].samples[:2]:
                tqdm.write(f"step {self.step} | {prompt.strip()[-40:]!r} -> {text[:80]!r} reward {reward:.3f}")
            tqdm.write(f"step {self.step} | rollout " + ", ".join(
                f"actor{s.actor} {s.tokens_per_second:.0f} tok/s" for s in summaries))
        return self.metrics.log(self.step, record)

    # ---- evaluation, checkpoints -------------------------------------------------------------------------------
    def evaluate(self, name: str) -> dict[str, float]:
        rows = self.fleet.evaluate(eval_prompts(self.cfg), eval_sampler(self.cfg), version=self.weight_sync.version)
        self.evals[name] = summarize(rows, self.cfg.task.name)
        se = metric_se(rows, self.cfg.task.name)
        if se is not None:  # the report's standard error (deploy/report.py); undefined for one item
            self.evals[name][f"{get_task(self.cfg.task.name).metric}_se"] = se
        self.metrics.log(self.step, {"eval": self.evals[name]})
        table = markdown_table(self.evals)
        (self.run_dir / "eval.md").write_text(table + "\n")
        (self.run_dir / "eval.json").write_text(json.dumps(self.evals, indent=1))
        tqdm.write(f"\nevaluation ({name}):\n{table}\n")
        return self.evals[name]

    def save_checkpoint(self) -> None:
        path = self.run_dir / "checkpoint" / f"step{self.step:06d}"
        self.learner.save_checkpoint(str(path))
        # the driver's part: where the data stream is, what was measured so far
        (path / "trainer_state.json").write_text(json.dumps({"step": self.step, "data_cursor":
                                                             self.step * self.cfg.rollout.prompts_per_step,
                                                             "evals": self.evals}))
        if self.cfg.checkpoint.export_hf_each:
            self.learner.export_hf(str(path / "hf"))
        (self.run_dir / "checkpoint" / "latest").write_text(path.name)
        self.last_checkpoint = path
        for old in prune_checkpoints(self.run_dir / "checkpoint", self.cfg.checkpoint.keep_last):
            log.info("checkpoint.keep_last=%d: removed %s", self.cfg.checkpoint.keep_last, old)

    def _resume(self) -> None:
        latest = self.run_dir / "checkpoint" / "latest"
        if not latest.is_file():
            raise FileNotFoundError(f"--resume {self.run_dir}: no checkpoint/latest in the run directory")
        self._load_checkpoint(latest.parent / latest.read_text().strip())
        log.info("resumed %s at step %d", self.run_dir, self.step)

    def _load_checkpoint(self, path: Path) -> None:
        """Learner state, step, data cursor and evaluations from `path`; the actors get its weights."""
        state = json.loads((path / "trainer_state.json").read_text())
        learner_state = self.learner.load_checkpoint(str(path))
        self.step, self.evals = state["step"], state["evals"]
        assert learner_state["version"] == self.step, (learner_state, state)
        self.last_checkpoint = path
        self.weight_sync.push(wait=True)

    def _restart_learner(self, err: Exception) -> None:
        """A rank died (`learner.max_restarts`): a new group continues from the last checkpoint, or from the
        initial weights at step 0 without one. Steps after the checkpoint run again (their records appear twice in
        metrics.jsonl, the later one wins, as after --resume)."""
        self.learner_restarts += 1
        log.warning("learner rank died during step %d (%s); rebuilding the learner group (restart %d of %d)",
                    self.step + 1, type(err).__name__, self.learner_restarts, self.cfg.learner.max_restarts)
        self.learner.shutdown()
        self.learner = LearnerGroup(self.cfg, self.model_path)
        self.weight_sync = weight_sync(self.cfg, self.learner, self.fleet)
        if self.last_checkpoint is not None:
            self._load_checkpoint(self.last_checkpoint)
        else:
            self.step = 0
            self.evals = {k: v for k, v in self.evals.items() if k.startswith("before")}
            self.weight_sync.push(wait=True)
        log.warning("learner group rebuilt; continuing from step %d", self.step)

    def shutdown(self) -> None:
        self.metrics.close()
        self.fleet.shutdown()
        self.learner.shutdown()


def busy_seconds(summaries: list[RolloutSummary], stats: dict) -> dict[str, float]:
    """Per rollout actor: its episode (generate, score = waiting for the reward pool, teacher); the learner: its step.
    With pipeline.max_staleness > 0 they overlap, so the shares may add up to more than 1."""
    busy: dict[str, float] = {}
    for s in summaries:
        for part, seconds in (("generate", s.generate_seconds), ("score", s.score_seconds),
                              ("teacher", s.teacher_seconds)):
            busy[f"actor{s.actor}/{part}"] = busy.get(f"actor{s.actor}/{part}", 0.0) + seconds
    busy["learner"] = float(stats["seconds"])
    return busy


@contextmanager
def timed(times: dict[str, float], name: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        times[name] = time.perf_counter() - start
