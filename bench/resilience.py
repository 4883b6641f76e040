"""`make resilience`: the fault drills of bench/drills.py against `serve run` on loopback.

The application runs from serve_config.yaml (rate limit off, the given checkpoints); changes go
through `serve deploy`, as an operator would make them. Prints one verdict line per drill and
exits non-zero when any failed.

    python -m bench.resilience --help
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess  # nosec B404
import sys
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path

import yaml

from bench.drills import DRILLS, DrillSize, Target, run_drills
from bench.hostile import hostile_uploads
from bench.inputs import make_inputs
from bench.server_process import ROOT, interruptible, serving_env, stop, wait_healthy
from common.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["ServeRunTarget", "main"]

HOSTILE = "hostile_uploads"  # bench/hostile.py: ten hostile clients under the usual load


class ServeRunTarget:
    """`serve run` of serve_config.yaml on loopback; changes go through `serve deploy`."""

    def __init__(self, checkpoint: Path, shadow_checkpoint: Path, port: int) -> None:
        config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
        config["http_options"]["port"] = port
        for deployment in config["applications"][0]["deployments"]:
            if deployment["name"] in ("Classifier", "Explainer"):
                deployment["user_config"]["model_uri"] = str(checkpoint)
            if deployment["name"] == "Shadow":
                deployment["user_config"]["model_uri"] = str(shadow_checkpoint)
        config["applications"][0]["runtime_env"] = {"env_vars": {"RATE_LIMIT_PER_MINUTE": "0"}}
        self.config = config
        self.url = f"http://127.0.0.1:{port}"
        self._files: list[Path] = []

    def _write(self, config: dict) -> Path:
        handle, path = tempfile.mkstemp(suffix=".yaml", prefix="serve_resilience_")
        os.close(handle)
        Path(path).write_text(yaml.safe_dump(config, sort_keys=False))
        self._files.append(Path(path))
        return Path(path)

    def start(self) -> subprocess.Popen:
        serve = Path(sys.executable).with_name("serve")
        log = ROOT / "artifacts" / "bench" / "resilience_serve_run.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **serving_env(Path(tempfile.mkdtemp(prefix="haproxy-drill-")))}
        # a Ray instance of its own: `serve run` would join any cluster `ray start` left here
        env.setdefault("RAY_ADDRESS", "local")
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(serve), "run", str(self._write(self.config))],  # nosec B603
                cwd=ROOT,
                env=env,
                preexec_fn=interruptible,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_healthy(self.url, self.process)
        except (TimeoutError, RuntimeError):
            stop(self.process)
            raise
        return self.process

    def deploy(self, config: dict) -> None:
        serve = Path(sys.executable).with_name("serve")
        env = {**os.environ, "RAY_AUTH_MODE": "token"}
        subprocess.run(
            [str(serve), "deploy", str(self._write(config))],
            cwd=ROOT,
            env=env,  # nosec B603
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until the new config is running
            status = subprocess.run(
                [str(serve), "status"],
                env=env,
                capture_output=True,  # nosec B603
                text=True,
                check=False,
            ).stdout
            if "status: RUNNING" in status and "UPDATING" not in status:
                return
            time.sleep(1)
        raise TimeoutError("serve deploy did not finish within 120 s")

    def close(self) -> None:
        stop(self.process)
        for path in self._files:
            path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fault drills against `serve run` on loopback.")
    parser.add_argument(
        "--checkpoint", type=Path, default=ROOT / "artifacts" / "demo" / "model.safetensors"
    )
    parser.add_argument(
        "--shadow-checkpoint",
        type=Path,
        default=None,
        help="the shadow and the model rolled out (default: the primary's weights re-versioned)",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="request counts x this")
    parser.add_argument("--fault-after-s", type=float, default=DrillSize.fault_after_s)
    parser.add_argument(
        "--drills", nargs="+", choices=(*DRILLS, HOSTILE), default=[*DRILLS, HOSTILE]
    )
    parser.add_argument("--port", type=int, default=8300)
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "artifacts" / "bench" / "resilience.log",
        help="the verdicts; their figures go beside it as .json",
    )
    args = parser.parse_args(argv)
    if not args.checkpoint.exists():
        print(f"no checkpoint at {args.checkpoint}: run `make demo` (or pass --checkpoint)")
        return 2
    other = args.shadow_checkpoint or _reversioned(args.checkpoint)
    server = ServeRunTarget(args.checkpoint, other, args.port)
    server.start()
    try:
        target = Target(
            url=server.url,
            headers=dict,  # rate limit and auth are off for the drills
            deploy=server.deploy,
            config=server.config,
            images=make_inputs(ROOT / "artifacts" / "bench" / "inputs"),
            ray_root=server.process.pid,  # `serve run` starts the Ray instance
        )
        size = _scaled(DrillSize(fault_after_s=args.fault_after_s), args.scale)
        verdicts = run_drills(
            target, size, str(other), tuple(d for d in args.drills if d in DRILLS)
        )
        if HOSTILE in args.drills:
            verdicts.append(hostile_uploads(target, max(64, int(600 * args.scale))))
            print(verdicts[-1].line(), flush=True)
    finally:
        server.close()
    failed = [v.drill for v in verdicts if not v.passed]
    total = f"{len(verdicts) - len(failed)} passed, {len(failed)} failed"
    print(f"\n{total}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join([*(v.line() for v in verdicts), "", total, ""]))
    args.out.with_suffix(".json").write_text(
        json.dumps({v.drill: {"passed": v.passed, **v.figures} for v in verdicts}, indent=2) + "\n"
    )
    print(f"written to {args.out} and {args.out.with_suffix('.json').name}")
    return 1 if failed else 0


def _reversioned(checkpoint: Path) -> Path:
    """The same weights under another version and path: a rollout that really swaps models."""
    model, meta = load_checkpoint(checkpoint)
    out = ROOT / "artifacts" / "bench" / "rollout_model.safetensors"
    save_checkpoint(model, replace(meta, version=f"{meta.version}-rollout"), out)
    return out


def _scaled(size: DrillSize, scale: float) -> DrillSize:
    counts = {
        f.name: max(64, int(getattr(size, f.name) * scale))
        for f in fields(size)
        if f.type == "int" and f.name != "overload_factor"
    }
    return DrillSize(**{**size.__dict__, **counts})


if __name__ == "__main__":
    sys.exit(main())
