"""Sessions: the state a server keeps between calls, and the interface of the stores that keep it.

Everything here is immutable. A ``Session`` snapshot can be handed to any number of threads without
copying, and a change builds a new snapshot instead of editing the old one, so a request that fails
half-way has touched nothing. Stores (``memory_store.MemoryStore``; a Redis store later) implement
``SessionStore``.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from crossgrad.engine import dtypes
from crossgrad.engine.check import CheckMode
from crossgrad.engine.dtypes import DType
from crossgrad.engine.errors import InvalidArgument

from .errors import LeafNotFound

SESSION_DTYPES = (dtypes.float32, dtypes.float64)
DEFAULT_IDLE_TTL = 1800.0  # seconds

R = TypeVar("R")
T = TypeVar("T")


# A graph reads a leaf's grad (Run's ``grad`` nodes) through a leaf of its own, ``∇w`` for leaf
# ``w`` (closed forms show that name), which no leaf of a session can have: leaf names never start
# with the mark.
GRAD_MARK = "∇"


def grad_leaf(name: str) -> str:
    """The name a graph binds the grad of leaf ``name`` under."""
    return GRAD_MARK + name


def new_session_id() -> str:
    """An unguessable session id (192 random bits): knowing one session's id reveals no other."""
    return secrets.token_urlsafe(24)


def frozen_array(value: npt.ArrayLike) -> np.ndarray:
    """``value`` as an array nobody can write through: itself if it already is one, else a copy."""
    if isinstance(value, np.ndarray) and _read_only(value):
        return value
    array = np.array(value)
    array.flags.writeable = False
    return array


def _read_only(array: np.ndarray) -> bool:
    # A read-only view of a writable array still changes when its base does: follow the chain.
    base: object = array
    while isinstance(base, np.ndarray):
        if base.flags.writeable:
            return False
        base = base.base
    return base is None or isinstance(base, bytes)


@dataclass(frozen=True, eq=False)
class LeafState:
    """A session's leaf tensor: value, ``requires_grad`` and accumulated ``grad``, all read-only.

    ``version`` counts changes to ``value`` and ``requires_grad`` (not to ``grad``), so an
    accumulation can check that its gradient was computed from the values still in place.
    """

    value: np.ndarray
    requires_grad: bool = False
    grad: np.ndarray | None = None
    version: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", frozen_array(self.value))
        if self.grad is not None:
            grad = frozen_array(self.grad)
            if grad.shape != self.value.shape:
                raise InvalidArgument(f"grad of shape {list(grad.shape)} for a leaf of shape "
                                      f"{list(self.value.shape)}")
            object.__setattr__(self, "grad", grad)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Unpickled arrays are writable again (a Redis store pickles sessions): freeze them anew.
        for name, value in state.items():
            object.__setattr__(self, name, value)
        self.__post_init__()

    @property
    def nbytes(self) -> int:
        """The bytes its value and grad hold (what the session's byte budget counts)."""
        return self.value.nbytes + (0 if self.grad is None else self.grad.nbytes)

    def with_value(self, value: npt.ArrayLike) -> LeafState:
        """The leaf with a new value (an optimizer step): a new version."""
        return replace(self, value=frozen_array(value), version=self.version + 1)

    def with_requires_grad(self, requires_grad: bool) -> LeafState:
        """The leaf after ``requires_grad_(requires_grad)``: a new version if that changes it."""
        if requires_grad == self.requires_grad:
            return self
        return replace(self, requires_grad=requires_grad, version=self.version + 1)

    def with_grad(self, grad: npt.ArrayLike | None) -> LeafState:
        """The leaf with ``grad`` replaced (zeroed, or set to None); the version stays."""
        return replace(self, grad=None if grad is None else frozen_array(grad))

    def accumulate(self, delta: npt.ArrayLike) -> LeafState:
        """The leaf after a backward pass added ``delta`` to its grad (PyTorch's accumulation)."""
        # A new array either way (a 0-d sum is a NumPy scalar: asarray makes it an array again).
        grad = np.array(delta) if self.grad is None else np.asarray(self.grad + delta)
        if grad.shape != self.value.shape:
            raise InvalidArgument(f"grad of shape {list(grad.shape)} for a leaf of shape "
                                  f"{list(self.value.shape)}")
        grad.flags.writeable = False
        return _evolve(self, grad=grad)


