"""The shadow drill's verdict (bench.drills.shadow_verdict) on round summaries: the p50 decides at
x1.10, the p99 only at x1.50, and any error fails it. The drill itself runs against a real
Serve application in test_resilience_drills.py; this checks the arithmetic of its limits."""

import pytest

from bench.drills import P50_LIMIT, P99_LIMIT, shadow_verdict


def rounds(p50s, p99s, errors=0):
    return [{"p50_ms": a, "p99_ms": b, "errors": errors} for a, b in zip(p50s, p99s, strict=True)]


BASE = rounds([40, 42, 41], [50, 44, 45])  # medians 41 and 45 ms


@pytest.mark.parametrize(
    ("slow", "passed"),
    [
        (rounds([41, 43, 40], [60, 55, 58]), True),  # p99 x1.29: the noise of a few hundred
        (rounds([47, 46, 45], [50, 46, 47]), False),  # p50 x1.12: a cost on every request
        (rounds([41, 42, 40], [2050, 2040, 60]), False),  # the 2 s sleep reached the tail
    ],
)
def test_the_p50_decides_and_the_p99_catches_a_leak(slow, passed):
    verdict = shadow_verdict({"no_shadow": BASE, "slow_shadow": slow, "failing_shadow": BASE})
    assert verdict.passed is passed, verdict.summary
    assert f"p50 x{P50_LIMIT:.2f}" in verdict.summary and f"p99 x{P99_LIMIT:.2f}" in verdict.summary
    assert "medians of 3 interleaved rounds" in verdict.summary


def test_one_error_fails_it():
    failing = rounds([40, 42, 41], [50, 44, 45], errors=1)
    verdict = shadow_verdict({"no_shadow": BASE, "slow_shadow": BASE, "failing_shadow": failing})
    assert not verdict.passed
    assert verdict.summary.endswith("errors 3")
