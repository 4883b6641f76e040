from dataclasses import dataclass

import pytest

from common.config import strict_dataclass


@dataclass(frozen=True)
class _Example:
    size: int = 1
    name: str = "x"


def test_known_keys_build_the_dataclass():
    assert strict_dataclass(_Example, {"size": 3}, "example") == _Example(size=3)


def test_unknown_keys_are_named_in_the_error():
    with pytest.raises(ValueError, match=r"unknown example keys: \['sise'\]"):
        strict_dataclass(_Example, {"sise": 3}, "example")
