"""The Ingress as a Ray Serve maintainer would read it: no import cycle in deployments/, no torch
in the replicas that do not run a model, and typed user_configs that refuse a wrong type at
deploy time while the running replicas keep their old config."""

import ast
import copy
import os
from pathlib import Path

import pytest
import ray
from pydantic import ValidationError
from ray import serve

from bench.drills import replica_pids
from deployments.drift import DriftMonitorConfig
from deployments.ingress import IngressConfig
from tests.conftest import APP_NAME, ROOT, deploy, deployment, reconfigured
from tests.images import image_bytes

TORCH_LIBRARY = "libtorch_cpu.so"
LIGHT_DEPLOYMENTS = ("Ingress", "DriftMonitor", "RateLimiter", "Preprocessor")


def _imports_of(path: Path) -> set[str]:
    """Every `deployments.*` module a file imports, anywhere in it (TYPE_CHECKING and
    function-local imports included: a cycle hidden there is still a cycle)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("deployments.")}


def test_deployments_have_no_import_cycle_and_common_never_imports_them():
    graph = {f"deployments.{p.stem}": _imports_of(p) for p in (ROOT / "deployments").glob("*.py")}
    visiting, done = set(), set()

    def visit(module: str, path: list[str]) -> None:
        assert module not in visiting, f"import cycle: {' -> '.join([*path, module])}"
        if module in done:
            return
        visiting.add(module)
        for imported in graph.get(module, ()):
            visit(imported, [*path, module])
        visiting.discard(module)
        done.add(module)

    for module in graph:
        visit(module, [])
    for path in (ROOT / "common").glob("*.py"):
        assert not _imports_of(path), f"{path.name} imports deployments/"


CONTRACT_ROUTES = {"/predict", "/predict/batch", "/predict/explain", "/predict/compare",
                   "/health", "/healthz", "/metrics", "/"}  # fmt: skip


def _route_decorators(tree: ast.Module) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """(path, decorated function) for every `@app.<verb>(path)` in a module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for decorator in node.decorator_list:
                if (
                    isinstance(decorator, ast.Call)
                    and isinstance(decorator.func, ast.Attribute)
                    and isinstance(decorator.func.value, ast.Name)
                    and decorator.func.value.id == "app"
                    and decorator.args
                    and isinstance(decorator.args[0], ast.Constant)
                ):
                    found.append((decorator.args[0].value, node))
    return found


def test_every_route_is_a_method_of_the_ingress_and_no_serve_hook_builds_the_app():
    """Routes as Serve documents them: each `@app.<verb>(path)` decorates a method of the
    `@serve.ingress(app)` class, so a route and its handler are one function; nothing in
    deployments/ uses Serve's undocumented `__serve_build_asgi_app__` hook."""
    tree = ast.parse((ROOT / "deployments/ingress.py").read_text())
    (ingress,) = [node for node in tree.body if isinstance(node, ast.ClassDef)
                  and node.name == "Ingress"]  # fmt: skip
    methods = {id(node) for node in ingress.body}
    routes = _route_decorators(tree)
    assert {path for path, _ in routes} >= CONTRACT_ROUTES
    assert [path for path, function in routes if id(function) not in methods] == []
    assert any(
        isinstance(d, ast.Call) and ast.unparse(d) == "serve.ingress(app)"
        for d in ingress.decorator_list
    )
    for path in (ROOT / "deployments").glob("*.py"):
        assert "__serve_build_asgi_app__" not in path.read_text(), path.name
        if path.name != "ingress.py":
            assert _route_decorators(ast.parse(path.read_text())) == [], path.name


def _mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.serve
def test_only_the_model_replicas_load_torch(served_app, client):
    # The Preprocessor scales to zero while the Ingress decodes: a call through it starts one.
    with reconfigured(served_app, {"Ingress": {"preprocess_in_ingress": False}}):
        response = client.post("/predict", files={"file": ("p.jpg", image_bytes(2))})
    assert response.status_code == 200, response.text
    for name in LIGHT_DEPLOYMENTS:
        pids = replica_pids(name, os.getpid())
        assert pids, f"no {name} replica"
        for pid in pids:
            assert TORCH_LIBRARY not in _mapped_libraries(pid), f"{name} replica loads torch"
            print(f"{name} replica {pid}: {_rss_mib(pid):.0f} MiB RSS")
    (classifier, *_) = replica_pids("Classifier", os.getpid())
    assert TORCH_LIBRARY in _mapped_libraries(classifier)  # the check can see torch
    print(f"Classifier replica {classifier}: {_rss_mib(classifier):.0f} MiB RSS")


@pytest.mark.parametrize(
    ("config_class", "key", "value"),
    [(IngressConfig, "preprocess_in_ingress", "false"), (IngressConfig, "gather_max_images", "16"),
     (IngressConfig, "shadow_fraction", 1.5), (IngressConfig, "unknown_key", 1),
     (DriftMonitorConfig, "window_size", 10.5), (DriftMonitorConfig, "min_samples", 0)],
)  # fmt: skip
def test_user_configs_refuse_wrong_types_ranges_and_keys_by_name(config_class, key, value):
    with pytest.raises(ValidationError, match=key):
        config_class.model_validate({key: value})
    assert config_class.model_validate({"save_interval_s": 1} if config_class is
                                       DriftMonitorConfig else {"gather_wait_s": 0})  # fmt: skip


@pytest.mark.serve
def test_a_wrong_type_fails_the_deploy_by_name_and_the_old_config_keeps_serving(served_app, client):
    name, key, value = "Ingress", "preprocess_in_ingress", "false"  # a string is not a bool
    config = copy.deepcopy(served_app.config)
    deployment(config, name)["user_config"][key] = value
    with pytest.raises(RuntimeError, match="failed"):
        deploy(config)
    try:
        message = serve.status().applications[APP_NAME].deployments[name].message
        assert key in message, message  # the deployment's status names the key
        response = client.post("/predict", files={"file": ("k.jpg", image_bytes(2))})
        assert response.status_code == 200, response.text
    finally:
        deploy(served_app.config)
    assert ray.is_initialized()
