"""A server in this process, for an SDK with nowhere else to connect: the only place the SDK
imports the server. It listens on a free loopback port and stops when the program exits."""

from __future__ import annotations

import atexit
import threading

_lock = threading.Lock()
_address: str | None = None


def address() -> str:
    """The embedded server's address, starting it the first time."""
    global _address
    with _lock:
        if _address is None:
            from crossgrad.server.config import Config
            from crossgrad.server.main import serve

            server = serve(Config(address="127.0.0.1:0", symbolic_workers=1))
            atexit.register(server.stop, 0)
            _address = server.address
        return _address