@dataclass(frozen=True, eq=False)
class Session:
    """One client's state: its leaves by name and the settings its requests default to.

    ``owner`` is the API key (identity) that created it, or None with authentication off; stores
    treat a session as not found for any other owner. ``nbytes`` is kept up to date with the
    leaves: the bytes their values and grads hold.
    """

    id: str
    dtype: DType = dtypes.float32
    check: CheckMode = CheckMode.STRICT
    idle_ttl: float = DEFAULT_IDLE_TTL  # seconds without a call before the session expires
    owner: str | None = None
    leaves: Mapping[str, LeafState] = field(default_factory=dict)
    nbytes: int = field(default=0, init=False, compare=False)

    def __post_init__(self) -> None:
        if not self.id:
            raise InvalidArgument("a session id must not be empty")
        if self.dtype not in SESSION_DTYPES:
            raise InvalidArgument(f"a session's dtype must be float32 or float64, not {self.dtype}")
        object.__setattr__(self, "check", CheckMode.of(self.check))
        if not (math.isfinite(self.idle_ttl) and self.idle_ttl > 0):
            raise InvalidArgument(f"idle_ttl must be a positive number of seconds, "
                                  f"not {self.idle_ttl}")
        object.__setattr__(self, "leaves", MappingProxyType(dict(self.leaves)))
        object.__setattr__(self, "nbytes", sum(leaf.nbytes for leaf in self.leaves.values()))

    def __getstate__(self) -> dict[str, Any]:
        # A mappingproxy does not pickle; its dict does.
        return {**self.__dict__, "leaves": dict(self.leaves)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)
        self.__post_init__()

    def leaf(self, name: str) -> LeafState:
        """The leaf called ``name``, or LeafNotFound."""
        try:
            return self.leaves[name]
        except KeyError:
            raise LeafNotFound(name) from None

    def with_leaves(self, leaves: Mapping[str, LeafState]) -> Session:
        """The session with these leaves added or replaced (the others kept)."""
        old = self.leaves
        nbytes = self.nbytes + sum(
            leaf.nbytes - (old[name].nbytes if name in old else 0)
            for name, leaf in leaves.items())
        return _evolve(self, leaves=MappingProxyType({**old, **leaves}), nbytes=nbytes)

    def without(self, names: Iterable[str]) -> Session:
        """The session without the leaves ``names`` (each must be one of its leaves)."""
        kept = dict(self.leaves)
        nbytes = self.nbytes
        for name in dict.fromkeys(names):
            nbytes -= self.leaf(name).nbytes
            del kept[name]
        return _evolve(self, leaves=MappingProxyType(kept), nbytes=nbytes)


def _evolve(instance: T, **changes: Any) -> T:
    """A copy of an already valid snapshot with some fields changed, without validating it all
    again (``dataclasses.replace`` would: a Backward's hot path). Callers keep the invariants."""
    copy = object.__new__(type(instance))
    copy.__dict__.update(instance.__dict__, **changes)
    return copy


Change = Callable[[Session], tuple[Session, R]]
"""A pure function from a session snapshot to (the new snapshot, the call's result)."""


@dataclass(frozen=True)
class Remembered:
    """The answer of a call made with a request_id, as a store keeps it for a retry: the
    fingerprint of the request it answered and the serialized response."""

    fingerprint: str
    payload: bytes

    @property
    def nbytes(self) -> int:
        """What it costs the session's byte budget."""
        return len(self.payload) + len(self.fingerprint)


def remembered_bytes(result: object) -> int:
    """The bytes a remembered result costs: a ``Remembered``'s size, nothing for other results
    (the stores' own tests remember small Python values)."""
    return result.nbytes if isinstance(result, Remembered) else 0


