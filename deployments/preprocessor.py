"""Preprocessor deployment: upload bytes -> checked, upright, model-sized uint8 pixels.

Decoding runs in a worker thread so the replica's event loop keeps accepting requests; the
work itself is `common.image.prepare_image`, the same path training uses.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, fields
from typing import Any

from ray import serve

from common.image import ImageLimits, PreparedImage, prepare_image
from common.settings import Settings

__all__ = ["Preprocessor", "PreprocessorConfig"]


@dataclass(frozen=True)
class PreprocessorConfig:
    """`user_config` of the Preprocessor: the limits of the HTTP contract."""

    min_side: int = ImageLimits.min_side  # px
    max_side: int = ImageLimits.max_side  # px
    max_pixels: int = ImageLimits.max_pixels

    @classmethod
    def from_user_config(cls, raw: dict[str, Any]) -> PreprocessorConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown Preprocessor user_config keys: {unknown}")
        return cls(**raw)


@serve.deployment
class Preprocessor:
    def __init__(self) -> None:
        self._max_bytes = Settings.from_env().max_file_bytes
        self._limits = ImageLimits(max_bytes=self._max_bytes)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = PreprocessorConfig.from_user_config(user_config)
        self._limits = ImageLimits(
            max_bytes=self._max_bytes,
            min_side=config.min_side,
            max_side=config.max_side,
            max_pixels=config.max_pixels,
        )

    async def __call__(self, data: bytes, image_size: int) -> PreparedImage:
        return await asyncio.to_thread(prepare_image, data, image_size, self._limits)
