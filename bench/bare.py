"""The floor bench.intake compares the bot with: a webhook endpoint that reads the body, parses
the JSON and answers, served by uvicorn with the options `oncall-bot serve` gives it.

    .venv/bin/python -m bench.bare PORT

Its own module so that its process imports Starlette and uvicorn only, not the bot (quicker to
start, and nothing of the bot's in its memory or threads).
"""

from __future__ import annotations

import json
import sys

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = ["bare_app", "serve"]


def bare_app() -> Starlette:
    """What any webhook endpoint does: read the body, parse the JSON, answer."""

    async def receive(request: Request) -> JSONResponse:
        json.loads(await request.body())
        return JSONResponse({"ok": True})

    async def alive(_: Request) -> JSONResponse:
        return JSONResponse({"status": "alive"})

    return Starlette(routes=[Route("/alertmanager", receive, methods=["POST"]), Route("/healthz", alive)])


def serve(port: int) -> None:
    import uvicorn

    # The options commands.cli `serve` gives uvicorn, so that only the application differs.
    uvicorn.run(bare_app, factory=True, host="127.0.0.1", port=port, log_config=None, proxy_headers=True)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
