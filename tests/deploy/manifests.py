"""Shared helpers of the deployment checks: paths, manifest loading and rendering, tools.

Manifests hold `${NAME}` placeholders that k8s/render.sh fills in at apply time; the checks
render them with EXAMPLE_ENV, values of the shape a real deployment uses.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
CRD_DIR = ROOT.parent / "shared" / "kuberay-crds"  # ../shared/kuberay-crds from the repo root
KUBERNETES_VERSION = "1.34.0"  # GKE's REGULAR channel at the time of writing

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
EXAMPLE_ENV = {
    "PROJECT_ID": "ppd-example-123",
    "REGION": "us-central1",
    "IMAGE_TAG": "0123456789abcdef0123456789abcdef01234567",
    "BUCKET": "ppd-example-123-ppd",
    "MODEL_URI": "gs://ppd-example-123-ppd/models/train-20260101-000000/model.safetensors",
    "SHADOW_MODEL_URI": "gs://ppd-example-123-ppd/models/sweep-20260102-000000/model.safetensors",
    "SHADOW_FRACTION": "0.1",
    "RUN_NAME": "train-20260101-000000",
    "DOMAIN": "ppd.example.com",
    "REDIS_HOST": "10.40.0.3",
}

# The manifests applied to the cluster, each rendered and checked.
MANIFESTS = (
    "k8s/namespace.yaml",
    "k8s/policies.yaml",
    "k8s/rayservice.yaml",
    "k8s/rayjob-train.yaml",
    "k8s/rayjob-sweep.yaml",
    "k8s/mlflow.yaml",
    "k8s/ingress.yaml",
    "k8s/monitoring/podmonitors.yaml",
    "k8s/monitoring/prometheusrule.yaml",
)


def render(text: str, env: dict[str, str] | None = None) -> str:
    """`text` with its placeholders filled in, as k8s/render.sh does (unknown ones: KeyError)."""
    values = EXAMPLE_ENV if env is None else env
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def load_documents(relative: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The YAML documents of a manifest, rendered."""
    text = render((ROOT / relative).read_text(), env)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def load_one(relative: str, kind: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    docs = [doc for doc in load_documents(relative, env) if doc["kind"] == kind]
    assert len(docs) == 1, f"{relative} should hold exactly one {kind}"
    return docs[0]


def crd_schema(plural: str, version: str = "v1") -> dict[str, Any]:
    """The openAPIV3Schema of a KubeRay CRD in ../shared/kuberay-crds; skips when absent."""
    path = CRD_DIR / f"ray.io_{plural}.yaml"
    if not path.exists():
        pytest.skip(f"{path} is absent: the KubeRay CRDs live in ../shared/kuberay-crds")
    crd = yaml.safe_load(path.read_text())
    for served in crd["spec"]["versions"]:
        if served["name"] == version:
            return served["schema"]["openAPIV3Schema"]
    raise AssertionError(f"{path} has no version {version}")


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of `schema` where every object that lists properties refuses unknown keys."""
    schema = copy.deepcopy(schema)
    for node in _walk(schema):
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
    return schema


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def pod_templates(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The Ray pod templates of a RayService or RayJob, by group ("head", worker group names)."""
    spec = obj["spec"]
    cluster = spec.get("rayClusterConfig") or spec["rayClusterSpec"]
    templates = {"head": cluster["headGroupSpec"]["template"]}
    for group in cluster.get("workerGroupSpecs", []):
        templates[group["groupName"]] = group["template"]
    return templates


def find_tool(name: str) -> str | None:
    """An executable on PATH, beside this Python, or in .venv-tools (the isolated tools)."""
    candidates = [
        shutil.which(name),
        str(Path(sys.executable).parent / name),
        str(ROOT / ".venv-tools" / "bin" / name),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_tool(name: str, how: str) -> str:
    """The tool's path, or skip the test saying how to install it."""
    path = find_tool(name)
    if path is None:
        pytest.skip(f"{name} is not installed ({how})")
    return path


def load_script(relative: str) -> ModuleType:
    """A Python script of the repository (k8s/generate.py...) imported as a module."""
    path = ROOT / relative
    name = "ppd_" + path.stem
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
