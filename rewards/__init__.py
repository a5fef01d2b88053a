"""Reward service: verifiers for the paper tasks, the sandbox for generated code, and RewardWorker Ray actors.

Entry points: `rewards.registry.score` / `Scorer` (one reply), `rewards.worker.RewardWorker` (a Ray actor scoring a
batch), `rewards.pool.RewardPool` (a batch over several actors, with metrics). See rewards/README.md.
This package imports only `common` and third-party packages; importing it does not import ray (worker/pool do).
"""
