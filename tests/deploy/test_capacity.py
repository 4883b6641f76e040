"""docs/capacity.md holds what bench/capacity.py computes, and the plan meets its target."""

from __future__ import annotations

import re
import subprocess
import sys

from bench import capacity
from tests.deploy.manifests import ROOT


def test_the_doc_holds_the_scripts_output():
    result = subprocess.run(
        [sys.executable, "-m", "bench.capacity"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert result.stdout == capacity.doc_block((ROOT / "docs" / "capacity.md").read_text()), (
        "run `python -m bench.capacity --write`"
    )


def test_ten_thousand_images_a_second_fit_the_latency_budget():
    plan = capacity.plan(10_000)
    assert plan.p99_ms < 200
    served = plan.t4 * capacity.t4_images_per_second() * capacity.UTILISATION
    assert served >= 10_000 * (1 + plan.shadow_fraction)
    assert plan.per_million(spot=True) < plan.per_million(spot=False)
    assert subprocess.run(
        [sys.executable, "-m", "bench.capacity", "--rate", "10000", "--p99-ms", "200"],
        cwd=ROOT, capture_output=True, timeout=120,
    ).returncode == 0  # fmt: skip


def test_the_limits_are_the_shipped_configs():
    overlay = (ROOT / "k8s" / "templates" / "serve-overlay.yaml").read_text()
    for deployment, limit in (("Ingress", 8), ("Preprocessor", 12), ("Classifier", 6)):
        block = overlay.split(f"      {deployment}:")[1]
        assert re.search(rf"max_replicas: {limit}\b", block.split("\n\n")[0]), deployment
        assert capacity.LIMITS[f"{deployment} max_replicas"] == limit
    variables = (ROOT / "terraform" / "variables.tf").read_text()
    assert re.search(r'variable "t4_max_nodes" \{[^}]*default\s*=\s*4\b', variables)
    assert re.search(r'variable "cpu_max_nodes" \{[^}]*default\s*=\s*8\b', variables)


def test_the_budget_default_stays_quiet_at_rest():
    variables = (ROOT / "terraform" / "variables.tf").read_text()
    budget = float(re.search(r'variable "budget_amount" \{[^}]*default\s*=\s*(\d+)', variables)[1])
    rules = (ROOT / "terraform" / "budget.tf").read_text()
    first = min(map(float, re.findall(r"threshold_percent = ([\d.]+)", rules)))
    assert budget * first > capacity.default_sizes_monthly()
