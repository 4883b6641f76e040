"""Calls from the Ingress down the graph: one deadline, back-pressure as 503, one retry.

`call` is the only place the Ingress turns a downstream failure into an answer: past
`timeout_s` the client gets 503 `timeout`; a full queue (`BackPressureError`) 503
`overloaded`; a model replica without a model 503 `not_ready`; and when the replica that took
the call died, the call is made once more (inference is idempotent) before 503 `unavailable`,
after `RETRY_DELAY_S`: an immediate retry could go to the same dead replica, before the
handle's router had learnt it was gone (the killed-replica drill met it once).
Every 503 carries `Retry-After`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from common.answers import ModelInfo, NoModelLoaded
from deployments.errors import unavailable

__all__ = ["call", "fetch_model_info"]

logger = logging.getLogger("ray.serve")
T = TypeVar("T")

_REPLICA_GONE = (RayActorError, ReplicaUnavailableError)  # worth one retry on another replica
RETRY_DELAY_S = 0.1


async def call(
    make_call: Callable[[], Awaitable[T]],
    *,
    timeout_s: float,
    what: str,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """`await make_call()` under the rules above; `what` names the call in errors and logs.
    `make_call` builds a new handle call each time, so the retry goes to a live replica."""
    for attempt in (1, 2):
        try:
            return await asyncio.wait_for(make_call(), timeout_s)
        except BackPressureError:
            raise unavailable("overloaded", f"the {what} is at capacity; retry shortly") from None
        except TimeoutError:
            raise unavailable("timeout", f"the {what} did not answer in time") from None
        except NoModelLoaded:
            raise unavailable("not_ready", "the model is not loaded yet") from None
        except _REPLICA_GONE:
            if attempt == 2:
                raise unavailable(
                    "unavailable", f"a {what} replica failed; retry shortly"
                ) from None
            if on_retry is not None:
                on_retry()
            logger.warning("a %s replica died during the call; retrying once", what)
            await asyncio.sleep(RETRY_DELAY_S)
    raise AssertionError("unreachable")


async def fetch_model_info(handle: DeploymentHandle, timeout_s: float = 5.0) -> ModelInfo:
    """What a Classifier (or Shadow) replica serves; TimeoutError past `timeout_s`."""
    return await asyncio.wait_for(handle.model_info.remote(), timeout_s)
