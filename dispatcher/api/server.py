"""`maildispatch api`: the app on uvicorn (uvloop, httptools), a process of its own."""

from __future__ import annotations

import uvicorn

from dispatcher.api.app import create_app
from dispatcher.config import Config, ConfigError


def split_listen(listen: str, key_path: str = "--listen") -> tuple[str, int]:
    """HOST:PORT (port 0: any free port)."""
    host, _, port = listen.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise ConfigError(field=key_path, reason=f"expected HOST:PORT, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def uvicorn_config(config: Config, listen: str | None = None) -> uvicorn.Config:
    """The server settings: bounded keep-alive, no access log (metrics count requests)."""
    host, port = split_listen(listen or config.api.listen)
    return uvicorn.Config(
        create_app(config),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,  # uvicorn's lines go through the root logger: one format
        timeout_keep_alive=30,
        timeout_graceful_shutdown=int(config.dispatch.shutdown_timeout),
        server_header=False,
        # Bounds connections and tasks; past it uvicorn answers 503.
        limit_concurrency=4096,
        h11_max_incomplete_event_size=64 * 1024,
    )


def serve(config: Config, listen: str | None = None) -> None:
    """Run until SIGINT/SIGTERM (uvicorn shuts down gracefully: in-flight requests finish)."""
    uvicorn.Server(uvicorn_config(config, listen)).run()
