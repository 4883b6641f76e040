"""Bounded decoding for the deployments that decode uploads: a small pool of worker processes
per replica, each decode there with a deadline that really stops it (one-pass JPEGs, whose
cost their size bounds, decode in the replica's threads: last paragraph).

libjpeg, libpng and libwebp cannot be interrupted from Python, and a thread cannot be killed,
so `common.image` runs in `pebble` worker processes: a decode past `DECODE_TIMEOUT_S` has its
worker killed (and replaced) and the client gets 413 `too_costly`; a worker that dies on an
upload (a crash, the OOM killer) gives the same answer, and the replica lives on. The pool's
size (`DECODE_WORKERS`) is the number of concurrent decodes of the usual uploads in one
replica; uploads over `LARGE_PIXELS` (read from the header) go to one more worker of their
own, one at a time and at a lower CPU priority (`LARGE_NICENESS`, with a deadline
`LARGE_TIMEOUT_FACTOR` times longer), so a stream of big images neither holds the usual
photos' workers nor takes their cores. A replica's decode memory is at
most `DECODE_WORKERS` + 1 times one upload's peak (about 4-9 bytes per decoded pixel for JPEG
and PNG, 16 for WebP: docs/performance.md); further uploads wait their turn. The Ingress
(`preprocess_in_ingress`), the Preprocessor and the Explainer's overlay use it.

One kind of upload skips the pool: a one-pass JPEG (`common.image.JpegLayout.one_pass`: one
sequential Huffman scan, what cameras and phones write) of at most `LARGE_PIXELS`. Its cost is
bounded by its bytes (about 12 ms per MB here, so under 0.2 s at the 10 MB limit) and, as
libjpeg downscales while decoding, its memory is a few MB; it decodes in the replica's
threads, as the worker's round trip cost more than the decode itself (served throughput was
0.7-0.8 x with every JPEG through the pool: docs/performance.md). Each upload takes one hop to
a thread, where the header checks run and such a JPEG decodes, with whatever else the caller
reads from the same bytes (`prepare_frames_and`: the Ingress's provenance).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from pebble import ProcessExpired, ProcessPool
from PIL import Image

from common.image import (
    ImageLimits,
    ImageTooCostly,
    JpegLayout,
    PreparedImage,
    declared_pixels,
    decode_image,
    jpeg_layout,
    prepare_frames,
)
from deployments.errors import unavailable

__all__ = ["LARGE_PIXELS", "ImageDecoder", "overlay_photo"]

T = TypeVar("T")

LARGE_PIXELS = 16_000_000  # decoded pixels (all frames) from which an upload is a big one
LARGE_NICENESS = 10  # the big uploads' worker yields the CPU to everything else in the replica
LARGE_TIMEOUT_FACTOR = 3  # ...so its deadline is this many times DECODE_TIMEOUT_S

_TASKS_PER_WORKER = 200  # a worker is replaced after this many decodes (returns freed memory)
_CONTEXT = "forkserver"  # never fork a Ray worker (threads, gRPC); forkserver restarts fast
_PRELOAD = ["deployments.decoding"]  # imported once by the fork server, not per worker


def _start_worker(niceness: int) -> None:
    """Worker initializer. pebble's own SIGTERM handler is Python, which waits for libjpeg to
    return (pebble then waits 3 s more before SIGKILL); the default action stops it at once."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if niceness:
        os.nice(niceness)


def overlay_photo(
    data: bytes, limits: ImageLimits, max_side: int, frame: int, layout: JpegLayout | None = None
) -> Image.Image:
    """The upload's picture `frame`, upright RGB, at most `max_side` px on its longest side
    (what the Explainer blends its heat map over)."""
    photo = decode_image(data, limits, draft_size=max_side, frame=frame, layout=layout)
    photo.thumbnail((max_side, max_side))
    return photo


