"""`make bench-ab`: two commits of this repository served at the same time, compared in
alternating bursts of the same load.

On a shared two-core machine the speed moves by a fifth within minutes, so runs made one after
the other are decided by their order (docs/performance.md). Here both trees are served at once,
each by `bench.serving.start_served` with its own serve_config.yaml, serving.env and code (a
`git worktree` for a commit), on its own Ray instance and port. Each round sends one burst of
`/predict` to each tree, the order alternating between rounds, so a drift of the machine's
speed hits both trees of a round alike. A round's ratio is B's images/s over A's; the summary
is their geometric mean and median, with each tree's CPU per request by role (`bench.process_cpu`)
over all its bursts. The idle tree costs a little, so absolute rates are lower than `make bench`'s.

    python -m bench.ab --base 4370810            # HEAD's working tree (B) against a commit (A)
    python -m bench.ab --base 4370810 --head HEAD~1 --rounds 8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import subprocess  # nosec B404
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from bench import process_cpu
from bench.inputs import make_inputs
from bench.load import run_load
from bench.server_process import free_port, stop, wait_healthy
from bench.serving import DEFAULT_CHECKPOINT, ROOT, start_served

__all__ = ["burst", "main", "round_order", "summarise", "worktree"]

DEFAULT_OUT = ROOT / "artifacts" / "bench" / "ab.json"
WARM_UP_REQUESTS = 300  # per tree, before the first round: every batch size has run once


@contextlib.contextmanager
def worktree(revision: str | None) -> Iterator[Path]:
    """A checkout of `revision` in a temporary `git worktree`, removed afterwards; None is
    this working tree as it is (uncommitted changes included)."""
    if revision is None:
        yield ROOT
        return
    git = ["git", "-C", str(ROOT)]
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as parent:
        folder = Path(parent) / "tree"
        add = [*git, "worktree", "add", "--detach", "--quiet", str(folder), revision]
        subprocess.run(add, check=True)  # nosec B603 B607
        try:
            yield folder
        finally:
            subprocess.run([*git, "worktree", "remove", "--force", str(folder)], check=False)  # nosec B603 B607


def round_order(index: int) -> tuple[str, str]:
    """Which tree takes its burst first in round `index`: A first in even rounds, B in odd."""
    return ("A", "B") if index % 2 == 0 else ("B", "A")


def burst(url: str, images: list[Path], concurrency: int, requests: int, cpu_root: int) -> dict:
    """One burst of `/predict` at `concurrency`: its summary (`bench.load`), and the CPU
    seconds each role of the server's process tree spent meanwhile."""
    before = process_cpu.snapshot(cpu_root)
    result = run_load(f"{url}/predict", images, concurrency, requests)
    after = process_cpu.snapshot(cpu_root)
    spent = {role: round(after[role] - before.get(role, 0.0), 3) for role in after}
    return result.summary() | {"cpu_s": spent}


def summarise(rounds: list[dict[str, dict]]) -> dict:
    """B over A per round (images/s), their geometric mean and median, and each tree's CPU
    milliseconds per request by role over all its bursts (`process_cpu.per_request`)."""
    ratios = [r["B"]["images_per_s"] / r["A"]["images_per_s"] for r in rounds]
    summary: dict = {
        "ratios": [round(x, 3) for x in ratios],
        "geometric_mean": round(math.exp(statistics.fmean(map(math.log, ratios))), 3),
        "median": round(statistics.median(ratios), 3),
        "errors": {tree: sum(r[tree]["errors"] for r in rounds) for tree in ("A", "B")},
    }
    for tree in ("A", "B"):
        spent: Counter[str] = Counter()
        for r in rounds:
            spent.update(r[tree]["cpu_s"])
        requests = sum(r[tree]["requests"] for r in rounds)
        summary[f"{tree}_images_per_s_median"] = statistics.median(
            r[tree]["images_per_s"] for r in rounds
        )
        summary[f"{tree}_cpu_ms_per_request"] = process_cpu.per_request(Counter(), spent, requests)
    return summary


def print_summary(rounds: list[dict[str, dict]], summary: dict, names: dict[str, str]) -> None:
    print(f"\nA = {names['A']}, B = {names['B']}")
    print(f"{'round':>5} {'first':>5} {'A img/s':>8} {'B img/s':>8} {'B/A':>6}")
    for i, (r, ratio) in enumerate(zip(rounds, summary["ratios"], strict=True)):
        print(f"{i + 1:>5} {round_order(i)[0]:>5} {r['A']['images_per_s']:>8.1f} "
              f"{r['B']['images_per_s']:>8.1f} {ratio:>6.3f}")  # fmt: skip
    print(f"B/A: geometric mean {summary['geometric_mean']}, median {summary['median']}; "
          f"errors A {summary['errors']['A']}, B {summary['errors']['B']}")  # fmt: skip
    for tree in ("A", "B"):
        cpu = summary[f"{tree}_cpu_ms_per_request"]
        print(f"{tree} CPU ms/request: " + ", ".join(
            f"{role} {ms:.2f}" for role, ms in cpu.items() if ms >= 0.05
        ))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="tree A: a commit (e.g. 4370810)")
    parser.add_argument("--head", help="tree B: a commit; default this working tree as it is")
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--requests", type=int, default=600, help="per burst")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warm-up", type=int, default=WARM_UP_REQUESTS, help="requests per tree")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if not args.checkpoint.exists():
        print(f"no checkpoint at {args.checkpoint}: run `make demo` (or pass --checkpoint)")
        return 2
    images = make_inputs(ROOT / "artifacts" / "bench" / "inputs")
    names = {"A": args.base, "B": args.head or "the working tree"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        servers = {}
        for tree, revision in (("A", args.base), ("B", args.head)):
            root = stack.enter_context(worktree(revision))
            port = free_port()
            process, config = start_served(
                args.checkpoint.resolve(), port, root=root,
                log=args.out.with_name(f"ab_{tree}_serve_run.log"),
            )  # fmt: skip
            stack.callback(config.unlink, missing_ok=True)
            stack.callback(stop, process)
            servers[tree] = (f"http://127.0.0.1:{port}", process)
        for tree, (url, process) in servers.items():
            wait_healthy(url, process)
            run_load(f"{url}/predict", images, args.concurrency, args.warm_up)
            print(f"{tree} ({names[tree]}) serving on {url}", flush=True)
        rounds = []
        for i in range(args.rounds):
            measured = {}
            for tree in round_order(i):
                url, process = servers[tree]
                measured[tree] = burst(url, images, args.concurrency, args.requests, process.pid)
            rounds.append(measured)
            a, b = measured["A"]["images_per_s"], measured["B"]["images_per_s"]
            print(f"round {i + 1}: A {a} B {b} images/s, B/A {b / a:.3f}", flush=True)
    summary = summarise(rounds)
    print_summary(rounds, summary, names)
    report = {"trees": names, "concurrency": args.concurrency, "rounds": rounds,
              "summary": summary}  # fmt: skip
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
