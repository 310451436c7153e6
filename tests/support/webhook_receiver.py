"""A real webhook receiver on loopback for tests and the bench: it verifies every request's
signature with the Standard Webhooks reference library (`standardwebhooks`), records what
came, and misbehaves as told (5xx, timeouts, 410, slow answers, Retry-After, redirects).

In a test: `WebhookReceiver(plan).start()` on the test's loop. In another process (the
bench): `python -m tests.support.webhook_receiver --port-file F --secret-file S --log L`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# What to do with the n-th request (0-based): "ok", "500", "503", "410", "timeout" (never
# answer in time), "slow" (answer 200 after a while), "retry_after" (503 + Retry-After: 1),
# "redirect" (302 elsewhere).
Plan = Callable[[int], str]


def always_ok(n: int) -> str:
    return "ok"


@dataclass
class Received:
    n: int
    webhook_id: str
    timestamp: int
    verified: bool
    action: str
    at: float
    events: list[dict[str, Any]] = field(default_factory=list)
    body: bytes = b""


class WebhookReceiver:
    def __init__(
        self,
        plan: Plan = always_ok,
        *,
        secret: str | None = None,
        secret_file: Path | None = None,
        log: Path | None = None,
        slow: float = 0.3,
        hang: float = 30.0,
    ) -> None:
        self.plan = plan
        self.secret = secret
        self.secret_file = secret_file
        self.log_path = log
        self.slow = slow
        self.hang = hang
        self.requests: list[Received] = []
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._log = log.open("a", buffering=1) if log else None
        self.arrived = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _verifier(self) -> Webhook:
        if self.secret is None and self.secret_file is not None:
            self.secret = self.secret_file.read_text().strip()
        assert self.secret, "the receiver has no secret yet"
        return Webhook(self.secret)

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        n = len(self.requests)
        action = self.plan(n)
        headers = {k: v for k, v in request.headers.items()}
        try:
            self._verifier().verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        doc = json.loads(body)
        rec = Received(
            n,
            headers.get("webhook-id", ""),
            int(headers.get("webhook-timestamp", "0")),
            verified,
            action,
            time.time(),
            doc.get("data", {}).get("events", []),
            body,
        )
        self.requests.append(rec)
        self.arrived.set()
        if self._log:
            sig = headers.get("webhook-signature", "")
            self._log.write(
                f"{time.strftime('%H:%M:%S')} #{n} webhook-id={rec.webhook_id} "
                f"webhook-timestamp={rec.timestamp} webhook-signature={sig[:20]}... "
                f"verified={verified} events={len(rec.events)} -> {action}\n"
            )
        if action == "ok":
            return Response(status_code=204)
        if action == "slow":
            await asyncio.sleep(self.slow)
            return Response(status_code=200)
        if action == "timeout":
            await asyncio.sleep(self.hang)
            return Response(status_code=200)
        if action == "retry_after":
            return Response(status_code=503, headers={"Retry-After": "1"})
        if action == "redirect":
            return Response(status_code=302, headers={"Location": "http://127.0.0.1:9/x"})
        return Response(b"x" * 1_000_000 if action == "500" else b"", status_code=int(action))

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])

    async def start(self) -> WebhookReceiver:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app(), log_level="error", lifespan="off", access_log=False, timeout_keep_alive=30
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:  # noqa: ASYNC110 (uvicorn offers no event)
            await asyncio.sleep(0.01)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 10)
        if self._log:
            self._log.close()

    def delivered(self) -> list[Received]:
        """Requests answered 2xx."""
        return [r for r in self.requests if r.action in ("ok", "slow")]


async def _main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port-file", type=Path, required=True)
    p.add_argument("--secret-file", type=Path, required=True)
    p.add_argument("--log", type=Path)
    p.add_argument("--record", type=Path, help="JSON lines: receipt time and event ids")
    args = p.parse_args()
    receiver = WebhookReceiver(secret_file=args.secret_file, log=args.log)
    record = args.record.open("a", buffering=1) if args.record else None
    if record:
        original = receiver._hook

        async def hook(request: Request) -> Response:
            response = await original(request)
            r = receiver.requests[-1]
            record.write(
                json.dumps(
                    {
                        "at": r.at,
                        "verified": r.verified,
                        "events": [[e["id"], e["at"]] for e in r.events],
                    }
                )
                + "\n"
            )
            return response

        receiver._hook = hook  # type: ignore[method-assign]
    await receiver.start()
    args.port_file.write_text(str(receiver.port))
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_main())
