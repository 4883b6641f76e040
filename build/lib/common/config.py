"""Strict construction of config dataclasses from mappings (YAML `user_config`, JSON dicts).

An unknown key is an error naming the keys, never silently ignored: a typo in
`serve_config.yaml` fails the deploy instead of leaving a default in force.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

__all__ = ["strict_dataclass"]

T = TypeVar("T")


def strict_dataclass(cls: type[T], raw: Mapping[str, Any], what: str) -> T:
    """`cls(**raw)`, refusing keys `cls` does not have; `what` names the config in the error."""
    unknown = sorted(set(raw) - {f.name for f in fields(cls)})  # type: ignore[arg-type]
    if unknown:
        raise ValueError(f"unknown {what} keys: {unknown}")
    return cls(**raw)
