"""`make bench-startup`'s parts that need no Ray instance of their own: the floor's config is one
Serve accepts and starts as `make serve` starts the graph, and the report's medians and ratios.
(`tests/deployments/test_make_serve.py` runs `make serve` itself end to end.)"""

import subprocess
import sys

import pytest
import yaml
from ray.serve.deployment import Application
from ray.serve.schema import ServeDeploySchema

import bench.serve_floor
from bench.startup import floor_config, start_up, summarise
from tests.conftest import ROOT


def test_the_floor_config_is_serve_config_yaml_with_the_one_replica_app(tmp_path):
    floor = yaml.safe_load(floor_config(tmp_path / "floor.yaml").read_text())
    graph = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    ServeDeploySchema.model_validate(floor)
    for key in ("proxy_location", "http_options", "logging_config"):
        assert floor[key] == graph[key]
    (app,) = floor["applications"]
    assert app["import_path"] == "bench.serve_floor:app"
    assert isinstance(bench.serve_floor.app, Application)


def test_the_measuring_process_imports_neither_torch_nor_ray():
    # its CPU and imports would compete with the start it times
    code = "import sys, bench.startup; print(sorted({'torch', 'ray'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr


def test_a_make_serve_that_fails_is_reported_with_its_log(tmp_path):
    log = tmp_path / "startup.log"
    with pytest.raises(RuntimeError, match=f"exited with 2 before it was ready; see {log}"):
        start_up(str(tmp_path / "no-such-config.yaml"), log)
    assert log.read_text()  # make's and serve run's own words are there


def _start(seconds: float, **cpu: float) -> dict:
    return {"seconds": seconds, "cpu_s": cpu}


def test_the_summary_takes_medians_and_the_graph_over_the_floor_round_by_round():
    rounds = [
        {"floor": _start(20, other=10), "graph": _start(50, Classifier=30, other=20)},
        {"floor": _start(30, other=12), "graph": _start(60, Classifier=40, other=21)},
        {"floor": _start(25, other=11), "graph": _start(75, Classifier=50, other=22)},
    ]
    summary = summarise(rounds)
    assert summary["floor"]["seconds"] == 25 and summary["graph"]["seconds"] == 60
    assert summary["floor"]["cpu_s"] == 11 and summary["graph"]["cpu_s"] == 61
    assert summary["graph_over_floor"] == 2.5  # median of 2.5, 2.0 and 3.0
    assert summary["graph"]["cpu_s_by_role"] == {"Classifier": 40, "other": 21}  # 60 s round
