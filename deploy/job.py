"""The Ray job entrypoint: parse -> build -> run -> teardown.

  python -m deploy.job --config configs/sudoku_tiny.yaml [key.sub=value ...] [--resume | --overwrite]
  python -m deploy.job --print-config [--config X.yaml] [key.sub=value ...]     # every key, default, description
  ray job submit --working-dir . --runtime-env deploy/runtime_env.yaml -- python -m deploy.job --config ...

Inside `ray job submit` it joins the cluster it was submitted to; run alone it starts a local loopback-only instance.
Before any actor exists: the config is validated, the run directory claimed (deploy/run_dir.py) and the files and
the cluster checked (deploy/preflight.py); each mistake ends the job with exit code 2 and one message.
"""
from __future__ import annotations

from common import cluster

cluster.local_env()  # before anything imports ray (common/cluster.py)
# ruff: noqa: E402

import argparse
import json
import logging
import math
import os
import sys

from common.config import ConfigError, RunConfig, load_config
from deploy import preflight, run_dir


def local_cpus(cfg: RunConfig) -> int:
    reserved = (cfg.rollout.num_actors * cfg.rollout.cpus_per_actor
                + cfg.reward.num_workers * cfg.reward.cpus_per_worker
                + cfg.learner.num_ranks * cfg.learner.cpus_per_rank)
    return max(os.cpu_count() or 1, math.ceil(reserved))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="GDSD-RL training job")
    parser.add_argument("--config", default=None, help="YAML config (defaults apply to missing keys)")
    parser.add_argument("--resume", action="store_true", help="continue run_dir from its latest checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="remove run_dir's previous outputs and start again")
    parser.add_argument("--print-config", action="store_true", help="print every key, its default and description")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = load_config(args.config, args.overrides)
        if args.print_config:
            from deploy.config_doc import render

            print(render(cfg))
            return 0
        cfg = run_dir.resolve_paths(cfg)
        preflight.check_files(cfg, resume=args.resume)
        run_dir.claim(cfg, resume=args.resume, overwrite=args.overwrite)
        print(f"run_dir: {cfg.run_dir}", flush=True)
        # a local instance gets at least the logical CPUs the services reserve (Ray CPUs are scheduling units)
        cluster.init_ray(address=cfg.cluster.address, num_cpus=cfg.cluster.num_cpus or local_cpus(cfg))
        preflight.check_memory(cfg)  # first: a config that fits no GPU fails whatever the cluster holds
        preflight.check_resources(cfg)
    except (ConfigError, preflight.PreflightError) as err:
        print(f"{'config' if isinstance(err, ConfigError) else 'preflight'} error: {err}", file=sys.stderr)
        return 2
    if args.overwrite:
        run_dir.clear_outputs(cfg.run_dir)

    from deploy.trainer import Trainer  # after ray.init: builds actors

    trainer = Trainer(cfg, resume=args.resume)
    try:
        result = trainer.run()
    finally:
        trainer.shutdown()
    print(json.dumps(result, indent=1))
    from deploy.report import report  # the before/after table with standard errors, the plot, where things are

    print(f"\n{report(cfg.run_dir, cfg.task.name)}")
    print(f"run_dir: {cfg.run_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
