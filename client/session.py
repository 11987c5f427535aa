"""A session on the service, as the SDK drives it: what it keeps there, and the calls it makes.

Everything a program does that needs no answer is deferred: a tensor made, an in-place update
under no_grad, ``zero_()``, a tensor garbage-collected. Each becomes a ``Step`` of the wire API's
``Run``, queued in order; the next call that needs an answer (a ``backward()``, a read of a value)
sends them before its own step, in one ``Run``, which the server applies atomically. So a training
step is one call.

``Storage`` is a value the server keeps for the client: a leaf (made by ``tensor()``, or a value
kept before an in-place update would change what it was computed from) or a leaf's grad. Its
``changed_at`` is the session's clock at its last in-place change: a lazy tensor computed from it
before then must have been kept (``Session.before_change``) and is read from what was kept.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from crossgrad.engine.check import CheckReport
from crossgrad.engine.dtypes import DType
from crossgrad.v1 import crossgrad_pb2 as pb

from . import wire
from .connection import Connection
from .errors import ServiceError, SessionGone

if TYPE_CHECKING:
    from .tensor import Tensor

_KEEPALIVE_SHARE = 1 / 3  # of the idle TTL: how often an idle SDK touches its session


@dataclass(frozen=True)
class LastBackward:
    """What the service reported of the session's last ``backward()``: its check of the numeric
    gradient against the closed form, and each leaf's closed form (by leaf name)."""

    check: CheckReport
    closed_forms: dict[str, str]
    latex: dict[str, str]


class Storage:
    """A value the server keeps for the client under ``name``: a leaf, or (``grad_of``) the grad
    of a leaf. ``created`` once a step that creates it is queued."""

    __slots__ = ("__weakref__", "changed_at", "closed_form", "created", "grad", "grad_of",
                 "initial", "latex", "name", "owner", "requires_grad", "session")

    def __init__(self, session: Session, name: str, *, requires_grad: bool = False,
                 initial: np.ndarray | None = None, grad_of: Storage | None = None) -> None:
        self.session = session
        self.name = name
        self.requires_grad = requires_grad
        self.initial = initial  # the value to create it with, until it is created
        self.created = grad_of is not None
        self.changed_at = 0
        self.grad_of = grad_of
        self.grad: Tensor | None = None  # a leaf's grad, as the tensor ``.grad`` gives
        self.owner: weakref.ref[Tensor] | None = None  # the leaf tensor whose grad it is
        self.closed_form = ""  # a grad's: the last backward's contribution in closed form
        self.latex = ""
        if grad_of is None:
            weakref.finalize(self, session.release, name)

    def __repr__(self) -> str:
        return f"Storage({self.name!r}{', grad' if self.grad_of else ''})"


