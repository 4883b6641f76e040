"""The robustness table measured through the HTTP API: a split, clean and under each condition.

Each file of the split is degraded with the same function `train.evaluate` uses
(`train.robustness.degrade`) and sent to the running service's `POST /predict/batch`; accuracy
comes from the served `prediction`, ROC-AUC and ECE from the served `probability`. So the table
says what a client sees, to compare with evaluation.json's.

    python -m bench.http_eval --url http://127.0.0.1:8000 --data-dir data/demo --split test \
        [--api-key-env API_KEY] [--limit N] [--out artifacts/http_eval.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import fsspec
import httpx
import numpy as np
from sklearn import metrics as skm

from common.rules import AI_GENERATED
from train.data import LabelledFiles, list_split
from train.evaluate import expected_calibration_error
from train.robustness import CONDITIONS, degrade

__all__ = ["evaluate_over_http", "main"]

BATCH_FILES = 10  # the API's default limit of files per /predict/batch request
_MAX_RATE_LIMIT_WAITS = 20


def evaluate_over_http(
    client: httpx.Client,
    files: LabelledFiles,
    conditions: tuple[str, ...] = ("clean", *CONDITIONS),
) -> dict[str, dict[str, float]]:
    """{condition: {accuracy, roc_auc, calibration_error, count}} from the served answers."""
    originals = []
    for path in files.paths:
        with fsspec.open(path, "rb") as f:
            originals.append(f.read())
    labels = np.asarray(files.labels)
    table = {}
    for condition in conditions:
        answers = []
        for start in range(0, len(originals), BATCH_FILES):
            chunk = originals[start : start + BATCH_FILES]
            answers += _predict_batch(client, [degrade(data, condition) for data in chunk])
        probs = np.asarray([a["probability"] for a in answers])
        predicted = np.asarray([a["prediction"] == AI_GENERATED for a in answers], dtype=int)
        table[condition] = {
            "accuracy": float(np.mean(predicted == labels)),
            "roc_auc": float(skm.roc_auc_score(labels, probs))
            if len(np.unique(labels)) == 2
            else float("nan"),
            "calibration_error": expected_calibration_error(labels, probs),
            "count": len(answers),
        }
    return table


def _predict_batch(client: httpx.Client, images: list[bytes]) -> list[dict[str, Any]]:
    files = [("files", (f"{i}.img", data, "application/octet-stream"))
             for i, data in enumerate(images)]  # fmt: skip
    for _ in range(_MAX_RATE_LIMIT_WAITS):
        response = client.post("/predict/batch", files=files)
        if response.status_code != 429:
            break
        time.sleep(float(response.headers.get("Retry-After", "1")))
    response.raise_for_status()
    results = response.json()["results"]
    failed = [r for r in results if r["error"]]
    if failed:
        raise RuntimeError(f"the service refused {len(failed)} file(s): {failed[0]['error']}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Accuracy, ROC-AUC and ECE of a running service on a data split, clean and "
        "under each robustness condition, through POST /predict/batch."
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the service's base URL")
    parser.add_argument("--data-dir", default="data/demo", help="CIFAKE layout, local or gs://")
    parser.add_argument("--split", default="test", choices=["train", "test"])
    parser.add_argument("--limit", type=int, default=0, help="first N files per class; 0: all")
    parser.add_argument("--conditions", nargs="+", default=["clean", *CONDITIONS],
                        choices=["clean", *CONDITIONS])  # fmt: skip
    parser.add_argument("--api-key-env", default="API_KEY",
                        help="variable holding the X-API-Key (unset: none)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("artifacts/http_eval.json"))
    args = parser.parse_args(argv)

    files = list_split(args.data_dir, args.split)
    if args.limit:
        labels = np.asarray(files.labels)
        keep = [i for c in (0, 1) for i in np.flatnonzero(labels == c)[: args.limit].tolist()]
        files = files.subset(keep)
    key = os.environ.get(args.api_key_env)
    headers = {"X-API-Key": key} if key else {}
    with httpx.Client(base_url=args.url, headers=headers, timeout=120) as client:
        table = evaluate_over_http(client, files, tuple(args.conditions))
    report = {"url": args.url, "data_dir": args.data_dir, "split": args.split,
              "count": len(files), "conditions": table}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'condition':<16}{'accuracy':>9}{'roc_auc':>9}{'ece':>7}")
    for name, m in table.items():
        print(f"{name:<16}{m['accuracy']:>9.4f}{m['roc_auc']:>9.4f}{m['calibration_error']:>7.3f}")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
