"""Reward service, three concerns in three packages:

  verifiers/  task scorers (sudoku, countdown, gsm8k, MATH answers, code tests)
  sandbox/    the isolated runner for generated code, with what runs inside it (sandbox/inside/)
  service/    the scoring path: registry (Scorer), worker (RewardWorker), pool (RewardPool), metrics

Entry points: `rewards.service.registry.Scorer` (one reply), `rewards.service.worker.RewardWorker` (a Ray actor
scoring a batch), `rewards.service.pool.RewardPool` / `RemoteRewardPool` (a batch over several workers, with fault
handling and metrics; the path training uses). See rewards/README.md. Importing this package creates nothing
and does not import ray.
"""
