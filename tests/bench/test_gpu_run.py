"""The GPU run's rehearsal: `bench/gpu_run.sh --device cpu --quick` end to end, so that the
lent GPU's minutes are never spent on a broken script. Real processes throughout: the Ray
Train driver makes the checkpoint, `serve run` serves it, `hey` loads it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu_summary import summarise

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.rehearsal,  # `make bench-gpu-rehearsal`: minutes, so not part of `make test`
    pytest.mark.skipif(
        shutil.which("hey") is None, reason="hey is not installed (apt install hey)"
    ),
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-run")
    # its own Ray instances, not the test session's
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE")}
    env["PYTHON"] = sys.executable
    done = subprocess.run(
        ["bash", "bench/gpu_run.sh", "--device", "cpu", "--quick", "--budget-s", "900", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1000,
    )
    print(done.stdout[-4000:], done.stderr[-2000:])
    return out, done


def _json(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.json").read_text())


def test_every_stage_succeeds_within_its_budget(run):
    out, done = run
    assert done.returncode == 0, done.stdout[-3000:]
    rows = [line.split("\t") for line in (out / "stages.tsv").read_text().splitlines()[1:]]
    stages = {name: status for name, status, _ in rows}
    assert list(stages) == [
        "env", "data", "checkpoint", "served", "limit", "baseline", "training", "summary",
    ]  # fmt: skip
    failed = {name: status for name, status in stages.items() if status != "0"}
    logs = {name: (out / f"{name}.log").read_text()[-1500:] for name in failed}
    assert failed == {}, logs


def test_environment_names_the_machine_and_the_gpu_state(run):
    env = _json(run[0], "env")
    assert env["device"] == "cpu" and env["quick"] is True
    assert env["machine"]["cores"] >= 1
    assert env["gpu"]["torch_sees_gpu"] is False
    assert set(env["packages"]) >= {"torch", "timm", "ray"}


def test_the_checkpoint_is_a_real_one_in_the_serving_format(run):
    from common.checkpoint import load_checkpoint

    out = run[0]
    info = _json(out, "checkpoint")
    _, meta = load_checkpoint(str(out / "model.safetensors"))
    assert info["architecture"] == meta.architecture == "efficientnet_b0"
    assert info["image_size"] == meta.image_size == 64  # --quick; 224 on the GPU
    assert info["train_images_per_s"] > 0


def test_limit_has_decode_and_both_precisions(run):
    limit = _json(run[0], "limit")
    assert limit["decode"]["processes"] >= 1 and limit["decode"]["images_per_s"] > 0
    assert set(limit["forward"]) == {"bf16", "fp32"}
    assert set(limit["forward"]["fp32"]) == {"1", "8"}  # --quick batch sizes
    assert limit["served_precision"] == "fp32"  # the Classifier's precision on a CPU
    assert limit["bound_by"] in ("decode", "forward")
    assert limit["images_per_s"] == min(
        limit["decode"]["images_per_s"], limit["forward_images_per_s"]
    )


@pytest.mark.parametrize("system", ["served", "baseline"])
def test_load_levels_carry_throughput_latency_errors_and_gpu(run, system):
    levels = _json(run[0], system)["levels"]
    assert [row["concurrency"] for row in levels] == [1, 4]  # --quick levels
    for row in levels:
        assert row["errors"] == 0, row
        assert row["images_per_s"] > 0 and row["p50_ms"] <= row["p99_ms"]
        assert row["gpu"] == {
            "samples": 0, "util_mean": None, "util_max": None, "mem_max_mib": None,
            "note": "nvidia-smi not found",
        }  # fmt: skip


def test_served_config_is_the_gpu_graph_shape(run):
    changes = _json(run[0], "served")["config_changes"]
    assert changes["Ingress"]["preprocess_in_ingress"] is False
    assert changes["Preprocessor"]["num_replicas"] == 1


def test_correctness_compares_64_served_probabilities_with_the_cpu_pipeline(run):
    report = _json(run[0], "correctness")
    served = report["served"]
    assert served["images"] == 64 and len(report["probabilities"]["served"]) == 64
    # CPU served against CPU in-process: the same arithmetic up to batch composition
    assert served["max_abs_dp"] < 1e-4
    assert served["label_flips_outside_band"] == 0 and served["passed"] is True


def test_training_compares_ray_train_with_a_plain_loop(run):
    training = _json(run[0], "training")
    assert training["plain_loop"] > 0 and training["ray_train_1_worker"] > 0
    assert training["ratio_1_worker"] == pytest.approx(
        training["ray_train_1_worker"] / training["plain_loop"], abs=1e-3
    )


def test_summary_has_the_table_and_both_targets(run):
    out = run[0]
    markdown = (out / "summary.md").read_text()
    assert markdown == summarise(out)["markdown"]
    assert "| served | 4 |" in markdown and "| baseline | 1 |" in markdown
    targets = _json(out, "summary")["targets"]
    assert [t["goal"] for t in targets] == [0.7, 10.0]
    # --quick stops at c=4: the c=64 targets are honestly "not measured"
    assert {t["verdict"] for t in targets} == {"not measured"}
