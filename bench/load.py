"""The load generator: `hey` (a small Go client, Debian package) sending the fixed JPEG set.

Each run splits the requests over one `hey` process per input image (concurrency shared out),
reads every request's latency and status from hey's CSV output, and summarises them. The same
client drives the plain server and the served graph, so their figures compare.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess  # nosec B404
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.inputs import multipart_body

__all__ = ["LoadResult", "hey_available", "run_load"]


@dataclass
class LoadResult:
    concurrency: int
    requests: int
    wall_s: float
    images_per_request: int = 1
    latencies_ms: list[float] = field(default_factory=list)  # of 2xx answers
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def errors(self) -> int:
        return self.requests - self.ok

    def summary(self) -> dict:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.asarray([np.nan])
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "images_per_s": round(self.ok * self.images_per_request / self.wall_s, 2)
            if self.wall_s
            else 0.0,
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


def hey_available() -> bool:
    return shutil.which("hey") is not None


def run_load(
    url: str,
    images: list[Path],
    concurrency: int,
    requests: int,
    headers: dict[str, str] | None = None,
    timeout_s: int = 60,
    images_per_request: int = 1,
) -> LoadResult:
    """Send `requests` POSTs at `concurrency`, spread over `images`; wait for all of them.

    With `images_per_request` > 1 each request carries that many files under `files` (for
    `/predict/batch`), and images/s counts images, not requests."""
    hey = shutil.which("hey")
    if hey is None:
        raise RuntimeError("`hey` is not installed: apt-get install hey")
    lanes = min(concurrency, len(images))
    with tempfile.TemporaryDirectory() as tmp:
        commands = []
        for lane in range(lanes):
            if images_per_request == 1:
                body, content_type = multipart_body(images[lane].read_bytes())
            else:
                chosen = [
                    images[(lane + k) % len(images)].read_bytes() for k in range(images_per_request)
                ]
                body, content_type = multipart_body(chosen, field="files")
            body_file = Path(tmp) / f"body{lane}"
            body_file.write_bytes(body)
            lane_concurrency = concurrency // lanes + (lane < concurrency % lanes)
            lane_requests = max(lane_concurrency, requests // lanes + (lane < requests % lanes))
            # hey gives each worker n // c requests: round n up to a multiple of c
            lane_requests = -(-lane_requests // lane_concurrency) * lane_concurrency
            command = [
                hey,
                "-n",
                str(lane_requests),
                "-c",
                str(lane_concurrency),
                "-m",
                "POST",
                "-T",
                content_type,
                "-D",
                str(body_file),
                "-t",
                str(timeout_s),
                "-o",
                "csv",
            ]
            for name, value in (headers or {}).items():
                command += ["-H", f"{name}: {value}"]
            commands.append([*command, url])
        started = time.perf_counter()
        processes = [
            subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # nosec B603
            for c in commands
        ]
        outputs = [p.communicate()[0] for p in processes]
        wall = time.perf_counter() - started
    result = LoadResult(concurrency, 0, wall, images_per_request=images_per_request)
    for output in outputs:
        for row in csv.DictReader(io.StringIO(output)):
            status = int(row["status-code"])
            result.requests += 1
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if 200 <= status < 300:
                result.latencies_ms.append(float(row["response-time"]) * 1000.0)
    return result
