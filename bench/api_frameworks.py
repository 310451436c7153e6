"""FastAPI vs Starlette + msgspec on the single-POST path, in-process (no network, no store):
`python -m bench.api_frameworks` (needs the `compare` extra: pip install -e '.[compare]').

Both apps do what POST /v1/messages does before the store: read the body, validate it,
build the message with the shared intake (MessageFactory.build), answer 202 with JSON.
FastAPI as it is used: a pydantic model for the body (its validation and OpenAPI), then
intake; Starlette: intake's own parse_payload, msgspec to encode. Each request is one ASGI
call; the figure is microseconds per request, median of three runs of 3,000.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.api_load import payload


def _factory() -> Any:
    from dispatcher.config import load_config
    from dispatcher.message.intake import MessageFactory
    from dispatcher.message.verp import Verp
    from tests.support.api import write_config

    config = load_config(write_config(Path(tempfile.mkdtemp())))
    return MessageFactory.from_config(config, Verp(b"k" * 32, "b"))


def starlette_app(factory: Any) -> Any:
    import msgspec
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from dispatcher.message.intake import parse_payload

    async def send(request: Request) -> Response:
        doc = parse_payload(await request.body())
        m = factory.build(doc, now=time.time())
        body = msgspec.json.encode({"id": m.id, "account": m.account, "status": "accepted"})
        return Response(body, status_code=202, media_type="application/json")

    return Starlette(routes=[Route("/v1/messages", send, methods=["POST"])])


def fastapi_app(factory: Any) -> Any:
    from fastapi import FastAPI
    from pydantic import BaseModel, ConfigDict, Field

    class MessageIn(BaseModel):
        model_config = ConfigDict(extra="forbid", populate_by_name=True)
        account: str | None = None
        idempotency_key: str | None = None
        from_: str = Field(alias="from")
        to: str
        subject: str
        text: str | None = None
        html: str | None = None

    # FastAPI resolves the (string) annotation through the module's globals.
    globals()["MessageIn"] = MessageIn
    app = FastAPI()

    @app.post("/v1/messages", status_code=202)
    async def send(message: MessageIn) -> dict[str, str]:
        m = factory.build(message.model_dump(by_alias=True, exclude_none=True), now=time.time())
        return {"id": m.id, "account": m.account, "status": "accepted"}

    return app


async def _drive(app: Any, bodies: list[bytes]) -> float:
    async def call(body: bytes) -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/v1/messages", "raw_path": b"/v1/messages",
            "query_string": b"", "root_path": "", "server": ("127.0.0.1", 80),
            "client": ("127.0.0.1", 1),
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
        }  # fmt: skip
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        status = 0

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope, receive, send)
        assert status == 202, status

    for b in bodies[:200]:  # warm up
        await call(b)
    start = time.perf_counter()
    for b in bodies:
        await call(b)
    return (time.perf_counter() - start) / len(bodies) * 1e6


def main() -> None:
    import uvloop

    factory = _factory()
    bodies = [json.dumps({**payload(i, "f"), "account": "acme"}).encode() for i in range(3000)]
    apps = {"starlette+msgspec": starlette_app(factory), "fastapi": fastapi_app(factory)}
    results: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(3):
        for name, app in apps.items():  # interleaved, so drift hits both
            results[name].append(uvloop.run(_drive(app, bodies)))
    out = {name: {"us_per_request": statistics.median(v), "runs": v} for name, v in results.items()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
