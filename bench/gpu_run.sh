#!/usr/bin/env bash
# The GPU figures of docs/performance.md ("GPU run") in one go, in at most BUDGET_S (480) s:
#
#   bench/gpu_run.sh [--device cuda|cpu] [--quick] [--budget-s N] [OUT]     (or: make bench-gpu)
#
# OUT (default $OUT, else artifacts/gpu_run) receives every result: env.json, data.json,
# checkpoint.json + model.safetensors, limit.json, served.json, correctness.json,
# baseline.json, training.json, summary.json + summary.md (the table to paste), one log per
# stage and stages.tsv (each stage's exit status and seconds). Each stage runs under `timeout`,
# capped by what is left of the budget; a stage that fails or runs out of time is recorded and
# the next one runs, so partial results are kept. Rehearse on a CPU first (tiny counts, ~2 min):
#
#   bench/gpu_run.sh --device cpu --quick artifacts/gpu_run_cpu
#
# Installing. The script uses the first Python that imports ray, timm, fastapi and mlflow:
# $PYTHON, ./.venv/bin/python, python3. Failing that it installs, in this order:
#   1. wheels carried in .whl/ (a machine with no registry, e.g. the lent H200): every
#      .whl/*.whl and every wheel in .whl/wheels.tar.xz (what bench/gpu_wheels.sh packs) goes
#      into /tmp/ppd-site with --no-index --no-deps (the machine's own torch, torchvision,
#      numpy... stay);
#   2. the registries: `pip install -e '.[demo]'` (a bare machine with PyPI).
# `hey` comes from the PATH, else a hey_*.deb in .whl/ (dpkg -x), else `apt-get install hey`.
#
# Preparing .whl/ (on a machine with the registries, in the repository root) for the H200
# image (Python 3.12; torch, timm, numpy, pydantic-less): run bench/gpu_wheels.sh, which
# downloads the wheels the image lacks and `hey`'s .deb, strips Ray's Java jar and packs the
# wheels with xz, so that the whole folder fits one call's 64 MiB. A call brings back at most
# 8 files, so write the results elsewhere and archive them into \$OUT: run(command=
# "bench/gpu_run.sh --device cuda /tmp/gpu; tar -C /tmp/gpu --exclude='*.safetensors'
# -czf \$OUT/results.tgz .", carry=[".whl"], timeout_s=600).
set -uo pipefail

DEVICE=cuda
QUICK=
BUDGET_S=${BUDGET_S:-480}
OUT_DIR=
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=$2; shift 2 ;;
        --quick) QUICK=--quick; shift ;;
        --budget-s) BUDGET_S=$2; shift 2 ;;
        --image-size) EXTRA+=(--image-size "$2"); shift 2 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) OUT_DIR=$1; shift ;;
    esac
done
cd "$(dirname "$0")/.." || exit 2
OUT_DIR=${OUT_DIR:-${OUT:-artifacts/gpu_run}}
mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd)
START=$(date +%s)
DEADLINE=$((START + BUDGET_S))
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
printf 'stage\tstatus\tseconds\n' >"$OUT_DIR/stages.tsv"
log() { printf '[gpu_run %4ss] %s\n' "$(($(date +%s) - START))" "$*"; }

# --- install ---------------------------------------------------------------------------------
imports_ok() {
    "$1" -c 'import importlib.util as u, sys
sys.exit(any(u.find_spec(m) is None for m in ("ray", "timm", "fastapi", "mlflow", "yaml", "PIL")))' 2>/dev/null
}
PY=
for candidate in "${PYTHON:-}" ./.venv/bin/python python3; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null && imports_ok "$candidate"; then
        PY=$candidate; break
    fi
