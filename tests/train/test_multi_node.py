import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.train, pytest.mark.slow]


def test_workers_land_on_both_nodes_of_a_two_node_cluster_and_training_completes(
    tiny_demo, tmp_path
):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests/train/two_node_training.py"), str(tiny_demo),
         str(tmp_path / "runs")],
        env=env, capture_output=True, text=True, timeout=400, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert result["epoch"] == 1
    assert len(result["cluster_nodes"]) == 2
    assert result["num_nodes"] == 2
    # reported by the workers themselves, in rank order: one worker on each node
    assert sorted(result["worker_node_ids"].split(",")) == result["cluster_nodes"]
