"""The local monitoring stack: an MLflow server and Prometheus (and Grafana, where installed) on
loopback, without Docker. `python -m observe up` (`make observe`) runs them in the foreground
until Ctrl-C or `python -m observe stop`; `python -m observe render` writes only their
configuration (`observe.config`; docker-compose.yml's `config` service runs it).

Prometheus scrapes the Ray nodes listed in the service-discovery file Ray's dashboard writes, or
the application's `GET /metrics`. Everything the stack writes lives under one folder
(`.observe/`), which also records the processes for `stop`.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess  # nosec B404
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from observe.config import DASHBOARD, HOST, RAY_SERVICE_DISCOVERY, grafana_env, render

__all__ = ["main", "parser"]

STATE_FILE = "observe.json"  # in the data folder: the supervisor's pid and its services'
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Service:
    """One process of the stack and the URL that answers 200 once it is ready."""

    name: str
    argv: list[str]
    url: str
    ready_path: str
    env: dict[str, str] = field(default_factory=dict)


class ServiceFailed(RuntimeError):
    """A service did not start, or stopped on its own."""


def services(args: argparse.Namespace, data: Path, prometheus: str) -> list[Service]:
    """The stack's processes: MLflow, Prometheus, and Grafana when `grafana-server` is installed."""
    mlflow = data / "mlflow"
    stack = [
        Service(
            "mlflow",
            [sys.executable, "-m", "mlflow", "server", "--host", HOST,
             "--port", str(args.mlflow_port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{mlflow / 'mlflow.db'}",
             "--artifacts-destination", str(mlflow / "artifacts")],
            f"http://{HOST}:{args.mlflow_port}",
            "/health",
            # no job-runner processes (trace rollups, prompt jobs): tracking and registry only
            {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        ),
        Service(
            "prometheus",
            [prometheus,
             f"--config.file={data / 'prometheus' / 'prometheus.yml'}",
             f"--storage.tsdb.path={data / 'prometheus' / 'data'}",
             f"--web.listen-address={HOST}:{args.prometheus_port}"],
            f"http://{HOST}:{args.prometheus_port}",
            "/-/ready",
        ),
    ]  # fmt: skip
    grafana = shutil.which("grafana-server")
    if grafana:
        home = data / "grafana"
        stack.append(
            Service(
                "grafana",
                [grafana, "--homepath", _grafana_home(grafana)],
                f"http://{HOST}:{args.grafana_port}",
                "/api/health",
                {
                    **grafana_env(
                        args.grafana_port,
                        str(home / "provisioning"),
                        str(home / "dashboards" / DASHBOARD.name),
                    ),
                    "GF_PATHS_DATA": str(home / "data"),
                    "GF_PATHS_LOGS": str(home / "logs"),
                    "GF_PATHS_PLUGINS": str(home / "plugins"),
                },
            )
        )
    return stack


def up(args: argparse.Namespace) -> int:
    """Start the stack, print its URLs, keep it up until Ctrl-C or SIGTERM, then stop it."""
    data = Path(args.dir).resolve()
    state = data / STATE_FILE
    running = _read_state(state)
    if running and _is_ours(running["pid"], "observe"):
        print(f"already running (pid {running['pid']}): `make observe-stop` stops it",
              file=sys.stderr)  # fmt: skip
        return 1
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        print("prometheus is not installed: `apt-get install prometheus` (Debian's package)",
              file=sys.stderr)  # fmt: skip
        return 1
    render(data, args.prometheus_port, args.scrape_interval, args.ray_sd, args.app_url)
    (data / "logs").mkdir(exist_ok=True)
    stack = services(args, data, prometheus)
    taken = [s.url for s in stack if not _port_free(urlsplit(s.url).port)]
    if taken:
        print(f"already in use: {', '.join(taken)}; pick free ports (`make observe "
              "PROMETHEUS_PORT=9091 ...`, or --help)", file=sys.stderr)  # fmt: skip
        return 1
    started: dict[str, subprocess.Popen] = {}
    signal.signal(signal.SIGTERM, _interrupt)  # `observe stop` is handled like Ctrl-C
    try:
        for service in stack:
            started[service.name] = _start(service, data / "logs")
        _write_state(state, started)
        for service in stack:
            _wait_ready(service, started[service.name], data / "logs")
        _print_urls(args, stack)
        while True:
            for service in stack:
                if started[service.name].poll() is not None:
                    raise ServiceFailed(_exit_message(service, started[service.name], data))
            time.sleep(1)
    except KeyboardInterrupt:
        code = 0
    except ServiceFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut this short
            signal.signal(sig, signal.SIG_IGN)
        for proc in started.values():
            _stop_group(proc.pid)
        state.unlink(missing_ok=True)
    print("monitoring stack stopped", flush=True)
    return code


def stop(args: argparse.Namespace) -> int:
    """Stop a stack started by `up` with the same `--dir` (its services too, if it died)."""
    path = Path(args.dir).resolve() / STATE_FILE
    state = _read_state(path)
    if state is None:
        print("no monitoring stack is running")
        return 0
    pid = state["pid"]
    if _is_ours(pid, "observe"):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S + 5
        while _is_ours(pid, "observe") and time.monotonic() < deadline:
            time.sleep(0.2)
    for name, service_pid in state["services"].items():  # left only by a killed supervisor
        if _is_ours(service_pid, name):
            _stop_group(service_pid)
    path.unlink(missing_ok=True)
    print("monitoring stack stopped")
    return 0


def _start(service: Service, logs: Path) -> subprocess.Popen:
    log = open(logs / f"{service.name}.log", "ab")  # noqa: SIM115  (the child keeps it)
    with log:
        # Our own argv, no shell. A session of its own: Ctrl-C reaches only the supervisor,
        # which then stops every service's whole process group (mlflow's workers included).
        return subprocess.Popen(  # noqa: S603  # nosec B603
            service.argv, env={**os.environ, **service.env}, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _wait_ready(service: Service, proc: subprocess.Popen, logs: Path) -> None:
    url = urlsplit(service.url)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceFailed(_exit_message(service, proc, logs.parent))
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=2)
        try:
            connection.request("GET", service.ready_path)
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass  # not listening yet
        finally:
            connection.close()
        time.sleep(0.5)
    raise ServiceFailed(f"{service.name} not ready after {START_TIMEOUT_S:.0f} s; "
                        f"see {logs / service.name}.log")  # fmt: skip


def _exit_message(service: Service, proc: subprocess.Popen, data: Path) -> str:
    log = data / "logs" / f"{service.name}.log"
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    return f"{service.name} exited with status {proc.returncode}; {log} ends:\n{tail}"


def _stop_group(pid: int) -> None:
    """SIGTERM the process group `pid` leads; SIGKILL what is left of it after a while."""
    for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while _group_alive(pid):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        else:
            return


def _group_alive(pgid: int) -> bool:
    with contextlib.suppress(ChildProcessError):  # not our child: `stop` after a killed `up`
        os.waitpid(pgid, os.WNOHANG)  # reap our own child, whose zombie would still count
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_ours(pid: int, marker: str) -> bool:
    """`pid` is alive and its command line mentions `marker` (not a recycled pid)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.parent.parent.joinpath("self").exists():  # no procfs: trust the pid
        return _alive(pid)
    try:
        return marker.encode() in cmdline.read_bytes()
    except OSError:
        return False


def _read_state(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_state(path: Path, started: dict[str, subprocess.Popen]) -> None:
    services = {name: proc.pid for name, proc in started.items()}
    path.write_text(json.dumps({"pid": os.getpid(), "services": services}, indent=2) + "\n")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _grafana_home(binary: str) -> str:
    # Grafana's packages install to /usr/share/grafana; its archives keep bin/ in the home folder
    packaged = Path("/usr/share/grafana")
    return str(packaged if packaged.is_dir() else Path(binary).resolve().parents[1])


def _print_urls(args: argparse.Namespace, stack: list[Service]) -> None:
    urls = {s.name: s.url for s in stack}
    source = f"the app's {args.app_url}/metrics" if args.app_url else f"Ray's nodes ({args.ray_sd})"
    lines = [
        "",
        "Monitoring stack is up (Ctrl-C or `make observe-stop` stops it):",
        f"  MLflow      {urls['mlflow']}   (export MLFLOW_TRACKING_URI={urls['mlflow']})",
        f"  Prometheus  {urls['prometheus']}   scraping {source} every {args.scrape_interval};"
        f" alerts: {urls['prometheus']}/alerts",
        f"  Grafana     {urls['grafana']}   dashboard: Product Photo Detector"
        if "grafana" in urls
        else "  Grafana     skipped: grafana-server is not installed",
        "",
    ]
    print("\n".join(lines), flush=True)


# --- command line ------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    scrape = argparse.ArgumentParser(add_help=False)
    scrape.add_argument("--prometheus-port", type=int, default=9090)
    scrape.add_argument("--scrape-interval", default="15s", help="Prometheus duration, e.g. 2s")
    scrape.add_argument("--ray-sd", default=RAY_SERVICE_DISCOVERY,
                        help="the service-discovery file Ray writes for Prometheus")  # fmt: skip
    scrape.add_argument("--app-url", default=None,
                        help="scrape this app's GET /metrics (ray_ppd_* only) instead of the "
                        "Ray nodes, e.g. http://127.0.0.1:8000")  # fmt: skip

    main_parser = argparse.ArgumentParser(
        prog="python -m observe", description=__doc__.split("\n\n")[0]
    )
    commands = main_parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", parents=[scrape], help="start the stack in the foreground")
    start.add_argument("--dir", default=".observe", help="data, configuration and logs")
    start.add_argument("--mlflow-port", type=int, default=5000)
    start.add_argument("--grafana-port", type=int, default=3000)
    halt = commands.add_parser("stop", help="stop the stack `up` started")
    halt.add_argument("--dir", default=".observe")
    write = commands.add_parser("render", parents=[scrape], help="write the configuration only")
    write.add_argument("--out", required=True, type=Path)
    write.add_argument("--dashboards-dir", help="where Grafana finds the dashboard JSON "
                       "(default: a link under OUT)")  # fmt: skip
    return main_parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "up":
        return up(args)
    if args.command == "stop":
        return stop(args)
    render(args.out, args.prometheus_port, args.scrape_interval, args.ray_sd, args.app_url,
           args.dashboards_dir)  # fmt: skip
    print(f"configuration written to {args.out}")
    return 0
