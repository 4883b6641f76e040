"""A short run of `make resilience`'s drills against the test session's application (same code
as against `serve run`; smaller loads, a fresh API key per load run)."""

import os
import shutil

import pytest

from bench.drills import (
    DrillSize,
    Target,
    memory_growth,
    overload,
    replica_killed,
    rollout_under_load,
    shadow_faults,
    sustained_load,
)
from bench.hostile import hostile_uploads
from bench.inputs import make_inputs
from bench.serving import with_changes
from tests.conftest import deploy, next_api_key

pytestmark = [
    pytest.mark.serve,
    pytest.mark.skipif(
        shutil.which("hey") is None, reason="hey is not installed (apt install hey)"
    ),
]

SMOKE = DrillSize(
    sustained=64, killed=64, shadow=16, rollout=48, overload_factor=2, memory=60, fault_after_s=0.3
)


@pytest.fixture(scope="module")
def target(served_app, tmp_path_factory):
    return Target(
        url=served_app.url,
        headers=lambda: {"X-API-Key": next_api_key()},
        deploy=deploy,
        config=served_app.config,
        images=make_inputs(tmp_path_factory.mktemp("drill-inputs"), per_size=1),
        ray_root=os.getpid(),  # the session's ray.init
    )


def test_sustained_load_has_no_5xx(target):
    verdict = sustained_load(target, SMOKE)
    assert verdict.passed, verdict.line()


def test_a_killed_classifier_replica_costs_no_request(target):
    verdict = replica_killed(target, SMOKE)
    assert verdict.passed, verdict.line()


def test_slow_or_failing_shadow_fails_no_request_in_interleaved_rounds(target):
    verdict = shadow_faults(target, SMOKE, rounds=2)  # A/B/C/A/B/C
    assert set(verdict.figures) == {"no_shadow", "slow_shadow", "failing_shadow"}
    assert all(len(runs) == 2 for runs in verdict.figures.values())
    errors = [run["errors"] for runs in verdict.figures.values() for run in runs]
    assert errors == [0] * 6, verdict.line()
    assert "medians of 2 interleaved rounds" in verdict.summary


def test_rollout_under_load_fails_no_request(target, checkpoints):
    verdict = rollout_under_load(target, SMOKE, str(checkpoints["other"]))
    assert verdict.passed, verdict.line()
    assert "test-other" in verdict.summary


def test_overload_gets_fast_503s_with_retry_after(target):
    small = with_changes(target.config, {"Ingress": {"max_inflight_requests": 2}})
    deploy(small)
    try:
        verdict = overload(Target(**{**target.__dict__, "config": small}), SMOKE)
    finally:
        deploy(target.config)
    assert verdict.passed, verdict.line()


def test_memory_is_sampled_for_every_replica(target):
    verdict = memory_growth(target, SMOKE)
    assert verdict.figures["growth"]
    assert verdict.figures["peak_rss_mib"]["Classifier"] > 100


def test_hostile_uploads_get_4xx_and_cost_no_5xx_or_replica(target):
    """One short A/B round (its p99 ratio is too noisy at this size to judge: `make
    resilience` judges it over three rounds of 600)."""
    verdict = hostile_uploads(target, requests=64, rounds=1)
    figures = verdict.figures
    assert not figures["replaced"], verdict.line()
    kinds = {key.split()[0] for key in figures["bomb_statuses"]}
    assert kinds == {"scan_bomb", "png_bomb"}, verdict.line()
    statuses = {int(key.split()[1]) for key in figures["bomb_statuses"]}
    assert statuses <= {200, 413, 429}, verdict.line()  # 429: the drill's one key is limited
    assert figures["slow_client_held_s"], verdict.line()
    assert all(r["errors"] == 0 for r in figures["quiet"] + figures["attacked"]), verdict.line()