def _decode_if_bounded(
    function, data: bytes, args: tuple, read
) -> tuple[bool, JpegLayout | None, tuple | None]:
    """In one of the replica's threads: whether the upload is a big one, a JPEG's layout, and,
    for a one-pass JPEG of at most LARGE_PIXELS (its cost bounded by its size: under 0.2 s at
    the 10 MB limit here, and a few MB once libjpeg downscales), `function`'s result and
    `read`'s, since a worker's round trip would cost more than it protects. None for the
    pool's uploads. The markers are walked once: `function` and `read` are given the layout
    found here."""
    if not data.startswith(b"\xff\xd8"):
        return declared_pixels(data) > LARGE_PIXELS, None, None
    # Its size is what the header declares (no second header read). One scan is all a one-pass
    # JPEG may have, so the walk stops at a progressive JPEG's second scan, and a one-pass
    # JPEG's complete count settles the decode's scan limit: it is not walked again.
    layout = jpeg_layout(data, max_scans=1)
    large = layout.width * layout.height > LARGE_PIXELS
    if large or not layout.one_pass:
        return large, layout, None
    result = function(data, *args, layout=layout)
    return large, layout, (result, None if read is None else read(data, layout))


class ImageDecoder:
    """`common.image`'s decoders in `workers` processes, each call bounded by `timeout_s`.

    The processes start on the first call, so a replica that never decodes has none."""

    def __init__(self, workers: int, timeout_s: float) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self._pools: dict[bool, ProcessPool] = {}  # by "is it a big upload"
        self._lock = threading.Lock()

    async def prepare_frames(
        self, data: bytes, size: int, limits: ImageLimits
    ) -> list[PreparedImage]:
        """`common.image.prepare_frames` within the deadline."""
        frames, _ = await self._run(prepare_frames, data, (size, limits))
        return frames

    async def prepare_frames_and(
        self,
        data: bytes,
        size: int,
        limits: ImageLimits,
        read: Callable[[bytes, JpegLayout | None], T],
    ) -> tuple[list[PreparedImage], T]:
        """`prepare_frames`, and `read(data, layout)` beside it (the Ingress's provenance;
        `layout`: a JPEG's `jpeg_layout`, walked to its second scan at most, else None): in the
        same thread hop when the upload decodes in this replica, in a thread of its own while
        a worker decodes it. `read` must not raise."""
        return await self._run(prepare_frames, data, (size, limits), read)

    async def overlay_photo(
        self, data: bytes, limits: ImageLimits, max_side: int, frame: int
    ) -> Image.Image:
        """`overlay_photo` within the deadline."""
        photo, _ = await self._run(overlay_photo, data, (limits, max_side, frame))
        return photo

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.stop()
                pool.join(timeout=5)
            self._pools.clear()

    async def _run(self, function, data: bytes, args: tuple, read=None):
        # one hop to a thread: the header checks (off the event loop), then a bounded upload's
        # decode and `read` there too; anything else goes to a worker, `read` meanwhile
        large, layout, here = await asyncio.to_thread(
            _decode_if_bounded, function, data, args, read
        )
        if here is not None:
            return here
        timeout_s = self.timeout_s * (LARGE_TIMEOUT_FACTOR if large else 1)
        future = None
        try:
            future = self._pool(large).schedule(function, args=(data, *args), timeout=timeout_s)
            beside = None if read is None else await asyncio.to_thread(read, data, layout)
            # cancelling (a client gone) cancels the task, and pebble kills a running one
            return await asyncio.wrap_future(future), beside
        except BrokenProcessPool:
            self.close()  # the next call starts a new pool
            raise unavailable(
                "unavailable", "the image decoder is restarting; retry shortly"
            ) from None
        except FutureTimeout:
            raise ImageTooCostly(
                f"decoding the image took longer than {timeout_s:g} s; "
                "send a smaller or simpler image"
            ) from None
        except ProcessExpired:
            raise ImageTooCostly(
                "decoding the image used more resources than a decoder may; "
                "send a smaller or simpler image"
            ) from None
        finally:
            if future is not None:  # a no-op once it has finished; stops it if `read` was cancelled
                future.cancel()

    def _pool(self, large: bool) -> ProcessPool:
        with self._lock:
            pool = self._pools.get(large)
            if pool is None or not pool.active:
                context = multiprocessing.get_context(_CONTEXT)
                context.set_forkserver_preload(_PRELOAD)  # instead of the Ray worker's __main__
                pool = self._pools[large] = ProcessPool(
                    max_workers=1 if large else self.workers,
                    max_tasks=_TASKS_PER_WORKER,
                    initializer=_start_worker,
                    initargs=(LARGE_NICENESS if large else 0,),
                    context=context,
                )
            return pool
