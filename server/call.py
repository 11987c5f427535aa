"""One call as the servicer sees it: how long the client still waits, and whether it still does.

The servicer runs in a worker thread while gRPC's event loop owns the call; a ``Call`` is the one
object both sides share. The loop marks it ended (the client cancelled, the deadline passed, the
RPC finished); the worker asks, before committing anything, whether anyone is still waiting for
the answer.
"""

from __future__ import annotations

import time


class Call:
    """A call's deadline and liveness, safe to read from any thread.

    ``time_remaining``: seconds left of the client's deadline, None when it set none. The deadline
    is fixed on the monotonic clock when the call starts, so a wall-clock step cannot move it.
    ``is_active``: False once the client cancelled, the deadline passed or the RPC ended.
    ``peer``: the client's address, as gRPC gives it (``"ipv4:127.0.0.1:50312"``).
    """

    __slots__ = ("_deadline", "_ended", "_peer")

    def __init__(self, time_remaining: float | None, peer: str = "") -> None:
        self._deadline = None if time_remaining is None else time.monotonic() + time_remaining
        self._peer = peer
        # Only ever goes from False to True, by one reference store: readers in other threads need
        # no lock to see it.
        self._ended = False

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def is_active(self) -> bool:
        if self._ended:
            return False
        return self._deadline is None or time.monotonic() < self._deadline

    def peer(self) -> str:
        return self._peer

    def end(self) -> None:
        """The RPC is over (answered, cancelled or past its deadline): nobody reads its answer."""
        self._ended = True
