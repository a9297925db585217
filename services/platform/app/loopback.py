"""Serving an app on a loopback socket from a background thread.

Used wherever one process runs a service next to its clients: tests, benchmarks
and the embedded default. The socket is made with ``IPPROTO_TCP`` on purpose:
asyncio sets ``TCP_NODELAY`` only on sockets whose protocol is TCP, and with
protocol 0 every small response stalls ~40 ms (Nagle's algorithm meeting the
client's delayed ACK).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp


class ServerStartError(RuntimeError):
    """uvicorn did not start serving before the deadline."""


def bind_loopback(port: int = 0, host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: any free port), not yet listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


@contextmanager
def serve_in_thread(
    app: ASGIApp, sock: socket.socket | None = None, start_timeout_s: float = 60
) -> Iterator[str]:
    """Serves ``app`` with uvicorn on ``sock`` (a fresh loopback socket when None) in a
    daemon thread; yields its base URL and stops the server on exit."""
    sock = sock or bind_loopback()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    try:
        while not server.started:
            if not thread.is_alive():
                raise ServerStartError("uvicorn stopped during start-up")
            if time.monotonic() >= deadline:
                raise ServerStartError(f"uvicorn did not start within {start_timeout_s:.0f} s")
            time.sleep(0.01)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
