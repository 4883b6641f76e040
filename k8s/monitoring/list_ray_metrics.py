"""Lists the metric families Ray itself exports, for checking the dashboard and the alerts.

It starts a private Ray instance with a metrics port, runs a tiny Serve application with
autoscaling, sends it a few requests (one failing), reads the node's /metrics after Ray's
exporter has caught up, and adds the node gauges the dashboard agent exports only on machines
that have them (GPUs). Writes k8s/monitoring/ray-metrics.txt, one family a line:

    python k8s/monitoring/list_ray_metrics.py    # about 40 s
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
import urllib.request
from pathlib import Path

OUTPUT = Path(__file__).with_name("ray-metrics.txt")
EXPORT_WAIT_S = 25  # Ray's exporter publishes every ~10 s
_TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _families(metrics_text: str) -> dict[str, str]:
    """Exported family name -> type, from Prometheus text."""
    return {
        m.group(1): m.group(2)
        for line in metrics_text.splitlines()
        if (m := _TYPE_LINE.match(line))
    }


def probe() -> dict[str, str]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import serve
    from ray.dashboard.modules.reporter.reporter_agent import METRICS_GAUGES

    metrics_port, http_port = _free_port(), _free_port()
    ray.init(num_cpus=2, include_dashboard=False, _metrics_export_port=metrics_port)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": http_port})

        @serve.deployment(
            autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2}
        )
        class Probe:
            async def __call__(self, request) -> str:
                if request.url.path.endswith("fail"):
                    raise RuntimeError("a failing request, for the error metrics")
                return "ok"

        serve.run(Probe.bind(), name="probe", route_prefix="/")  # type: ignore[attr-defined]
        for path in ("/", "/", "/fail"):
            url = f"http://127.0.0.1:{http_port}{path}"
            with contextlib.suppress(OSError):  # the failing one answers 500
                urllib.request.urlopen(url, timeout=10).read()  # nosec B310

        time.sleep(EXPORT_WAIT_S)
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()  # noqa: S310  # nosec B310
        families = _families(text)
        serve.shutdown()
    finally:
        ray.shutdown()
    for name in METRICS_GAUGES:  # node gauges, GPU ones included
        families.setdefault(f"ray_{name}", "gauge")
    return families


def main() -> None:
    families = probe()
    import ray

    lines = [
        f"# Metric families Ray {ray.__version__} exports (written by",
        "# `python k8s/monitoring/list_ray_metrics.py`): name, type.",
        *(f"{name} {kind}" for name, kind in sorted(families.items())),
    ]
    OUTPUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(families)} families to {OUTPUT}")


if __name__ == "__main__":
    main()
