import pytest

from common.drift import DriftThresholds, assess_drift, window_statistics

BASELINE = {"mean_probability": 0.5, "low_confidence_ratio": 0.3, "ai_generated_ratio": 0.5}


def test_window_statistics_use_the_shared_rules():
    stats = window_statistics([0.1, 0.45, 0.55, 0.95], threshold=0.5)
    assert stats == {
        "mean_probability": pytest.approx(0.5125),
        "low_confidence_ratio": 0.5,  # 0.45 and 0.55 are within 0.2 of 0.5
        "ai_generated_ratio": 0.5,
        "count": 4,
    }


def test_a_window_like_the_baseline_is_quiet():
    probs = [0.1, 0.9, 0.45, 0.55, 0.15, 0.85, 0.6, 0.4, 0.05, 0.95] * 5
    report = assess_drift(window_statistics(probs, 0.5), BASELINE, DriftThresholds(min_samples=30))
    assert not report.detected
    assert report.score < 1.0
    assert report.window_size == 50


def test_a_skewed_window_fires_with_the_largest_signal_as_score():
    probs = [0.97] * 40
    report = assess_drift(window_statistics(probs, 0.5), BASELINE, DriftThresholds(min_samples=30))
    assert report.detected
    assert report.signals["ai_generated_ratio"]["shift"] == pytest.approx(0.5)
    assert report.signals["mean_probability"]["shift"] == pytest.approx(0.47)
    assert report.score == pytest.approx(0.47 / 0.15)  # the mean shift is the largest ratio


def test_no_verdict_before_min_samples():
    report = assess_drift(window_statistics([0.99] * 5, 0.5), BASELINE, DriftThresholds())
    assert not report.detected
    assert report.score == 0.0
