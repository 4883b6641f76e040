"""docs/deploy.md can be followed without guessing: numbered steps, every variable defined
before use, and every file, make target and release command it names exists."""

from __future__ import annotations

import re

from tests.deploy.manifests import ROOT

DOC = (ROOT / "docs" / "deploy.md").read_text()
BASH_BLOCKS = re.findall(r"```bash\n(.*?)```", DOC, re.DOTALL)
_DEFINED = re.compile(r"^\s*(?:export\s+)?([A-Z_][A-Z0-9_]*)=", re.MULTILINE)
_USED = re.compile(r"\$\{?([A-Z_][A-Z0-9_]*)")


def test_part_one_steps_are_numbered_in_order():
    part_one = DOC.split("## Part 1")[1].split("## Part 2")[0]
    numbers = [int(n) for n in re.findall(r"^\*\*(\d+)\. ", part_one, re.MULTILINE)]
    assert numbers == list(range(1, len(numbers) + 1))
    assert len(numbers) >= 15


def test_every_variable_is_defined_before_a_command_uses_it():
    defined: set[str] = set()
    for block in BASH_BLOCKS:
        for line in block.splitlines():
            line = line.split(" # ")[0]
            used = set(_USED.findall(line)) - set(_DEFINED.findall(line))
            missing = used - defined
            assert not missing, f"{sorted(missing)} used before it is set: {line.strip()}"
            defined |= set(_DEFINED.findall(line))


def test_every_repository_path_named_exists():
    paths = set(re.findall(r"`((?:k8s|terraform|docker|docs|\.github)/[\w./-]*\w)`", DOC))
    paths |= set(re.findall(r"(?<![\w/])((?:k8s|terraform)/[\w-]+\.(?:yaml|sh|py|tf))\b", DOC))
    assert paths
    for path in paths:
        assert (ROOT / path).exists(), path


def test_every_make_target_and_release_command_named_exists():
    makefile = (ROOT / "Makefile").read_text().replace("$(DEMO_DATA)", "data/demo")
    targets = {
        t
        for line in re.findall(r"^([^\s:#=][^:=]*):", makefile, re.MULTILINE)
        for t in line.split()
    }
    for target in set(re.findall(r"\bmake ([\w./-]+)", DOC)):
        assert target in targets, target
    release = (ROOT / "k8s" / "release.sh").read_text()
    commands = set(re.findall(r"^  ([a-z-]+)\)", release, re.MULTILINE))
    for command in set(re.findall(r"k8s/release\.sh ([a-z-]+)", DOC)):
        assert command in commands, command
