"""Real servers for tests: an ASGI app under uvicorn in a thread on a loopback port that
is bound before the app is built (so URLs are known up front and never raced for)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn


def bind() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class Running:
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextmanager
def serve(app, sock: socket.socket, *, lifespan: str = "on", **ssl) -> Iterator[Running]:
    """Serve `app` on `sock` until the block ends (or `.stop()`); `ssl` are uvicorn's
    ssl_* options (spe.pki.server_ssl_options)."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan,
                                           **ssl))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    running = Running(server, thread)
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the app did not start under uvicorn")
            time.sleep(0.02)
        yield running
    finally:
        running.stop()
        sock.close()
