"""k8s/helm/kuberay-operator-values.yaml uses only keys the kuberay-operator 1.7.0 chart defines."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.manifests import CRD_DIR, ROOT

CHART_VALUES = CRD_DIR / "kuberay-operator-1.7.0-values.yaml"
# Keys the chart reads although its values.yaml only mentions them in comments.
COMMENTED_DEFAULTS = {"watchNamespace", "useKubernetesProxy"}
# Values the chart renders into the operator's pod spec as they are (toYaml): Kubernetes, not
# the chart, defines the keys inside them (test_core_objects checks those kinds of objects).
PASSTHROUGH = {"resources", "podSecurityContext", "securityContext", "nodeSelector", "affinity"}


def _unknown_keys(ours: Any, defaults: Any, path: str = "") -> list[str]:
    if not isinstance(ours, dict) or not isinstance(defaults, dict):
        return []
    unknown = []
    for key, value in ours.items():
        where = f"{path}.{key}" if path else key
        if key not in defaults:
            if not (path == "" and key in COMMENTED_DEFAULTS):
                unknown.append(where)
        elif defaults[key] and not (path == "" and key in PASSTHROUGH):  # {} or []: any keys
            unknown += _unknown_keys(value, defaults[key], where)
    return unknown


@pytest.fixture(scope="module")
def chart_defaults() -> dict[str, Any]:
    if not CHART_VALUES.exists():
        pytest.skip(f"{CHART_VALUES} is absent: the chart's values live in ../shared/kuberay-crds")
    return yaml.safe_load(CHART_VALUES.read_text())


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "k8s" / "helm" / "kuberay-operator-values.yaml").read_text())


def test_every_key_exists_in_the_chart(values, chart_defaults):
    assert _unknown_keys(values, chart_defaults) == []


def test_an_unknown_key_is_caught(chart_defaults):
    assert _unknown_keys({"metrics": {"serviceMonitr": {}}}, chart_defaults) == [
        "metrics.serviceMonitr"
    ]


def test_feature_gates_are_ones_the_chart_knows(values, chart_defaults):
    known = {gate["name"] for gate in chart_defaults["featureGates"]}
    assert {gate["name"] for gate in values["featureGates"]} <= known


def test_operator_image_matches_the_chart_version(values, chart_defaults):
    assert values["image"]["tag"] == chart_defaults["image"]["tag"] == "v1.7.0"
