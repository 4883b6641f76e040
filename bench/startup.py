"""`make bench-startup`: how long a second `make serve` takes to answer, against Ray Serve's floor.

Each round starts, one after the other and each with a Ray instance of its own, Serve's
smallest application (`bench.serve_floor`: one replica) and the application graph of
`serve_config.yaml` with the demo model, both through `make serve` (so the same `serving.env`,
HAProxy front end and readiness poll), and times each from the spawn to the first 200 from
`/health`. At that moment it sums the CPU each process of the tree has spent (by role:
`bench.process_cpu`), then stops it as Ctrl-C does. Start-up on two cores is CPU-bound, so the
CPU by role says what a second costs; the graph's time over the floor's, round by round,
drifts less with the machine's speed than either time does.

    python -m bench.startup --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess  # nosec B404
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TypedDict

import yaml

from bench import process_cpu
from bench.server_process import answers, interruptible, wait_healthy

__all__ = ["StartUp", "floor_config", "main", "start_up", "summarise", "user_environment"]

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "artifacts" / "bench" / "startup.json"
URL = "http://127.0.0.1:8000"  # serve_config.yaml's http_options: make serve's
HEALTH_URL = f"{URL}/health"
START_TIMEOUT_S = 300
STOP_TIMEOUT_S = 90
POLL_S = 0.2


class StartUp(TypedDict):
    """One start: the seconds until /health answered, and the CPU seconds by role then."""

    seconds: float
    cpu_s: dict[str, float]


def floor_config(path: Path) -> Path:
    """A config of serve_config.yaml's proxy, HTTP and logging options whose one application
    is `bench.serve_floor`, written to `path`."""
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config["applications"] = [
        {"name": "floor", "route_prefix": "/", "import_path": "bench.serve_floor:app"}
    ]
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def user_environment() -> dict[str, str]:
    """A user's shell (serving.env brings the Serve settings): no RAY_* or app settings of the
    calling process, a Ray instance of its own."""
    shell = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR")
    return {k: os.environ[k] for k in shell if k in os.environ} | {"RAY_ADDRESS": "local"}


def start_up(serve_config: str | None, log: Path) -> StartUp:
    """`make serve` (with `SERVE_CONFIG=serve_config` when given) until /health answers; the
    time, the CPU of its process tree by role, then Ctrl-C to its process group."""
    command = ["make", "--no-print-directory", "serve"]
    if serve_config:
        command.append(f"SERVE_CONFIG={serve_config}")
    started = time.monotonic()
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=user_environment(), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # nosec B603
            preexec_fn=interruptible,
        )  # fmt: skip
    try:
        try:
            wait_healthy(URL, process, START_TIMEOUT_S, POLL_S)
        except (RuntimeError, TimeoutError) as exc:  # where to look, as before the shared wait
            raise type(exc)(f"make serve: {exc}; see {log}") from None
        seconds = time.monotonic() - started
        cpu = process_cpu.snapshot(process.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group is gone when make failed
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    _wait_port_free()
    return StartUp(seconds=round(seconds, 2), cpu_s={k: round(v, 2) for k, v in cpu.items()})


def _wait_port_free(timeout_s: float = 60) -> None:
    """Until nothing answers on the demo's port (Ray's processes leave after `make` does)."""
    deadline = time.monotonic() + timeout_s
    while answers(HEALTH_URL) and time.monotonic() < deadline:
        time.sleep(1)
    time.sleep(2)  # the last Ray processes exit and free their CPU


def summarise(rounds: list[dict[str, StartUp]]) -> dict:
    """Medians over the rounds of each start's seconds and total CPU, the graph's over the
    floor's per round, and the median round's CPU by role for each."""

    def median_round(kind: str) -> StartUp:
        ordered = sorted(rounds, key=lambda r: r[kind]["seconds"])
        return ordered[(len(ordered) - 1) // 2][kind]

    summary = {}
    for kind in ("floor", "graph"):
        summary[kind] = {
            "seconds": round(statistics.median(r[kind]["seconds"] for r in rounds), 2),
            "cpu_s": round(statistics.median(sum(r[kind]["cpu_s"].values()) for r in rounds), 1),
            "cpu_s_by_role": dict(Counter(median_round(kind)["cpu_s"]).most_common()),
        }
    ratios = [r["graph"]["seconds"] / r["floor"]["seconds"] for r in rounds]
    summary["graph_over_floor"] = round(statistics.median(ratios), 2)
    return summary


def print_table(rounds: list[dict[str, StartUp]], summary: dict) -> None:
    print(f"{'round':>5} {'floor s':>8} {'graph s':>8} {'ratio':>6} {'floor CPU s':>12} "
          f"{'graph CPU s':>12}")  # fmt: skip
    for i, r in enumerate(rounds, 1):
        floor, graph = r["floor"], r["graph"]
        print(
            f"{i:>5} {floor['seconds']:>8.1f} {graph['seconds']:>8.1f} "
            f"{graph['seconds'] / floor['seconds']:>6.2f} {sum(floor['cpu_s'].values()):>12.1f} "
            f"{sum(graph['cpu_s'].values()):>12.1f}"
        )
    print(
        f"median: floor {summary['floor']['seconds']} s, graph {summary['graph']['seconds']} s, "
        f"graph/floor {summary['graph_over_floor']}"
    )
    for kind in ("floor", "graph"):
        roles = ", ".join(f"{k} {v:g}" for k, v in summary[kind]["cpu_s_by_role"].items())
        print(f"{kind} CPU s by role (median round): {roles}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if answers(HEALTH_URL):
        parser.error(f"{HEALTH_URL} already answers: stop the other `make serve` first")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    log = args.out.with_suffix(".log")
    log.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="startup-floor-") as folder:
        config = floor_config(Path(folder) / "floor.yaml")
        rounds = []
        for i in range(args.rounds):
            rounds.append({"floor": start_up(str(config), log), "graph": start_up(None, log)})
            print(f"round {i + 1}: floor {rounds[-1]['floor']['seconds']} s, "
                  f"graph {rounds[-1]['graph']['seconds']} s", flush=True)  # fmt: skip
    summary = summarise(rounds)
    print_table(rounds, summary)
    args.out.write_text(json.dumps({"rounds": rounds, "summary": summary}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
