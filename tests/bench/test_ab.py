"""`make bench-ab`'s parts: a commit's worktree, the alternating order, a burst's figures and
CPU from a real server, and the summary of the rounds."""

import math
import shutil
import subprocess

import pytest

from bench.ab import burst, round_order, summarise, worktree
from bench.inputs import make_inputs
from bench.server_process import free_port, stop, wait_healthy
from bench.serving import ROOT, start_baseline


def test_a_commit_is_checked_out_beside_and_removed_afterwards():
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    with worktree(head) as tree:
        assert tree != ROOT and (tree / "serve_config.yaml").exists()
        checked_out = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"],
                                     capture_output=True, text=True, check=True)  # fmt: skip
        assert checked_out.stdout.strip() == head
    assert not tree.exists()
    listed = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    assert str(tree) not in listed
    with worktree(None) as tree:
        assert tree == ROOT


def test_the_trees_take_turns_going_first():
    assert [round_order(i) for i in range(4)] == [("A", "B"), ("B", "A"), ("A", "B"), ("B", "A")]


def _round(a_rate: float, b_rate: float, a_cpu: dict, b_cpu: dict) -> dict:
    def side(rate: float, cpu: dict) -> dict:
        return {"images_per_s": rate, "requests": 100, "errors": 0, "p50_ms": 1, "cpu_s": cpu}

    return {"A": side(a_rate, a_cpu), "B": side(b_rate, b_cpu)}


def test_the_summary_is_the_rounds_ratios_and_each_trees_cpu_per_request():
    rounds = [
        _round(100, 110, {"Ingress": 0.4, "Classifier": 0.2}, {"Ingress": 0.5}),
        _round(200, 180, {"Ingress": 0.4}, {"Ingress": 0.3, "Classifier": 0.1}),
        _round(100, 100, {"Ingress": 0.2}, {"Ingress": 0.2}),
    ]
    summary = summarise(rounds)
    assert summary["ratios"] == [1.1, 0.9, 1.0]
    assert summary["geometric_mean"] == round(math.exp(math.log(1.1 * 0.9) / 3), 3) == 0.997
    assert summary["median"] == 1.0
    assert summary["errors"] == {"A": 0, "B": 0}
    assert summary["A_images_per_s_median"] == 100
    # CPU seconds over all of a tree's bursts, per request, in ms: A 1.0 s + 0.2 s over 300
    assert summary["A_cpu_ms_per_request"] == {"Ingress": 3.33, "Classifier": 0.67, "total": 4.0}
    assert summary["B_cpu_ms_per_request"] == {"Ingress": 3.33, "Classifier": 0.33, "total": 3.67}


@pytest.mark.skipif(shutil.which("hey") is None, reason="hey is not installed (apt install hey)")
def test_a_burst_gives_the_load_figures_and_the_servers_cpu_by_role(checkpoints, tmp_path):
    inputs = make_inputs(tmp_path / "inputs", per_size=1)
    port = free_port()
    server = start_baseline(checkpoints["primary"], port, threads=1)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server)
        figures = burst(f"http://127.0.0.1:{port}", inputs, concurrency=2, requests=10,
                        cpu_root=server.pid)  # fmt: skip
    finally:
        stop(server)
    assert figures["requests"] == 10 and figures["errors"] == 0
    assert figures["images_per_s"] > 0
    assert figures["cpu_s"]["other"] > 0  # the one-process server's CPU while it answered
