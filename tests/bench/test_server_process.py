"""`python -m bench.server_process wait-healthy PID URL`, `make serve`'s readiness wait, against
a real HTTP server and a real process."""

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import ROOT


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture()
def health_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _wait(pid: int, url: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bench.server_process", "wait-healthy", str(pid), url]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_it_returns_once_health_answers(health_url):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        assert _wait(sleeper.pid, health_url).returncode == 0
    finally:
        sleeper.kill()
        sleeper.wait()


def test_it_fails_once_the_server_process_is_gone(health_url):
    gone = subprocess.Popen(["true"])
    gone.wait()
    done = _wait(gone.pid, f"{health_url}/nothing-here")  # /nothing-here/health answers 404
    assert done.returncode == 1
    assert "the server exited before it was ready" in done.stderr
