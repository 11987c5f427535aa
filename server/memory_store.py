"""The in-process session store: the embedded default, with nothing else to run.

Locking: one store-wide lock guards the tables and is only ever held for dictionary-sized work,
never while a change runs; each session has its own lock, held for the whole of an ``update``, so
updates of one session run one at a time while different sessions proceed in parallel. ``get``
never waits for an update in progress: it returns the last stored snapshot.

Expiry is lazy: every call first drops the sessions whose idle TTL has passed, found through a heap
of deadlines, so there is no background thread and a call pays only for what has expired. A session
with an update in progress is in use and does not expire.

Budgets: the store counts the bytes each session holds (leaf values and grads, from the snapshot,
plus its remembered answers) and their total; an update that would take a session past
``max_session_bytes`` or the store past ``max_store_bytes`` is refused before anything is stored.
"""

from __future__ import annotations

import hashlib
import heapq
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import cast

from crossgrad.engine import dtypes
from crossgrad.engine.check import CheckMode
from crossgrad.engine.dtypes import DType

from .errors import BudgetExceeded, RequestIdReused, SessionNotFound
from .sessions import (
    Change,
    R,
    Session,
    StoreConfig,
    new_session_id,
    remembered_bytes,
)


@dataclass(eq=False)
class _Slot:
    """A live session and its bookkeeping; mutable fields change under the store-wide lock."""

    session: Session
    deadline: float  # the clock's time at which it expires unless touched
    lock: threading.Lock = field(default_factory=threading.Lock)  # held for the whole of an update
    results: OrderedDict[str, object] = field(default_factory=OrderedDict)  # request_id -> result
    remembered: int = 0  # bytes of ``results``
    client: str | None = None  # who created it, for the per-client cap
    alive: bool = True

    @property
    def nbytes(self) -> int:
        return self.session.nbytes + self.remembered


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
        self._per_client: dict[str, int] = {}  # live sessions by the client that created them
        self.nbytes = 0  # what all live sessions hold (see ``_Slot.nbytes``)

    def create(self, dtype: DType = dtypes.float32, check: CheckMode = CheckMode.STRICT,
               idle_ttl: float | None = None, *, owner: str | None = None,
               request_id: str | None = None, client: str | None = None,
               before_commit: Callable[[], None] | None = None) -> Session:
        ttl = self.config.default_idle_ttl if idle_ttl is None else min(
            idle_ttl, self.config.max_idle_ttl)
        session = Session(new_session_id(), dtype, check, ttl, owner)  # validates the settings
        # The request_id is the secret that gets the session back: keep only a digest of it, and
        # only for the client that sent it.
        key = ("create", owner, client, None if request_id is None else
               hashlib.blake2b(request_id.encode()).hexdigest())
        asked = (dtype, check, idle_ttl)
        with self._lock:
            now = self._sweep()
            if request_id is not None and (first := self._recall(key, asked)) is not None:
                return self._live(first, owner, now).session
            if len(self._slots) >= self.config.max_sessions:
                raise BudgetExceeded("max_sessions", "too many sessions: this server holds at "
                                     f"most {self.config.max_sessions:,}; delete unused sessions "
                                     "or wait for idle ones to expire")
            if client is not None and (self._per_client.get(client, 0)
                                       >= self.config.max_sessions_per_client):
                raise BudgetExceeded("max_sessions_per_client", "too many sessions from this "
                                     f"client: at most {self.config.max_sessions_per_client:,} "
                                     "live at once; delete unused sessions or wait for idle ones "
                                     "to expire")
            if before_commit is not None:
                before_commit()
            self._slots[session.id] = _Slot(session, now + ttl, client=client)
            if client is not None:
                self._per_client[client] = self._per_client.get(client, 0) + 1
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
                    self._commit(slot, after, request_id, result)
                return result
            finally:
                with self._lock:
                    slot.deadline = self._clock() + slot.session.idle_ttl

    def delete(self, session_id: str, request_id: str | None = None, *,
               owner: str | None = None, before_commit: Callable[[], None] | None = None,
               ) -> None:
        key = ("delete", owner, session_id, request_id)
        with self._lock:
            now = self._sweep()
            if request_id is not None and self._recall(key, None) is not None:
                return
            slot = self._live(session_id, owner, now)
            if request_id is not None and request_id in slot.results:
                raise RequestIdReused(request_id)  # the session's own calls share its keys
            if before_commit is not None:
                before_commit()
            self._drop(slot)
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
                self._drop(slot)
        while self._requests and next(iter(self._requests.values()))[0] <= now:
            self._requests.popitem(last=False)
        return now

    def _commit(self, slot: _Slot, after: Session, request_id: str | None,
                result: object) -> None:
        """Store ``after`` (and the answer to remember) in ``slot``, unless that passes a byte
        budget: then raise, storing nothing. Only growth is refused: a session over its budget
        (the limits were lowered) can still shrink."""
        results, remembered = slot.results, slot.remembered
        forgotten: list[tuple[str, object]] = []
        if request_id is not None:
            results[request_id] = result
            remembered += remembered_bytes(result)
            # The oldest answers go first, by count and by bytes; the newest always stays.
            while len(results) > 1 and (len(results) > self.config.max_request_ids
                                        or remembered > self.config.max_remembered_bytes):
                forgotten.append(results.popitem(last=False))
                remembered -= remembered_bytes(forgotten[-1][1])
        before = slot.nbytes
        grown = after.nbytes + remembered - before
        refusal = None
        if grown > 0 and before + grown > self.config.max_session_bytes:
            refusal = BudgetExceeded(
                "max_session_bytes", f"the session would hold {before + grown:,} bytes (leaf "
                "values, grads and remembered answers), over the server's budget of "
                f"{self.config.max_session_bytes:,} per session; nothing was changed (free "
                "leaves or grads, or use another session)")
        elif grown > 0 and slot.alive and self.nbytes + grown > self.config.max_store_bytes:
            refusal = BudgetExceeded(
                "max_store_bytes", f"the server's sessions would hold {self.nbytes + grown:,} "
                f"bytes, over its budget of {self.config.max_store_bytes:,}; nothing was "
                "changed (retry later, or on another replica)")
        if refusal is not None:
            if request_id is not None:  # put the remembered answers back as they were
                del results[request_id]
                for key, value in reversed(forgotten):
                    results[key] = value
                    results.move_to_end(key, last=False)
            raise refusal
        slot.session, slot.remembered = after, remembered
        if slot.alive:
            self.nbytes += grown

    def _drop(self, slot: _Slot) -> None:
        """Forget a live session (deleted or expired) and what it counted against the limits."""
        del self._slots[slot.session.id]
        slot.alive = False
        self.nbytes -= slot.nbytes
        if slot.client is not None:
            left = self._per_client[slot.client] - 1
            if left:
                self._per_client[slot.client] = left
            else:
                del self._per_client[slot.client]

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
