"""The wheel the images install holds the web page: built with `pip wheel`, installed outside
the source tree, `deployments` imported from there finds its static files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.deploy.manifests import ROOT

STATIC = {"index.html", "app.js", "style.css"}


def _source_copy(destination: Path) -> Path:
    """The files git tracks (and the untracked ones it would add), without build leftovers:
    a stale build/ or *.egg-info would hide missing package data."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    ).stdout.splitlines()  # fmt: skip
    for name in listed:
        if not name.startswith(("build/", "dist/")) and (ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    return destination


@pytest.mark.slow
def test_the_installed_wheel_ships_the_web_page(tmp_path):
    source = _source_copy(tmp_path / "source")
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(wheels), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    (wheel,) = wheels.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"deployments/static/{name}" for name in STATIC} <= names

    # Installed apart (the shared venv's editable install of the repository stays untouched);
    # PYTHONPATH puts it before that install, and the run starts outside the source tree.
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target",
         str(target), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    probe = (
        "import deployments, deployments.ingress as h; print(deployments.__file__); "
        "print(' '.join(sorted(p.name for p in h.STATIC_DIR.iterdir())))"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    location, files = run.stdout.splitlines()[-2:]
    assert location.startswith(str(target)), location
    assert set(files.split()) >= STATIC
