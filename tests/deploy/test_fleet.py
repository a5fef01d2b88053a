"""deploy/fleet.py's pure parts: the reward service's metrics of one step, merged over the actors' chunks."""
from __future__ import annotations

import pytest

from deploy.fleet import merge_reward_metrics


def test_counters_add_up_means_are_row_weighted_and_maxima_stay_maxima():
    summaries = [
        {"rows": 6, "reward_metrics": {"rows": 6.0, "reward/total_mean": 0.5, "errors/total": 1.0,
                                       "sandbox/seconds_max": 0.2, "pool/worker_restarts": 1.0}},
        {"rows": 2, "reward_metrics": {"rows": 2.0, "reward/total_mean": 0.1, "errors/total": 0.0,
                                       "sandbox/seconds_max": 0.7}},
    ]
    merged = merge_reward_metrics(summaries)
    assert merged["rows"] == 8.0 and merged["errors/total"] == 1.0 and merged["pool/worker_restarts"] == 1.0
    assert merged["reward/total_mean"] == pytest.approx((0.5 * 6 + 0.1 * 2) / 8)
    assert merged["sandbox/seconds_max"] == 0.7


def test_a_summary_without_reward_metrics_adds_nothing():
    assert merge_reward_metrics([{"rows": 3}]) == {}