done
if [ -z "$PY" ]; then
    PY=${PYTHON:-python3}
    if compgen -G '.whl/*.whl' >/dev/null || [ -f .whl/wheels.tar.xz ]; then
        log "installing the wheels carried in .whl/ into /tmp/ppd-site"
        mkdir -p /tmp/ppd-wheels
        if [ -f .whl/wheels.tar.xz ]; then
            tar -xJf .whl/wheels.tar.xz -C /tmp/ppd-wheels \
                || { log "cannot unpack .whl/wheels.tar.xz"; exit 4; }
        fi
        shopt -s nullglob
        wheels=(.whl/*.whl)
        wheels+=(/tmp/ppd-wheels/*.whl)
        shopt -u nullglob
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/ppd-site "${wheels[@]}" \
            >"$OUT_DIR/install.log" 2>&1 || { log "wheel install failed: $OUT_DIR/install.log"; exit 4; }
        export PYTHONPATH="$PYTHONPATH:/tmp/ppd-site" PATH="/tmp/ppd-site/bin:$PATH"
    else
        log "installing from the registries: pip install -e '.[demo]'"
        "$PY" -m pip install -q -e '.[demo]' >"$OUT_DIR/install.log" 2>&1 \
            || { log "pip install failed: $OUT_DIR/install.log"; exit 4; }
    fi
    imports_ok "$PY" || { log "$PY still cannot import ray/timm/fastapi/mlflow"; exit 4; }
fi
if ! command -v hey >/dev/null; then
    if compgen -G '.whl/hey_*.deb' >/dev/null; then
        mkdir -p /tmp/ppd-hey && dpkg -x .whl/hey_*.deb /tmp/ppd-hey
        export PATH="/tmp/ppd-hey/usr/bin:$PATH"
    elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y -q hey >"$OUT_DIR/install_hey.log" 2>&1 \
            || { apt-get update -q && apt-get install -y -q hey; } >>"$OUT_DIR/install_hey.log" 2>&1
    fi
fi
command -v hey >/dev/null || log "no hey: the load stages will fail (apt-get install hey)"
log "python: $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])')), device $DEVICE, budget ${BUDGET_S}s"

# --- stages ----------------------------------------------------------------------------------
# stage NAME CAP_S: python -m bench.gpu_run NAME, for at most CAP_S s (scaled by BUDGET_S/480:
# a slow machine's rehearsal gets --budget-s 900 and longer stages) and never past the
# deadline; RESERVE_S (the summary's time and the 20 s that `timeout -k` may add) is kept back.
RESERVE_S=40
stage() {
    local name=$1 cap=$(($2 * BUDGET_S / 480)) left t0 rc  # caps grow with a larger budget
    left=$((DEADLINE - $(date +%s) - RESERVE_S))
    [ "$name" = summary ] && left=$((left + RESERVE_S - 20))
    [ "$left" -lt "$cap" ] && cap=$left
    if [ "$cap" -lt 5 ]; then
        log "$name: skipped, out of time"
        printf '%s\tskipped\t0\n' "$name" >>"$OUT_DIR/stages.tsv"
        return
    fi
    log "$name (at most ${cap}s)"
    t0=$(date +%s)
    timeout -k 20 "$cap" "$PY" -m bench.gpu_run "$name" --out "$OUT_DIR" --device "$DEVICE" \
        $QUICK "${EXTRA[@]}" >"$OUT_DIR/$name.log" 2>&1
    rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" >>"$OUT_DIR/stages.tsv"
    [ $rc -eq 0 ] || { log "$name: exit $rc (124: timed out); last lines of $name.log:"; tail -n 15 "$OUT_DIR/$name.log"; }
}

# served first after the checkpoint: it is the run's point, and a stage that runs out of the
# budget is a later one (on the H200 the stages before served took 280 s of the 480)
stage env 60
stage data 150
stage checkpoint 150
stage served 210
stage limit 120
stage baseline 100
stage training 150
stage summary 30
log "done in $(($(date +%s) - START))s; results in $OUT_DIR"
column -t "$OUT_DIR/stages.tsv" 2>/dev/null || cat "$OUT_DIR/stages.tsv"
