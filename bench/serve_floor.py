"""The smallest Ray Serve application: one replica that answers every request with "ok".

`bench.startup` starts it the way `make serve` starts the real graph (the same Makefile target,
`serving.env`, HAProxy front end, a Ray instance of its own), so its start-up is the floor that
Ray and Serve alone cost on the machine at hand.
"""

from ray import serve
from starlette.requests import Request
from starlette.responses import PlainTextResponse


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Floor:
    async def __call__(self, request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")


app = Floor.bind()
