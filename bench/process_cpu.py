"""Where a served request's CPU goes: CPU time of a process tree by role, from Linux's /proc.

`snapshot(root)` sums `utime + stime` of `root` and every process below it by what the
process is: a Serve replica by its deployment (`Ingress`, `Classifier`, ...), Serve's
controller, the HAProxy binary, Ray's own processes. Two snapshots around a load give each
role's CPU per request (`per_request`). On two cores a graph that is CPU-bound serves at
most 2000 / (its total ms per request) requests a second, so these figures say which part
to make cheaper, and they drift less with the machine's speed than throughput does.

A process that exits between the snapshots takes its CPU with it (a recycled decode worker's,
say); CPU is counted in the kernel's clock ticks (10 ms), so use loads of hundreds of requests.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

__all__ = ["per_request", "role_of", "snapshot", "tree"]

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
# Ray names a replica's worker "ray::ServeReplica:<app>:<deployment>"
_REPLICA = re.compile(r"ServeReplica:[^:\s]+:([A-Za-z0-9_]+)")
_RAY_PARTS = (
    "ServeController", "ProxyActor", "HAProxyManager", "raylet", "gcs_server",
    "DashboardAgent", "RuntimeEnvAgent", "dashboard", "runtime_env",
)  # fmt: skip


def role_of(command_line: str) -> str:
    """What a process is, from its command line (Ray sets a worker's to its actor's name)."""
    if match := _REPLICA.search(command_line):
        return match.group(1)
    if "haproxy" in command_line.split(" ", 1)[0]:
        return "haproxy"
    for part in _RAY_PARTS:
        if part in command_line:
            return part
    return "other"


def _processes() -> dict[int, tuple[int, float, str]]:
    """pid -> (parent pid, CPU seconds so far, command line) of every live process."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # exited meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
        cpu = (int(fields[11]) + int(fields[12])) * _TICK_S  # utime + stime
        out[int(entry.name)] = (int(fields[1]), cpu, command.strip())
    return out


def _tree(root: int) -> dict[int, tuple[float, str]]:
    """pid -> (CPU seconds so far, command line) of `root` and its live descendants."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    found, pending = {}, [root]
    while pending:
        pid = pending.pop()
        if pid in processes:
            found[pid] = processes[pid][1:]
        pending.extend(children.get(pid, []))
    return found


def tree(root: int) -> dict[int, str]:
    """pid -> command line of `root` and its live descendants: a Ray instance's processes are
    those below the process that started it (`ray.init`, `serve run`)."""
    return {pid: command for pid, (_, command) in _tree(root).items()}


def snapshot(root: int) -> Counter[str]:
    """CPU seconds so far of `root` and its descendants, summed by `role_of`."""
    totals: Counter[str] = Counter()
    for cpu, command in _tree(root).values():
        totals[role_of(command)] += cpu
    return totals


def per_request(before: Counter[str], after: Counter[str], requests: int) -> dict[str, float]:
    """Each role's CPU milliseconds per request between two snapshots, largest first, with
    their sum as "total"."""
    spent = {role: (after[role] - before.get(role, 0.0)) * 1000.0 / requests for role in after}
    rows = {role: round(ms, 2) for role, ms in sorted(spent.items(), key=lambda kv: -kv[1])}
    return rows | {"total": round(sum(spent.values()), 2)}
