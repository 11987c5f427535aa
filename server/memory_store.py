"""The in-process session store: the embedded default, with nothing else to run.

Locking: one store-wide lock guards the tables and is only ever held for dictionary-sized work,
never while a change runs; each session has its own lock, held for the whole of an ``update``, so
updates of one session run one at a time while different sessions proceed in parallel. ``get``
never waits for an update in progress: it returns the last stored snapshot.

Expiry is lazy: every call first drops the sessions whose idle TTL has passed, found through a heap
of deadlines, so there is no background thread and a call pays only for what has expired. A session
with an update in progress is in use and does not expire.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import cast

from crossgrad.engine import dtypes
from crossgrad.engine.dtypes import DType
from crossgrad.engine.graph import LimitExceeded

from .errors import RequestIdReused, SessionNotFound
from .sessions import Change, CheckMode, R, Session, StoreConfig, new_session_id


@dataclass(eq=False)
class _Slot:
    """A live session and its bookkeeping; mutable fields change under the store-wide lock."""

    session: Session
    deadline: float  # the clock's time at which it expires unless touched
    lock: threading.Lock = field(default_factory=threading.Lock)  # held for the whole of an update
    results: OrderedDict[str, object] = field(default_factory=OrderedDict)  # request_id -> result
    alive: bool = True


class MemoryStore:
    """A ``SessionStore`` in this process's memory (lost when it exits; Redis is the durable one).

    ``clock`` returns seconds and never goes backwards; tests inject a fake one rather than sleep.
    """

    def __init__(self, config: StoreConfig | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or StoreConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        # (deadline, id): at least one entry per live session, never later than its deadline.
        self._deadlines: list[tuple[float, str]] = []
        # Store-wide request_ids of create and delete: key -> (forget at, session id, what the
        # call asked for), oldest first.
        self._requests: OrderedDict[Hashable, tuple[float, str, Hashable]] = OrderedDict()

    def create(self, dtype: DType = dtypes.float32, check: CheckMode = "STRICT",
               idle_ttl: float | None = None, *, owner: str | None = None,
               request_id: str | None = None) -> Session:
        ttl = self.config.default_idle_ttl if idle_ttl is None else min(
            idle_ttl, self.config.max_idle_ttl)
        session = Session(new_session_id(), dtype, check, ttl, owner)  # validates the settings
        key, asked = ("create", owner, request_id), (dtype, check, idle_ttl)
        with self._lock:
            now = self._sweep()
            if request_id is not None and (first := self._recall(key, asked)) is not None:
                return self._live(first, owner, now).session
            if len(self._slots) >= self.config.max_sessions:
                raise LimitExceeded(f"too many sessions: this server holds at most "
                                    f"{self.config.max_sessions}; delete unused sessions or wait "
                                    "for idle ones to expire")
            self._slots[session.id] = _Slot(session, now + ttl)
            heapq.heappush(self._deadlines, (now + ttl, session.id))
            if request_id is not None:
                self._remember(key, session.id, asked, now)
        return session

    def get(self, session_id: str, *, owner: str | None = None) -> Session:
        with self._lock:
            return self._live(session_id, owner, self._sweep()).session

    def recall(self, session_id: str, request_id: str, *, owner: str | None = None,
               ) -> object | None:
        with self._lock:
            return self._live(session_id, owner, self._sweep()).results.get(request_id)

    def update(self, session_id: str, change: Change[R], request_id: str | None = None, *,
               owner: str | None = None) -> R:
        with self._lock:
            slot = self._live(session_id, owner, self._sweep())
        with slot.lock:
            try:
                with self._lock:
                    if not slot.alive:  # deleted while this call waited for the lock
                        raise SessionNotFound(session_id)
                    if request_id is not None and request_id in slot.results:
                        return cast(R, slot.results[request_id])
                    before = slot.session
                after, result = change(before)
                if after.id != before.id or after.owner != before.owner:
                    raise ValueError("a session change must keep the session's id and owner")
                with self._lock:
                    # Deleted meanwhile: as if this update had run just before the delete.
                    slot.session = after
                    if request_id is not None:
                        slot.results[request_id] = result
                        if len(slot.results) > self.config.max_request_ids:
                            slot.results.popitem(last=False)
                return result
            finally:
                with self._lock:
                    slot.deadline = self._clock() + slot.session.idle_ttl

    def delete(self, session_id: str, request_id: str | None = None, *,
               owner: str | None = None) -> None:
        key = ("delete", owner, session_id, request_id)
        with self._lock:
            now = self._sweep()
            if request_id is not None and self._recall(key, None) is not None:
                return
            slot = self._live(session_id, owner, now)
            if request_id is not None and request_id in slot.results:
                raise RequestIdReused(request_id)  # the session's own calls share its keys
            del self._slots[session_id]
            slot.alive = False
            if request_id is not None:
                self._remember(key, session_id, None, now)
            if len(self._deadlines) > 2 * len(self._slots) + 64:
                # Deleted sessions leave their heap entries behind: rebuild before they pile up.
                self._deadlines = [(s.deadline, i) for i, s in self._slots.items()]
                heapq.heapify(self._deadlines)

    def close(self) -> None:
        """Nothing to release: the sessions go with the process."""

    # --- under self._lock ---------------------------------------------------------------------

    def _live(self, session_id: str, owner: str | None, now: float) -> _Slot:
        """The session's slot with its idle timer restarted (call after ``_sweep``)."""
        slot = self._slots.get(session_id)
        if slot is None or slot.session.owner != owner:
            raise SessionNotFound(session_id)
        slot.deadline = now + slot.session.idle_ttl
        return slot

    def _sweep(self) -> float:
        """Drop the sessions idle past their TTL; return the time it is now."""
        now = self._clock()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, session_id = heapq.heappop(self._deadlines)
            slot = self._slots.get(session_id)
            if slot is None:
                continue  # deleted
            if slot.deadline > now:  # touched since the entry was pushed
                heapq.heappush(self._deadlines, (slot.deadline, session_id))
            elif slot.lock.locked():  # an update is running: in use, not idle
                heapq.heappush(self._deadlines, (now + slot.session.idle_ttl, session_id))
            else:
                del self._slots[session_id]
                slot.alive = False
        while self._requests and next(iter(self._requests.values()))[0] <= now:
            self._requests.popitem(last=False)
        return now

    def _recall(self, key: tuple[Hashable, ...], asked: Hashable) -> str | None:
        """The session id a remembered request_id's call returned (expired ones are swept);
        RequestIdReused if that call asked for something else."""
        entry = self._requests.get(key)
        if entry is None:
            return None
        if entry[2] != asked:
            raise RequestIdReused(str(key[-1]))
        return entry[1]

    def _remember(self, key: Hashable, session_id: str, asked: Hashable, now: float) -> None:
        self._requests[key] = (now + self.config.request_id_ttl, session_id, asked)
        if len(self._requests) > self.config.max_store_request_ids:
            self._requests.popitem(last=False)
