"""The scoring service: `registry.py` (Scorer: task -> reward functions, config, error kinds), `worker.py`
(RewardWorker, a Ray actor scoring a batch), `pool.py` (RewardPool: a batch over workers, with fault handling),
`metrics.py` (RewardMetrics of a batch). Importing this package imports nothing heavy."""
