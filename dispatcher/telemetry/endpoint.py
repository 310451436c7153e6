"""The workers' metrics port: `/metrics` (Prometheus), `/healthz` (the process lives) and
`/readyz` (every readiness check says "ok": the store, Redis when configured).

Served from a daemon thread, as prometheus-client's own server is; readiness checks are
plain callables reading state the event loop keeps (flags, never I/O), so the thread never
touches the loop.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

# name -> check: "ok", or a short reason it is not ready
Readiness = Mapping[str, Callable[[], str]]


def readiness_report(checks: Readiness) -> tuple[bool, dict[str, str]]:
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            results[name] = check()
        except Exception as e:  # a broken check is a not-ready check, never a 500
            results[name] = f"error: {type(e).__name__}"
    return all(v == "ok" for v in results.values()), results


class MetricsEndpoint:
    """The HTTP server of the metrics port; `close()` stops it."""

    def __init__(self, registry: CollectorRegistry, checks: Readiness, listen: str) -> None:
        host, _, port = listen.rpartition(":")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
                elif path == "/healthz":
                    self._json(200, {"status": "ok", "checks": {}})
                elif path == "/readyz":
                    ok, results = readiness_report(checks)
                    status = "ok" if ok else "unavailable"
                    self._json(200 if ok else 503, {"status": status, "checks": results})
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found\n")

            def _json(self, code: int, body: object) -> None:
                self._send(code, "application/json", json.dumps(body).encode())

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes every few seconds are not news

        self.server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="metrics-endpoint", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
