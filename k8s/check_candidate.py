"""The release gate: may a newly trained checkpoint go live as the shadow model?

It reads the held-out metrics a training run stored in the candidate checkpoint and passes it
when they clear the quality gate (train.evaluate.QualityGate) and, if a primary model serves
already, when the candidate's F1 is at most `--max-f1-drop` below the primary's.

    python k8s/check_candidate.py --candidate gs://B/models/RUN/model.safetensors \
        [--primary gs://B/models/OLD/model.safetensors]     # exit 0: pass, 1: refused
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from common.checkpoint import ModelMeta, load_checkpoint
from train.evaluate import QualityGate, add_gate_arguments, gate_from_args

__all__ = ["Verdict", "judge", "main"]

DEFAULT_MAX_F1_DROP = 0.01  # absolute F1 points a candidate may lose against the primary


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: tuple[str, ...]  # why it was refused; empty when it passed


def judge(
    candidate: ModelMeta,
    primary: ModelMeta | None = None,
    gate: QualityGate = QualityGate(),
    max_f1_drop: float = DEFAULT_MAX_F1_DROP,
) -> Verdict:
    """The candidate's verdict from its metadata (and the primary's, when there is one)."""
    missing = sorted({"accuracy", "f1"} - set(candidate.metrics))
    if missing:
        return Verdict(False, (f"the candidate records no {', '.join(missing)}",))
    reasons = list(gate.failures(candidate.metrics))
    if primary is not None and "f1" in primary.metrics:
        floor = primary.metrics["f1"] - max_f1_drop
        if candidate.metrics["f1"] < floor:
            reasons.append(
                f"f1 {candidate.metrics['f1']:.4f} < primary {primary.version}'s "
                f"{primary.metrics['f1']:.4f} - {max_f1_drop}"
            )
    return Verdict(not reasons, tuple(reasons))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Gate a candidate checkpoint before shadowing.")
    parser.add_argument("--candidate", required=True, help="checkpoint URI (path, gs://, models:/)")
    parser.add_argument("--primary", default="", help="the serving primary's URI; empty: none")
    add_gate_arguments(parser)
    parser.add_argument("--max-f1-drop", type=float, default=DEFAULT_MAX_F1_DROP)
    args = parser.parse_args(argv)

    _, candidate = load_checkpoint(args.candidate)
    primary = load_checkpoint(args.primary)[1] if args.primary else None
    verdict = judge(
        candidate,
        primary,
        gate_from_args(args),
        args.max_f1_drop,
    )
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(candidate.metrics.items()))
    print(f"candidate {candidate.version}: {metrics}")
    if primary is not None:
        print(f"primary {primary.version}: f1 {primary.metrics.get('f1', float('nan')):.4f}")
    for reason in verdict.reasons:
        print(f"refused: {reason}", file=sys.stderr)
    print("PASS" if verdict.passed else "FAIL")
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    sys.exit(main())
