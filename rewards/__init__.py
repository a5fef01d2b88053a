"""Reward service: verifiers for the paper tasks, the sandbox for generated code, and the Ray scoring path.

Entry points: `rewards.registry.Scorer` (one reply), `rewards.worker.RewardWorker` (a Ray actor scoring a batch),
`rewards.pool.RewardPool` / `RemoteRewardPool` (a batch over several workers, with fault handling and metrics; the
path training uses). See rewards/README.md. Importing this package creates nothing and does not import ray.
"""
