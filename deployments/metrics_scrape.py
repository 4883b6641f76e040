"""`GET /metrics`: the application's `ray_ppd_*` families from every node, without Ray's
runtime labels.

Ray's exporter aggregates the replicas' `ray.serve.metrics` per node; this reads each alive
node's metrics port and keeps only our families, and of their labels only the lowercase ones
(Serve's application/deployment/replica, ours, and `le`): Ray's CamelCase runtime labels
(SessionName, WorkerId, NodeAddress, JobId, ...) say where the cluster runs, and the route is open.
"""

from __future__ import annotations

import re

import aiohttp
import ray

from deployments.metrics import METRIC_PREFIX

__all__ = ["METRICS_TIMEOUT_S", "application_metrics"]

METRICS_TIMEOUT_S = 5.0
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')  # name="escaped value"


async def application_metrics() -> str:
    """`ray_ppd_*` families from every alive node's Ray metrics endpoint."""
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("MetricsExportPort")]
    texts = []
    timeout = aiohttp.ClientTimeout(total=METRICS_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for node in nodes:
            url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
            try:
                async with session.get(url) as response:
                    texts.append(await response.text())
            except (aiohttp.ClientError, TimeoutError):
                continue  # a node that cannot be read now is missing from this scrape
    return _only_application_families(texts)


def _only_application_families(texts: list[str]) -> str:
    seen_headers: set[str] = set()
    lines = []
    for text in texts:
        for line in text.splitlines():
            if line.startswith("#"):
                parts = line.split(maxsplit=3)
                if (
                    len(parts) >= 3
                    and parts[2].startswith(METRIC_PREFIX)
                    and line not in seen_headers
                ):
                    seen_headers.add(line)
                    lines.append(line)
            elif line.startswith(METRIC_PREFIX):
                lines.append(_without_runtime_labels(line))
    return "\n".join(lines) + "\n"


def _without_runtime_labels(sample: str) -> str:
    """A sample line keeping only the lowercase labels: Serve's (application, deployment,
    replica), ours (route, status, kind, ...) and `le`. Ray's runtime labels are CamelCase
    (SessionName, WorkerId, NodeAddress, JobId, Version, Component) and say where the
    cluster runs, not what the application does: the open route does not show them."""
    name, brace, rest = sample.partition("{")
    if not brace:
        return sample
    labels, _, value = rest.rpartition("}")
    kept = [m.group(0) for m in _LABEL.finditer(labels) if m.group(1).islower()]
    return f"{name}{{{','.join(kept)}}}{value}"
