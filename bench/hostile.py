"""The hostile-uploads drill of `make resilience`: ten clients send uploads built to cost CPU,
memory or connection time while `hey` sends the usual load, and the usual load must not notice.

The clients send progressive JPEGs of 5,000 scans (refused from their markers: 413), 16-bit
PNGs of 10000 x 4000 px (legal, 40 M pixels each: decoded, in turn, by a worker of their own),
each as soon as its last answer came and at most one a second (the default per-key rate
limit), and slow headers (one byte every half second on a raw socket, until the edge cuts
them off).
Rounds without and with them alternate (A/B/A/B...), and the medians of the rounds' p99 are
compared, so that the machine's own noise does not decide the verdict.
"""

from __future__ import annotations

import io
import socket
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import numpy as np
from PIL import Image

from bench.drills import Target, Verdict

__all__ = ["HostileClients", "grey16_png", "hostile_uploads", "scan_bomb"]

SCAN_BOMB_CLIENTS = 4
PNG_BOMB_CLIENTS = 3
SLOW_HEADER_CLIENTS = 3  # ten clients in all
UPLOAD_INTERVAL_S = 1.0  # each bomb client's pace: within the default 60 requests/min per key
LOAD_CONCURRENCY = 8
MAX_P99_RATIO = 2.0  # median p99 under attack / median p99 without
_DEPLOYMENTS = ("Ingress", "Preprocessor", "Classifier", "Explainer", "DriftMonitor")


def scan_bomb(side: int = 2000, repeats: int = 5000) -> bytes:
    """A progressive JPEG whose last scan is repeated `repeats` times before its end: a few
    bytes a scan, and libjpeg decodes every one (a CPU bomb: ~16 s at 2000 px, 5000 scans)."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (120, 130, 140)).save(buffer, "JPEG", progressive=True)
    data = buffer.getvalue()
    last_scan, end = data.rfind(b"\xff\xda"), data.rfind(b"\xff\xd9")
    return data[:end] + data[last_scan:end] * repeats + data[end:]


def grey16_png(width: int = 10_000, height: int = 4_000) -> bytes:
    """A 16-bit grey PNG (Pillow mode I;16) of `width` x `height` with thin bright stripes:
    under 100 KB, and 40 M pixels when decoded at the default size (a memory bomb)."""
    pixels = np.zeros((height, width), dtype=np.uint16)
    pixels[:, ::7] = 40_000
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class HostileClients:
    """The ten attacking clients, in threads, for as long as the `with` block lasts."""

    url: str
    headers: dict[str, str]
    statuses: Counter = field(default_factory=Counter)  # (kind, status) of the bomb uploads
    held_s: list[float] = field(default_factory=list)  # how long each slow client was held
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> HostileClients:
        uploads = {"scan_bomb": scan_bomb(), "png_bomb": grey16_png()}
        kinds = ["scan_bomb"] * SCAN_BOMB_CLIENTS + ["png_bomb"] * PNG_BOMB_CLIENTS
        for kind in kinds:
            self._start(self._bombs, kind, uploads[kind])
        for _ in range(SLOW_HEADER_CLIENTS):
            self._start(self._slow_headers)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _start(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _bombs(self, kind: str, data: bytes) -> None:
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=120) as http:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    status = http.post("/predict", files={"file": ("x", data)}).status_code
                except httpx.TransportError:
                    status = 0  # the connection failed: counted, not a 5xx
                self.statuses[(kind, status)] += 1
                self._stop.wait(max(0.0, UPLOAD_INTERVAL_S - (time.monotonic() - started)))

    def _slow_headers(self) -> None:
        host, port = httpx.URL(self.url).host, httpx.URL(self.url).port
        while not self._stop.is_set():
            with socket.create_connection((host, port), timeout=10) as sock:
                started = time.monotonic()
                sock.settimeout(0.5)
                sock.sendall(b"POST /predict HTTP/1.1\r\nHost: ppd\r\nX-Slow: ")
                while not self._stop.is_set():
                    try:
                        sock.sendall(b"a")
                        sock.recv(4096)  # a 408/400, or closed: the edge is done with it
                        break
                    except TimeoutError:
                        continue  # still held: the next byte
                    except OSError:
                        break
                self.held_s.append(time.monotonic() - started)


def hostile_uploads(target: Target, requests: int = 600, rounds: int = 3) -> Verdict:
    """`rounds` A/B rounds of `requests` of the usual load, without and with the ten hostile
    clients: the usual load's median p99 within 2x, no 5xx anywhere, no replica replaced."""
    before = {d: set(target.replica_pids(d)) for d in _DEPLOYMENTS}
    quiet, attacked, fives = [], [], 0
    statuses: Counter = Counter()
    held: list[float] = []
    target.load(LOAD_CONCURRENCY, 32)  # settle: connections, warm replicas
    for _ in range(rounds):
        result = target.load(LOAD_CONCURRENCY, requests)
        quiet.append(result.summary())
        with HostileClients(target.url, target.headers()) as clients:
            result = target.load(LOAD_CONCURRENCY, requests)
        attacked.append(result.summary())
        statuses.update(clients.statuses)
        held.extend(clients.held_s)
    for run in quiet + attacked:
        fives += sum(n for status, n in run["statuses"].items() if int(status) >= 500)
    fives += sum(n for (_, status), n in statuses.items() if status >= 500)
    replaced = {d: sorted(before[d] - set(target.replica_pids(d))) for d in _DEPLOYMENTS}
    replaced = {d: pids for d, pids in replaced.items() if pids}
    quiet_p99 = statistics.median(r["p99_ms"] for r in quiet)
    attacked_p99 = statistics.median(r["p99_ms"] for r in attacked)
    ratio = attacked_p99 / quiet_p99
    passed = ratio <= MAX_P99_RATIO and fives == 0 and not replaced
    bombs = {f"{kind} {status}": n for (kind, status), n in sorted(statuses.items())}
    longest = max(held, default=0.0)
    return Verdict(
        "hostile_uploads",
        passed,
        f"{rounds} A/B rounds of {requests} at c={LOAD_CONCURRENCY}: "
        f"p99 median {quiet_p99:.0f} -> {attacked_p99:.0f} ms (x{ratio:.2f}, at most "
        f"x{MAX_P99_RATIO:g}); 5xx {fives}; bombs {bombs}; slow clients held at most "
        f"{longest:.1f} s; replicas replaced {replaced or 'none'}",
        {
            "quiet": quiet,
            "attacked": attacked,
            "p99_ratio": round(ratio, 3),
            "bomb_statuses": bombs,
            "slow_client_held_s": [round(h, 2) for h in held],
            "replaced": replaced,
        },
    )
