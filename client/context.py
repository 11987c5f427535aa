"""Which session the module functions use: the one ``connect()`` made, else one on
``$CROSSGRAD_ADDRESS``, else one on an embedded server started in this process."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from .connection import Connection

if TYPE_CHECKING:
    from crossgrad.engine.dtypes import DType

    from .session import Session

ADDRESS_VARIABLE = "CROSSGRAD_ADDRESS"
_lock = threading.Lock()
_current: Session | None = None


def connect(target: str | None = None, *, api_key: str | None = None,
            root_certificates: bytes | None = None, session_id: str | None = None,
            dtype: DType | None = None, check: str = "strict",
            idle_ttl: float | None = None) -> Session:
    """A session on the service at ``target`` (any gRPC target; a list of replicas,
    ``ipv4:10.0.0.1:7001,10.0.0.2:7001``, is balanced round-robin), made the current one:
    ``tensor()`` and the other module functions make their tensors in it.

    ``session_id``: use that existing session instead of creating one. ``check``: the session's
    check mode ("strict", "report" or "off"). ``target`` None: ``$CROSSGRAD_ADDRESS``, else an
    embedded server in this process. Use it as a context manager to delete the session at the
    end of the block.
    """
    from .session import Session

    global _current
    if target is None:
        target = os.environ.get(ADDRESS_VARIABLE) or _embedded_address()
    connection = Connection(target, api_key=api_key, root_certificates=root_certificates)
    session = Session(connection, session_id, dtype=dtype, check=check, idle_ttl=idle_ttl)
    with _lock:
        _current = session
    return session


def current() -> Session:
    """The current session, connecting by default the first time."""
    session = _current
    if session is None or session.closed:
        with _lock:
            session = _current
        if session is None or session.closed:
            session = connect()
    return session


def forget(session: Session) -> None:
    """``session`` closed: the next module function connects anew."""
    global _current
    with _lock:
        if _current is session:
            _current = None


def _embedded_address() -> str:
    from .embedded import address

    return address()
