"""Work the Ingress does after answering: items collected per request, sent in batches.

A `BatchedSender` keeps what requests hand it and, every `interval()` seconds, passes the lot to
`send` in a task detached from any request — Serve must not tie those calls to the request that
caused them, nor cancel them with it. One handle call per batch instead of one per request keeps
the mirror to the Shadow and the reports to the DriftMonitor off the answer's CPU budget; a slow
receiver only makes batches bigger, up to `max_pending` (older items are dropped and counted).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["BatchedSender"]

logger = logging.getLogger("ray.serve")
T = TypeVar("T")


class BatchedSender(Generic[T]):
    def __init__(
        self,
        name: str,
        send: Callable[[list[T]], Awaitable[None]],
        interval: Callable[[], float],
        max_pending: int,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.name = name
        self.send = send
        self.interval = interval  # read each round, so a user_config change applies at once
        self.max_pending = max_pending
        self.on_drop = on_drop
        self._pending: list[T] = []
        self._task: asyncio.Task | None = None

    def add(self, items: list[T]) -> None:
        """Queue items (from inside the replica's event loop); never blocks, never raises."""
        self._pending.extend(items)
        overflow = len(self._pending) - self.max_pending
        if overflow > 0:
            del self._pending[:overflow]
            if self.on_drop is not None:
                self.on_drop(overflow)
        if self._task is None or self._task.done():
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run(), context=contextvars.Context())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval())
            if not self._pending:
                continue
            batch, self._pending = self._pending, []
            try:
                await self.send(batch)
            except Exception:  # the receiver is down or slow: this batch is lost, serving goes on
                logger.exception("%s: could not send %d items", self.name, len(batch))
