"""A server in this process, for an SDK with nowhere else to connect: the only place the SDK
imports the server. It listens on a free loopback port and stops when the program exits.

A program waits for it: its closed-form derivations get 2 s (a standalone server's default is
10 s) before a backward falls back to the finite-difference check, so a large first step (a
1,000-sample regression) costs seconds, not ten.
"""

from __future__ import annotations

import atexit
import threading

_DERIVATION_SECONDS = 2.0
_lock = threading.Lock()
_address: str | None = None


def address() -> str:
    """The embedded server's address, starting it the first time."""
    global _address
    with _lock:
        if _address is None:
            from crossgrad.server.config import Config
            from crossgrad.server.main import serve

            server = serve(Config(address="127.0.0.1:0", symbolic_workers=1,
                                  symbolic_deadline=_DERIVATION_SECONDS))
            atexit.register(server.stop, 0)
            _address = server.address
        return _address
