"""Anomaly and fraud rules (no AWS)."""

from __future__ import annotations

import pytest

from chalicelib.core import clock
from chalicelib.telemetry import detection
from chalicelib.telemetry.detection import Baseline, Sample
from tests.unit.test_telemetry_support import NOW


def ts(seconds: float) -> str:
    from datetime import timedelta

    return clock.timestamp(NOW + timedelta(seconds=seconds))


@pytest.mark.parametrize(
    ("metric", "value", "anomalous"),
    [
        ("cpu_usage", 90, False),
        ("cpu_usage", 90.5, True),
        ("memory_usage", 85, False),
        ("memory_usage", 85.1, True),
        ("disk_usage", 91, True),
        ("response_time", 5000, False),
        ("response_time", 5001, True),
        ("error_rate", 5.5, True),
        ("request_count", 10**9, False),  # no threshold, no baseline
    ],
)
def test_thresholds(metric: str, value: float, anomalous: bool) -> None:
    assert bool(detection.metric_anomaly(metric, value, None)) is anomalous


@pytest.mark.parametrize(
    ("metric", "value", "severity"),
    [
        ("cpu_usage", 96, "critical"),
        ("memory_usage", 95.5, "critical"),
        ("error_rate", 100, "critical"),
        ("cpu_usage", 95, "high"),
        ("disk_usage", 99, "high"),  # not a critical metric
        ("response_time", 6000, "high"),  # severity looks at the raw value, not its unit
        ("request_count", 5000, "high"),
        ("memory_usage", 86, "medium"),
        ("error_rate", 6, "low"),
    ],
)
def test_severity_follows_per_metric_thresholds(metric: str, value: float, severity: str) -> None:
    assert detection.severity(metric, value) == severity


def test_spike_needs_enough_samples_and_3x_the_mean() -> None:
    warm = Baseline(mean=100.0, samples=detection.MIN_SAMPLES)
    cold = Baseline(mean=100.0, samples=detection.MIN_SAMPLES - 1)
    assert detection.metric_anomaly("request_count", 301, warm)
    assert not detection.metric_anomaly("request_count", 300, warm)
    assert not detection.metric_anomaly("request_count", 301, cold)
    assert not detection.metric_anomaly("request_count", 5, Baseline(mean=0.0, samples=50))


def test_fold_averages_then_weights_and_skips_applied_records() -> None:
    samples = [Sample("s1", str(seq), float(v)) for seq, v in enumerate([10, 20, 30], start=1)]
    first = detection.fold(None, samples)
    assert (first.mean, first.samples, first.version) == (20.0, 3, 1)
    assert first.applied == {"s1": "3"}
    again = detection.fold(first, samples)  # redelivery: nothing new
    assert (again.mean, again.samples) == (20.0, 3)
    many = detection.fold(None, [Sample("s1", str(i), 100.0) for i in range(1, 20)])
    after_spike = detection.fold(many, [Sample("s1", "20", 1100.0)])
    assert after_spike.mean == pytest.approx(100 + detection.ALPHA * 1000)
    other_shard = detection.fold(first, [Sample("s2", "1", 40.0)])
    assert other_shard.samples == 4 and other_shard.applied == {"s1": "3", "s2": "1"}


def test_velocity_counts_distinct_transactions_in_the_window() -> None:
    stored = [(ts(-599), "a"), (ts(-300), "b"), (ts(-601), "too-old")]
    batch = [(ts(-200), "c"), (ts(-100), "d"), (ts(-50), "e"), (ts(0), "f"), (ts(0), "b")]
    # "b" again (a redelivery, or an update) is counted once, at its batch time.
    counts = detection.velocity_flags(batch, stored)
    assert counts == {"c": 3, "d": 4, "e": 5, "f": 6, "b": 6}  # "too-old" only out of f's
    assert detection.fraud_reasons(10, counts["e"]) == []  # 5 is not more than 5
    assert "more than 5" in detection.fraud_reasons(10, counts["f"])[0]
    assert detection.fraud_reasons(10_000, 1) == []
    assert "over 10000" in detection.fraud_reasons(10_000.01, 1)[0]
    start, end = detection.velocity_window([ts(0), ts(-200)])
    assert (start, end) == (ts(-800), ts(0))


def test_a_mean_decaying_on_zeros_reaches_zero_and_stays_storable() -> None:
    """A series of zeros (an error rate) decays the mean by 0.9 a sample: without a floor it
    would fall under DynamoDB's smallest number (1e-130) after ~2,800 zeros."""
    from chalicelib.telemetry.encoding import computed_number

    baseline = detection.fold(None, [Sample("s", "1", 0.01)])
    samples = [Sample("s", str(n), 0.0) for n in range(2, 3_500)]
    for start in range(0, len(samples), 500):
        baseline = detection.fold(baseline, samples[start : start + 500])
        assert baseline.mean == 0.0 or baseline.mean >= detection.TINY_MEAN
        computed_number(baseline.mean)  # never out of DynamoDB's range
    assert baseline.mean == 0.0 and baseline.samples == 3_499
    assert not detection.metric_anomaly("error_rate", 0.0, baseline)
