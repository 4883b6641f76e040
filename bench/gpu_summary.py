"""The GPU run's summary: one markdown table for docs/performance.md and the two targets.

Reads the JSON files the stages of `bench/gpu_run.sh` wrote (any may be missing when a stage
failed or ran out of time: its rows say so) and checks served >= 0.7 x limit and >= 10 x
baseline at concurrency 64.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["TARGET_C", "TARGET_OVER_BASELINE", "TARGET_OVER_LIMIT", "summarise"]

TARGET_C = 64
TARGET_OVER_LIMIT = 0.7
TARGET_OVER_BASELINE = 10.0


def _load(out: Path, name: str) -> dict | None:
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _row(*cells: str) -> str:
    """One markdown table row; an empty cell is written "| |"."""
    return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _level(rows: list[dict] | None, c: int) -> dict | None:
    return next((row for row in rows or [] if row["concurrency"] == c), None)


def _targets(limit: dict | None, baseline: dict | None, served: dict | None) -> list[dict]:
    row = _level((served or {}).get("levels"), TARGET_C)
    base = _level((baseline or {}).get("levels"), TARGET_C)
    out = []
    for name, goal, over in (
        (f"served >= {TARGET_OVER_LIMIT} x limit at c={TARGET_C}", TARGET_OVER_LIMIT, limit),
        (f"served >= {TARGET_OVER_BASELINE:g} x baseline at c={TARGET_C}", TARGET_OVER_BASELINE,
         base),
    ):  # fmt: skip
        ratio = None
        if row and over and over.get("images_per_s"):
            ratio = round(row["images_per_s"] / over["images_per_s"], 3)
        verdict = "not measured" if ratio is None else ("met" if ratio >= goal else "NOT met")
        out.append({"target": name, "ratio": ratio, "goal": goal, "verdict": verdict})
    return out


def summarise(out: Path) -> dict:
    env, limit = _load(out, "env"), _load(out, "limit")
    served, baseline = _load(out, "served"), _load(out, "baseline")
    correctness, training = _load(out, "correctness"), _load(out, "training")
    checkpoint = _load(out, "checkpoint")
    gpu = (env or {}).get("gpu", {})
    machine = (env or {}).get("machine", {})
    packages = (env or {}).get("packages", {})
    lines = [
        f"**Machine**: {gpu.get('name') or 'no GPU'} ({gpu.get('memory', '?')}), driver "
        f"{gpu.get('driver', '-')}, CUDA {gpu.get('cuda_driver', '-')} (driver) / "
        f"{gpu.get('cuda_torch') or '-'} (torch); {machine.get('cores', '?')} cores "
        f"({machine.get('cpu', '?')}), {machine.get('memory_gib', '?')} GiB; Python "
        f"{machine.get('python', '?')}, torch {packages.get('torch')}, "
        f"timm {packages.get('timm')}, Ray {packages.get('ray')}. "
        f"Device: {(env or {}).get('device', '?')}"
        f"{' (quick rehearsal: tiny counts)' if (env or {}).get('quick') else ''}.",
        "",
    ]
    if checkpoint:
        lines += [
            f"Checkpoint: {checkpoint['architecture']} at {checkpoint['image_size']} px, "
            f"{checkpoint['epochs']} epoch(s) of the Ray Train driver on the demo set "
            f"({checkpoint['seconds']} s, validation accuracy {checkpoint['val_accuracy']}).",
            "",
        ]
    # limit: a column per precision measured (fp16 too where the GPU's own policy is fp16)
    forward = (limit or {}).get("forward", {})
    precisions = [name for name in ("bf16", "fp16", "fp32") if name in forward] or ["bf16", "fp32"]
    lines += [
        _row("limit part", "batch", *(f"{name} images/s" for name in precisions)),
        _row("---", "--:", *("--:" for _ in precisions)),
    ]
    if limit:
        decode = limit["decode"]
        rate = f"{decode['images_per_s']:.1f}"
        lines.append(
            _row(f"decode, {decode['processes']} processes (CPU)", "", *(rate for _ in precisions))
        )
        for batch in forward[precisions[-1]]:
            lines.append(_row("forward", batch, *(_fmt(forward[n].get(batch)) for n in precisions)))
        lines.append(
            _row(
                f"**limit** ({limit['bound_by']}-bound, {limit['served_precision']})",
                str(limit["best_batch_size"]),
                f"**{limit['images_per_s']:.1f}**",
                *("" for _ in precisions[1:]),
            )
        )
    else:
        lines.append(_row("not measured", "", *("" for _ in precisions)))
    # load
    lines += [
        "",
        "| system | c | images/s | p50 ms | p99 ms | errors | GPU util mean/max % | served / limit "
        "| served / baseline |",
        "| --- | --: | --: | --: | --: | --: | --: | --: | --: |",
    ]
    for system, report in (("baseline", baseline), ("served", served)):
        if not report:
            lines.append(f"| {system} | not measured | | | | | | | |")
            continue
        for row in report["levels"]:
            g = row.get("gpu") or {}
            util = f"{_fmt(g.get('util_mean'))} / {_fmt(g.get('util_max'), 0)}"
            over_limit = over_base = ""
            if system == "served":
                base = _level((baseline or {}).get("levels"), row["concurrency"])
                if limit:
                    over_limit = f"{row['images_per_s'] / limit['images_per_s']:.2f}"
                if base and base["images_per_s"]:
                    over_base = f"{row['images_per_s'] / base['images_per_s']:.2f}"
            lines.append(
                f"| {system} | {row['concurrency']} | {row['images_per_s']:.1f} | "
                f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['errors']} | {util} | "
                f"{over_limit} | {over_base} |"
            )
    # correctness
    lines += ["", "| correctness (64 images, vs CPU fp32) | max abs dp | mean abs dp | label flips "
              "outside 0.5 ± band | passed |", "| --- | --: | --: | --: | --- |"]  # fmt: skip
    for key, value in (correctness or {}).items():
        if isinstance(value, dict) and "max_abs_dp" in value:
            lines.append(
                f"| {key} | {value['max_abs_dp']:.5f} | {value['mean_abs_dp']:.5f} | "
                f"{value['label_flips_outside_band']} (band {value['band']}) | "
                f"{'yes' if value['passed'] else 'NO'} (tolerance {value['tolerance']}) |"
            )
    if not correctness:
        lines.append("| not measured | | | | |")
    else:
        check = correctness["served"]
        low, high = check.get("reference_p_min"), check.get("reference_p_max")
        lines += ["", f"Reference p from {_fmt(low, 4)} to {_fmt(high, 4)} (narrow: a weak check)."]
    # training
    lines += ["", "| training | images/s | x plain loop |", "| --- | --: | --: |"]
    if training:
        amp = " with AMP" if training["config"].get("amp") else ""
        lines.append(f"| plain PyTorch loop{amp} | {training['plain_loop']:.1f} | 1.00 |")
        lines.append(
            f"| Ray Train `TorchTrainer`, 1 worker{amp} | {training['ray_train_1_worker']:.1f} | "
            f"{training['ratio_1_worker']:.2f} |"
        )
    else:
        lines.append("| not measured | | |")
    targets = _targets(limit, baseline, served)
    lines += ["", "| target | result | verdict |", "| --- | --: | --- |"]
    lines += [f"| {t['target']} | {_fmt(t['ratio'], 2)} x | {t['verdict']} |" for t in targets]
    return {"targets": targets, "markdown": "\n".join(lines) + "\n"}
