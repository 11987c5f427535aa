"""The server's typed errors, beside the engine's (``crossgrad.engine.errors``).

Like the engine's, each names its gRPC status as a plain string and its ErrorInfo reason;
``status.py`` maps ``.status`` to a code, the one place that does. Messages are for clients:
short, no stack traces, no full session tokens.
"""

from __future__ import annotations

from crossgrad.engine.errors import CrossgradError, InvalidArgument, LimitExceeded, short_name


def short_id(session_id: str) -> str:
    """A prefix of a session id for messages and logs.

    The id is the handle to a session's data, so the whole of it is never written where logs and
    error trackers keep it; a prefix still tells a user which of their sessions is meant.
    """
    return session_id if len(session_id) <= 8 else session_id[:8] + "…"


class SessionNotFound(CrossgradError):
    """No live session has this id: never created, deleted, or expired after its idle TTL."""

    status = "NOT_FOUND"
    reason = "SESSION_NOT_FOUND"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {short_name(short_id(session_id))} not found: it does not "
                         "exist, was deleted, or expired after its idle TTL")
        self.session_id = session_id


class LeafNotFound(CrossgradError):
    """The session has no leaf of this name (``node``: the graph node that named it, if any)."""

    status = "NOT_FOUND"
    reason = "LEAF_NOT_FOUND"

    def __init__(self, name: str, *, node: str | None = None) -> None:
        where = f"node {short_name(node)}: " if node is not None else ""
        super().__init__(f"{where}no leaf named {short_name(name)} in this session", node=node)
        self.name = name


class VersionMismatch(CrossgradError):
    """PutLeaf's ``expected_version`` is not the leaf's version (0: the leaf does not exist)."""

    status = "ABORTED"
    reason = "VERSION_MISMATCH"

    def __init__(self, name: str, expected: int, version: int) -> None:
        super().__init__(f"leaf {short_name(name)} is at version {version}, not the expected "
                         f"{expected}: read it again, then retry")
        self.name = name
        self.version = version


class RequestIdReused(InvalidArgument):
    """A request_id sent again with a different request."""

    reason = "REQUEST_ID_REUSED"

    def __init__(self, request_id: str) -> None:
        super().__init__(f"request_id {request_id[:64]!r} was already used for a different "
                         "request; use a new request_id for a new request")


class SessionBusy(CrossgradError):
    """A call gave up after the session's leaves kept changing under it: retrying may succeed."""

    status = "ABORTED"
    reason = "SESSION_BUSY"


class BudgetExceeded(LimitExceeded):
    """A change or an answer past one of the server's limits; ``limit`` names it (ErrorInfo's
    "limit"), and the message says what was refused and that nothing changed."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


class CallCancelled(CrossgradError):
    """The client cancelled before the call committed its change: the change is dropped (a
    client that retries with its request_id finds nothing done)."""

    status = "CANCELLED"
    reason = "CANCELLED"

    def __init__(self) -> None:
        super().__init__("the call was cancelled before it committed; nothing was changed")


class CallExpired(CrossgradError):
    """The client's deadline passed before the call committed its change: dropped, likewise."""

    status = "DEADLINE_EXCEEDED"
    reason = "DEADLINE_EXCEEDED"

    def __init__(self) -> None:
        super().__init__("the call's deadline passed before it committed; nothing was changed")


class ServerDraining(CrossgradError):
    """A call that arrived after the server began shutting down: another replica can take it."""

    status = "UNAVAILABLE"
    reason = "SERVER_DRAINING"

    def __init__(self) -> None:
        super().__init__("the server is shutting down; retry on another replica")