@dataclass(frozen=True)
class StoreConfig:
    """Limits and defaults every store honours; the server fills them from its configuration."""

    max_sessions: int = 10_000  # live sessions; create past it raises LimitExceeded
    # Live sessions created by one client (its address, or its API key once there are keys):
    # one client cannot take every slot.
    max_sessions_per_client: int = 1_000
    # Bytes a session may hold (leaf values, grads, remembered answers), and all sessions
    # together: a change that would pass either is refused, whole.
    max_session_bytes: int = 512 * 2**20
    max_store_bytes: int = 4 * 2**30
    # Of a session's bytes, at most this many are remembered answers (the oldest go first; the
    # newest is always kept, so that the call just made can be retried).
    max_remembered_bytes: int = 64 * 2**20
    default_idle_ttl: float = DEFAULT_IDLE_TTL
    max_idle_ttl: float = 86_400.0
    # Per session: the results of its last N mutating calls with a request_id, kept verbatim, so
    # N x (result size) is memory a session can hold; they live and die with the session.
    max_request_ids: int = 1000
    # Store-wide, for create and delete (whose session does not exist before / after the call):
    # how long a request_id is remembered, and at most how many are (the oldest go first).
    request_id_ttl: float = 600.0
    max_store_request_ids: int = 10_000

    def __post_init__(self) -> None:
        for name in ("max_sessions", "max_sessions_per_client", "max_session_bytes",
                     "max_store_bytes", "max_remembered_bytes", "max_request_ids",
                     "max_store_request_ids"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("default_idle_ttl", "max_idle_ttl", "request_id_ttl"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.default_idle_ttl > self.max_idle_ttl:
            raise ValueError("default_idle_ttl must not exceed max_idle_ttl")


class SessionStore(Protocol):
    """Where sessions live between calls: the service's only access to session state.

    The interface every store implements (``memory_store.MemoryStore`` in this process; a Redis
    store, shared by replicas, next), structurally: a store need not inherit from it. The service
    is given a ``SessionStore`` and never learns which store it is.

    Unknown, deleted, expired and other owners' sessions all raise ``SessionNotFound`` (a caller
    cannot tell whether someone else's session exists). Every call on a session refreshes its idle
    timer. ``owner`` is the caller's identity (None with authentication off); ownership never
    changes, so checking it in ``get`` and then acting is race-free.

    Mutating calls take an optional ``request_id``: a retry with the same id returns the first
    call's result and applies nothing twice, also when the two run concurrently. A call that raised
    is not remembered, so its retry runs again. One id returns one result whatever the change: the
    service keeps in the result what identifies its request, to refuse an id sent with another.
    """

    def create(self, dtype: DType = dtypes.float32, check: CheckMode = CheckMode.STRICT,
               idle_ttl: float | None = None, *, owner: str | None = None,
               request_id: str | None = None, client: str | None = None,
               before_commit: Callable[[], None] | None = None) -> Session:
        """A new, empty session (``idle_ttl`` None: the store's default; capped at its maximum).

        Raises LimitExceeded at the live-session cap, in all or for ``client`` (who asks: its
        address, or its API key), InvalidArgument for bad settings. A retry (same owner, client
        and request_id, within ``request_id_ttl``) returns the session the first call created, as
        it is now, or SessionNotFound if it is gone; RequestIdReused if it asks for other
        settings. The request_id is then the secret that gets the session: the caller makes sure
        it is as strong as a session id, and the store keeps only a digest of it.
        ``before_commit`` runs last, before the session is stored; if it raises, nothing is.
        """
        ...

    def get(self, session_id: str, *, owner: str | None = None) -> Session:
        """The session's current snapshot."""
        ...

    def recall(self, session_id: str, request_id: str, *, owner: str | None = None,
               ) -> object | None:
        """The result an ``update`` with this request_id returned, if the session remembers one:
        a retry gets it before any work, whatever the session's state now."""
        ...

    def update(self, session_id: str, change: Change[R], request_id: str | None = None, *,
               owner: str | None = None) -> R:
        """Run ``change`` on the current snapshot and store the snapshot it returns, atomically.

        The one way to modify a session, and atomic per session: no other update of the same
        session interleaves, so a read-modify-write (accumulating gradients) loses nothing. If
        ``change`` raises, the exception propagates and nothing is stored; so does a change that
        would take the session or the store past a byte budget (``StoreConfig``), with
        LimitExceeded. ``change`` must keep the session's id and owner.

        ``change`` must be pure (no effects but its return value): a store may run it more than
        once. The memory store holds a per-session lock while it runs, so it runs once; the Redis
        store will WATCH the session's key, read, run ``change``, write the new snapshot and the
        request_id's result in MULTI/EXEC, and when EXEC fails because another replica wrote the
        session in between, start over, running ``change`` again on the newer snapshot.
        """
        ...

    def delete(self, session_id: str, request_id: str | None = None, *,
               owner: str | None = None, before_commit: Callable[[], None] | None = None,
               ) -> None:
        """Remove the session; a retry with the same request_id succeeds again.
        ``before_commit`` runs last, before the session is removed; if it raises, nothing is."""
        ...

    def close(self) -> None:
        """Release the store's resources (connections); the server calls it on shutdown."""
        ...
