"""request_id: a retried request gets its first answer, and nothing is applied twice.

A mutating call sent with a request_id is remembered by its session's store: the fingerprint of
the request (its method and fields) and the answer's bytes, committed with the change itself. A
retry is looked up before any work (``recall``), so it gets the first answer whatever the
session's state is now; an id sent again with another request is refused (``replay``).
CreateSession and DeleteSession have no session to remember them in: the store keeps their ids
itself (``SessionStore.create`` and ``delete``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from crossgrad.wire.errors import InvalidField
from google.protobuf import message

from .errors import RequestIdReused
from .sessions import Remembered, SessionStore

M = TypeVar("M")

MAX_REQUEST_ID_CHARS = 128
# CreateSession's request_id gets a session back: as strong as a session id (128+ random bits:
# a UUID's 36 characters, 32 hex digits).
MIN_CREATE_REQUEST_ID_CHARS = 32


@dataclass(frozen=True, slots=True)
class Key:
    """A request's request_id and what identifies the request under it."""

    request_id: str
    fingerprint: str


def request_id(value: str) -> str | None:
    """A request's request_id, None when it has none."""
    if len(value) > MAX_REQUEST_ID_CHARS:
        raise InvalidField("request_id", f"{len(value)} characters; a request_id has at most "
                           f"{MAX_REQUEST_ID_CHARS}")
    return value or None


def create_request_id(value: str) -> str | None:
    """CreateSession's request_id, None when it has none: the secret that gets the session back
    on a retry, so it must be as hard to guess as a session id."""
    checked = request_id(value)
    if checked is not None and len(checked) < MIN_CREATE_REQUEST_ID_CHARS:
        raise InvalidField(
            "request_id", f"{len(checked)} characters; CreateSession's request_id gets the "
            "session back on a retry, so it must be as hard to guess as a session id: at least "
            f"{MIN_CREATE_REQUEST_ID_CHARS} characters (a random UUID)")
    return checked


def key(request: message.Message, value: str) -> Key | None:
    """The key of a request whose request_id is ``value``; None when it has none. Only requests
    that can be retried pay for the fingerprint (hashing megabytes, for a large tensor)."""
    checked = request_id(value)
    return None if checked is None else Key(checked, fingerprint(request))


def fingerprint(request: message.Message) -> str:
    """What identifies a request under its request_id: its method (by its message type) and its
    fields."""
    digest = hashlib.blake2b(request.DESCRIPTOR.full_name.encode())
    digest.update(request.SerializeToString(deterministic=True))
    return digest.hexdigest()


def recall(store: SessionStore, session_id: str, key: Key,
           decode: Callable[[bytes], M]) -> M | None:
    """The first answer, when ``key``'s request_id has one."""
    remembered = store.recall(session_id, key.request_id)
    return None if remembered is None else replay(remembered, key, decode)


def remember(key: Key, payload: bytes) -> Remembered:
    """What the store keeps of an answer to the request of ``key``: ``payload`` its bytes."""
    return Remembered(key.fingerprint, payload)


def replay(remembered: object, key: Key, decode: Callable[[bytes], M]) -> M:
    """The answer remembered for ``key``'s request_id, or RequestIdReused if it answered another
    request."""
    assert isinstance(remembered, Remembered)  # what ``remember`` has the store keep
    if remembered.fingerprint != key.fingerprint:
        raise RequestIdReused(key.request_id)
    return decode(remembered.payload)