class Session:
    """A session on the service and the steps queued for it (``crossgrad.client.connect``)."""

    def __init__(self, connection: Connection, session_id: str | None = None, *,
                 dtype: DType | None = None, check: str = "strict",
                 idle_ttl: float | None = None, owned: bool = True) -> None:
        self.connection = connection
        self._lock = threading.RLock()
        self._pending: list[pb.Step] = []
        self._where: list[str] = []  # per pending step, the line of the program that made it
        self._created: list[Storage] = []  # storages whose create step is pending
        self._released: collections.deque[str] = collections.deque()
        # The leaves the server has, or will have once the pending steps are sent: the only
        # ones a garbage-collected tensor's storage is freed on the server for.
        self._on_server: set[str] = set()
        self._names = itertools.count(1)
        # Leaf names are part of a graph's structure, which the server caches derivations by:
        # a session of its own numbers them t1, t2, ... so a program run again (a new session)
        # sends the same graphs and reuses what the server derived. A session shared with other
        # processes (``session_id``) adds a random mark so their names cannot collide.
        self._prefix = "" if session_id is None else uuid.uuid4().hex[:6] + "_"
        self._used: set[str] = set()
        self.clock = 0
        # The lazy tensors alive, by the order they were made in (so the values kept before an
        # in-place change go in one order, and the server sees the same graph step after step).
        self.lazy: weakref.WeakValueDictionary[int, Tensor] = weakref.WeakValueDictionary()
        self.serials = itertools.count()
        self.storages: weakref.WeakValueDictionary[str, Storage] = weakref.WeakValueDictionary()
        self.last_backward: LastBackward | None = None
        self.last_hessian_check: CheckReport | None = None
        self._owned = owned and session_id is None
        if session_id is None:
            request = pb.CreateSessionRequest(
                dtype=wire.DTYPES_TO_PROTO[dtype] if dtype is not None else pb.DTYPE_UNSPECIFIED,
                check_mode=wire.CHECK_MODES[check], request_id=uuid.uuid4().hex * 2)
            if idle_ttl is not None:
                request.idle_ttl.FromNanoseconds(int(idle_ttl * 1e9))
            session = connection.call("CreateSession", request).session
        else:
            session = connection.call("GetSession",
                                      pb.GetSessionRequest(session_id=session_id)).session
        self.id: str = session.id
        self.dtype = wire.DTYPES[session.dtype]
        self.idle_ttl = session.idle_ttl.ToTimedelta().total_seconds()
        self.closed = False
        self._stop = threading.Event()
        self._keepalive = threading.Thread(target=self._keep_alive, daemon=True,
                                           name=f"crossgrad-keepalive-{self.id[:6]}")
        self._last_call = _now()
        self._keepalive.start()

    # --- names and storage ------------------------------------------------------------------

    def new_name(self, hint: str | None = None) -> str:
        """A new leaf name: ``hint`` the first time it is asked for (a name the user gave, which
        closed forms then show), else a numbered one."""
        if hint is not None and hint not in self._used:
            self._used.add(hint)
            return hint
        name = f"{hint or 't'}{self._prefix}{next(self._names)}"
        while name in self._used:  # a name the user gave that looks numbered
            name = f"{hint or 't'}{self._prefix}{next(self._names)}"
        return name

    def storage(self, initial: np.ndarray, *, requires_grad: bool = False,
                name: str | None = None) -> Storage:
        """A new leaf's storage, created on the server with the next call that uses it."""
        storage = Storage(self, self.new_name(name), requires_grad=requires_grad,
                          initial=initial)
        self.storages[storage.name] = storage
        return storage

    def grad_storage(self, leaf: Storage) -> Storage:
        return Storage(self, leaf.name, grad_of=leaf)

    def ensure_created(self, storage: Storage) -> None:
        """Queue the step that creates ``storage`` on the server, if none has been."""
        if storage.created:
            return
        initial = storage.initial
        assert initial is not None
        self.queue(pb.Step(create=pb.CreateLeaf(name=storage.name, value=wire.tensor(initial),
                                                requires_grad=storage.requires_grad)),
                   "tensor()")
        self.will_create(storage)

    def will_create(self, storage: Storage) -> None:
        """A step that creates ``storage`` on the server was queued."""
        storage.created = True
        self._created.append(storage)
        self._on_server.add(storage.name)

    def release(self, name: str) -> None:
        """A leaf's storage was garbage-collected: free it on the server with the next call.
        (Called by a finalizer, possibly on another thread: a deque append is atomic.)"""
        self._released.append(name)

    # --- queued steps and calls -------------------------------------------------------------

    def queue(self, step: pb.Step, what: str) -> None:
        """Queue ``step`` for the next call; ``what`` the operation, for an error it may cause."""
        with self._lock:
            self._pending.append(step)
            self._where.append(f"{what} at {_caller()}")

    @property
    def pending(self) -> int:
        return len(self._pending)

    def run(self, final: Sequence[pb.Step] = ()) -> pb.RunResponse:
        """The queued steps, the freed leaves and ``final`` in one Run; the answers of ``final``'s
        steps. A failure raises: a queued step's error names the operation and the line that
        queued it; ``final``'s is raised as the server said it (PyTorch's words)."""
        with self._lock:
            self._check_open()
            steps = list(self._pending)
            where = list(self._where)
            created = list(self._created)
            freed = self._drain_released()
            if freed:
                steps.append(pb.Step(free=pb.FreeLeaves(leaves=freed)))
                where.append("freeing garbage-collected tensors")
            first_final = len(steps)
            steps.extend(final)
            self._pending.clear()
            self._where.clear()
            self._created.clear()
            if not steps:
                return pb.RunResponse()
            request = pb.RunRequest(session_id=self.id, steps=steps,
                                    request_id=uuid.uuid4().hex)
            try:
                response = self.connection.call("Run", request, session_id=self.id)
            except Exception as error:
                self._last_call = _now()
                located = error if isinstance(error, ServiceError) else None
                failed_at = located.step if located is not None else None
                if failed_at is not None and failed_at >= first_final > 0:
                    # The call's own step failed: what was queued before it applies anyway,
                    # as it did when the program made it (PyTorch is eager).
                    self._resend(steps[:first_final], where, created, freed)
                    raise
                # Nothing applied: what was queued is dropped (it raised here, once), leaves
                # whose creation was in it are created again by their next use, and the leaves
                # it freed are freed by the next call.
                self._not_applied(created, freed)
                if located is not None and failed_at is not None and failed_at < first_final:
                    raise located.located(where[failed_at]) from None
                raise
            self._last_call = _now()
            results = response.results
            del results[:first_final]
            return response

    def _resend(self, steps: list[pb.Step], where: list[str], created: list[Storage],
                freed: list[str]) -> None:
        """Apply ``steps``, the queued steps of a Run whose own step failed, in a Run of their
        own."""
        request = pb.RunRequest(session_id=self.id, steps=steps, request_id=uuid.uuid4().hex)
        try:
            self.connection.call("Run", request, session_id=self.id)
        except Exception as error:
            self._not_applied(created, freed)
            if isinstance(error, ServiceError) and error.step is not None and (
                    error.step < len(where)):
                raise error.located(where[error.step]) from None
            raise

    def _not_applied(self, created: list[Storage], freed: list[str]) -> None:
        """A Run failed and applied nothing: what it would have created is not on the server,
        and what it would have freed is freed by the next call."""
        for storage in created:
            self._on_server.discard(storage.name)
            if storage.initial is not None:  # a value kept by a Keep step is not made again
                storage.created = False
        for name in freed:
            if name not in {storage.name for storage in created}:
                self._on_server.add(name)
                self._released.append(name)

    def _drain_released(self) -> list[str]:
        # Only leaves the server has (or gets in this call: a tensor made and dropped between
        # two calls is created and freed in the same Run, which is still correct, only not
        # free); a tensor never used on the server was never created there.
        freed = []
        while self._released:
            name = self._released.popleft()
            if name in self._on_server:
                self._on_server.discard(name)
                freed.append(name)
        return freed

    def read(self, graph: pb.Graph, nodes: Iterable[str]) -> list[pb.NodeValue]:
        """The values of ``nodes`` of ``graph``, with the queued steps in the same call."""
        response = self.run([pb.Step(read=pb.ReadStep(graph=graph, nodes=list(nodes)))])
        return list(response.results[0].read.values)

    # --- its life ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise SessionGone(f"crossgrad session {self.id[:8]!r} was closed; its tensors "
                              "cannot be used", "NOT_FOUND", "SESSION_CLOSED")

    def _keep_alive(self) -> None:
        """Touch the session while the program lives, however long it idles (a notebook left
        open keeps its leaves and grads)."""
        period = max(0.05, self.idle_ttl * _KEEPALIVE_SHARE)
        while not self._stop.wait(period / 2):
            if _now() - self._last_call < period:
                continue
            try:
                self.connection.call("GetSession", pb.GetSessionRequest(session_id=self.id),
                                     session_id=self.id)
                self._last_call = _now()
            except Exception:
                continue

    def close(self) -> None:
        """Stop keeping the session alive and delete it on the server (if this SDK made it)."""
        if self.closed:
            return
        self._stop.set()
        self.closed = True
        if self._owned:
            with contextlib.suppress(Exception):
                self.connection.call("DeleteSession", pb.DeleteSessionRequest(
                    session_id=self.id, request_id=uuid.uuid4().hex))

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        from . import context

        context.forget(self)

    def __repr__(self) -> str:
        return f"<crossgrad Session {self.id[:8]}… on {self.connection.target}>"

    @property
    def rpc_count(self) -> int:
        """Calls made on this session's connection so far."""
        return self.connection.calls


_now = time.monotonic
_HERE = os.path.dirname(os.path.abspath(__file__))


def _caller() -> str:
    """The first frame outside the SDK: the user's line."""
    frame: Any = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_HERE):
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
