"""The service's use cases over a session store, free of gRPC and of any wire format.

Each use case takes its command (``commands.py``) and, when it answers with data, the encoder of
its answer: the answer's size is checked against the message size limit before it is sent, and
for a change before the change commits. Changes go through the store's ``update``, as pure
functions of the session snapshot: a call that fails changes nothing, and a retried request_id
gets its first answer (``idempotency.py``). A change commits only while its call is still active
(its client neither gone past its deadline nor cancelled): that is checked inside the store's
update, the last point before the commit.

The store may be any ``SessionStore``: nothing here depends on where sessions live.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import numpy as np
from crossgrad.engine import differentiation, dtypes
from crossgrad.engine.check import CheckMode
from crossgrad.engine.errors import CrossgradError, InvalidArgument, short_name
from crossgrad.engine.graph import MAX_NAME_CHARS
from crossgrad.engine.leaves import check_requires_grad
from crossgrad.engine.solver import Symbolic
from crossgrad.engine.tensor import Tensor

from . import idempotency
from .commands import (
    Answer,
    Backward,
    BackwardResult,
    CreateSession,
    DeleteSession,
    Differentiate,
    DifferentiateResult,
    Encoded,
    Evaluate,
    EvaluateResult,
    GetLeaf,
    GetLeafResult,
    GetSession,
    NodeValue,
    PutLeaf,
    PutLeafResult,
    ZeroGrad,
    ZeroGradResult,
)
from .config import Config
from .errors import (
    BudgetExceeded,
    CallCancelled,
    CallExpired,
    InvalidField,
    SessionBusy,
    VersionMismatch,
)
from .idempotency import Key
from .known_graphs import KnownGraphs
from .sessions import Change, LeafState, Session, SessionStore

R = TypeVar("R")
M = TypeVar("M", bound=Encoded)

# Kept back from a client's deadline for what follows the derivation (the check, a
# finite-difference fallback, the answer): a tenth of it, and at least 50 ms.
_DEADLINE_SHARE, _DEADLINE_MARGIN = 0.1, 0.05
_RETRIES = 5  # recomputations of a Backward whose leaves changed under it


class Call(Protocol):
    """What the service asks of a call in progress (thread-safe)."""

    def time_remaining(self) -> float | None:
        """Seconds until the client's deadline; None without one."""
        ...

    def is_active(self) -> bool:
        """False once the client cancelled or its deadline passed."""
        ...

    def peer(self) -> str:
        """The client's address, e.g. "ipv4:127.0.0.1:50312"."""
        ...


class _Stale(Exception):
    """A leaf changed between reading the session and committing to it."""


class Service:
    """The use cases of crossgrad's API, over ``store``; ``symbolic`` derives closed forms."""

    def __init__(self, config: Config, store: SessionStore, symbolic: Symbolic) -> None:
        self._config = config
        self._store = store
        self._symbolic = symbolic
        self._limits = config.limits
        self._graphs = KnownGraphs(self._limits, symbolic)

    # --- sessions ---------------------------------------------------------------------------------

    def create_session(self, command: CreateSession, call: Call) -> Session:
        check = command.check or CheckMode.STRICT
        return self._store.create(command.dtype, check.value, command.idle_ttl,
                                  request_id=command.request_id, client=_client(call),
                                  before_commit=lambda: commit_point(call))

    def get_session(self, command: GetSession, encode: Callable[[Session], M]) -> M:
        return self._fit(encode(self._store.get(command.session_id)))

    def delete_session(self, command: DeleteSession, call: Call) -> None:
        self._store.delete(command.session_id, command.request_id,
                           before_commit=lambda: commit_point(call))

    # --- leaves -----------------------------------------------------------------------------------

    def put_leaf(self, command: PutLeaf, call: Call, answer: Answer[PutLeafResult, M]) -> M:
        if (first := self._recall(command.session_id, command.key, answer)) is not None:
            return first
        _check_leaf_name(command.name)
        snapshot = self._store.get(command.session_id)
        # A value sent as numbers without a dtype takes the session's.
        value = None if command.value is None else command.value.decode(snapshot.dtype)
        max_leaves = self._config.max_leaves

        def change(session: Session) -> tuple[Session, PutLeafResult]:
            result = apply_put_leaf(session, command, value, max_leaves)
            return session.with_leaves({result.name: result.leaf}), result

        return self._commit(command.session_id, command.key, change, answer, call)

    def get_leaf(self, command: GetLeaf, encode: Callable[[GetLeafResult], M]) -> M:
        session = self._store.get(command.session_id)
        result = GetLeafResult(command.name, session.leaf(command.name), command.with_value,
                               command.with_grad, command.as_values)
        return self._fit(encode(result), hint=(
            "; ask for the value and the grad one at a time (GetLeafRequest.view)"
            if command.with_value and command.with_grad else ""))

    def zero_grad(self, command: ZeroGrad, call: Call, answer: Answer[ZeroGradResult, M]) -> M:
        def change(session: Session) -> tuple[Session, ZeroGradResult]:
            names = list(command.names) or sorted(session.leaves)
            changed = {}
            for name in names:
                leaf = session.leaf(name)
                if leaf.grad is not None:
                    changed[name] = leaf.with_grad(
                        None if command.set_to_none else np.zeros_like(leaf.grad))
            new = session.with_leaves(changed)
            return new, ZeroGradResult([(n, new.leaves[n]) for n in sorted(changed)])

        return self._commit(command.session_id, command.key, change, answer, call)

    # --- graphs -----------------------------------------------------------------------------------

    def evaluate(self, command: Evaluate, encode: Callable[[EvaluateResult], M]) -> M:
        session = self._store.get(command.session_id)
        known = self._graphs.get(command.graph, session)
        valid = known.valid
        ids = list(command.nodes) or [valid.output]
        seen: set[str] = set()
        for node_id in ids:
            if node_id in seen:
                raise InvalidField("nodes", f"node {short_name(node_id)} is asked for twice")
            seen.add(node_id)
        values = {name: session.leaves[name].value for name in valid.leaves}
        tracking = {n for n in valid.leaves if session.leaves[n].requires_grad}
        _, env = known.run(values, tracking, ids)
        results = []
        for node_id in ids:
            out = env[node_id]
            if isinstance(out, Tensor):
                results.append(NodeValue(node_id, out.detach().numpy(), out.requires_grad,
                                         out.grad_fn.name() if out.grad_fn is not None else ""))
            else:
                results.append(NodeValue(
                    node_id, np.asarray(out, dtype=valid.types[node_id].dtype.numpy)))
        hint = "; ask for fewer nodes"
        self._check_tensors([node.value for node in results], command.as_values, hint=hint)
        return self._fit(encode(EvaluateResult(results, command.as_values)), hint=hint)

    def backward(self, command: Backward, call: Call, answer: Answer[BackwardResult, M]) -> M:
        if (first := self._recall(command.session_id, command.key, answer)) is not None:
            return first
        try:
            for _ in range(_RETRIES):
                try:
                    return self._backward(command, call, answer)
                except _Stale:
                    continue  # a PutLeaf changed a leaf under us: compute from the new values
            raise SessionBusy(f"the session's leaves changed under backward {_RETRIES} times in "
                              "a row; try again")
        except CrossgradError:
            # A retry racing its first call: that call may have committed, and the session moved
            # on, since the lookup above. Its answer, if it has one now, is this call's.
            if (first := self._recall(command.session_id, command.key, answer)) is not None:
                return first
            raise

    def _backward(self, command: Backward, call: Call, answer: Answer[BackwardResult, M]) -> M:
        session = self._store.get(command.session_id)
        known = self._graphs.get(command.graph, session)
        valid = known.valid
        leaves = session.leaves
        values = {name: leaves[name].value for name in valid.leaves}
        tracking = tuple(sorted(n for n in valid.leaves if leaves[n].requires_grad))
        checked = known.backward(values, tracking, seed=command.gradient, retain=command.retain,
                                 mode=command.check or session.check,
                                 deadline=self._deadline(call))
        versions = {name: leaves[name].version for name in checked.gradients}
        as_values = command.as_values

        def change(current: Session) -> tuple[Session, BackwardResult]:
            # The versioned accumulation: the grads were computed from the leaves' values at
            # ``versions``, and add to the leaves only while those values are still in place.
            updated = {}
            for name, grad in checked.gradients.items():
                leaf = current.leaves.get(name)
                if leaf is None or leaf.version != versions[name]:
                    raise _Stale
                updated[name] = leaf.accumulate(grad)
            self._check_tensors([checked.value, *(leaf.grad for leaf in updated.values()
                                                  if leaf.grad is not None),
                                 *checked.retained.values()], as_values, changing=True)
            return current.with_leaves(updated), BackwardResult(checked, updated,
                                                                checked.retained, as_values)

        return self._commit(command.session_id, command.key, change, answer, call)

    # --- stateless --------------------------------------------------------------------------------

    def differentiate(self, command: Differentiate, call: Call,
                      encode: Callable[[DifferentiateResult], M]) -> M:
        wrt = list(command.wrt) or None
        result = differentiation.differentiate(
            command.source, command.values, wrt=wrt, check=command.check or CheckMode.STRICT,
            hessian=command.hessian, seed=command.seed, limits=self._limits,
            symbolic=self._symbolic, deadline=self._deadline(call))
        return self._fit(encode(DifferentiateResult(
            result, sorted(result.wrt) if wrt is None else wrt, as_values=command.as_values)))

    # --- helpers ----------------------------------------------------------------------------------

    def _deadline(self, call: Call) -> float:
        """Seconds this call waits for a symbolic derivation: the configured deadline, or less
        when the client's own deadline comes first (the derivation may go on for a later call)."""
        remaining = call.time_remaining()
        configured = self._config.symbolic_deadline
        if remaining is None:
            return configured
        kept = max(_DEADLINE_MARGIN, _DEADLINE_SHARE * remaining)
        return max(0.001, min(configured, remaining - kept))

    def _recall(self, session_id: str, key: Key | None, answer: Answer[R, M]) -> M | None:
        """The first answer of a retried request_id: looked up before any work, so a retry gets
        it whatever the session's state is now."""
        if key is None:
            return None
        return idempotency.recall(self._store, session_id, key, answer.decode)

    def _commit(self, session_id: str, key: Key | None, change: Change[R],
                answer: Answer[R, M], call: Call) -> M:
        """``change`` applied through the store, if its answer fits and the call is still active
        once it is built; a retried request_id gets its first answer."""
        if key is None:
            def fitting(session: Session) -> tuple[Session, M]:
                new, result = change(session)
                encoded = answer.encode(result)
                self._check_size(encoded.ByteSize(), changing=True)
                commit_point(call)
                return new, encoded

            return self._store.update(session_id, fitting)

        def recorded(session: Session) -> tuple[Session, object]:
            new, result = change(session)
            payload = answer.encode(result).SerializeToString()
            self._check_size(len(payload), changing=True)
            commit_point(call)
            return new, idempotency.remember(key, payload)

        remembered = self._store.update(session_id, recorded, key.request_id)
        return idempotency.replay(remembered, key, answer.decode)

    def _check_size(self, size: int, *, changing: bool = False, hint: str = "") -> None:
        """Refuse an answer over the message size limit before it is sent (gRPC would fail it
        without details), and for a change before the store commits it."""
        limit = self._config.max_message_bytes
        if size > limit:
            raise BudgetExceeded(
                "max_message_bytes", f"the answer would be {size:,} bytes, over the server's "
                f"message size limit of {limit:,}{'; nothing was changed' if changing else ''}"
                f"{hint}")

    def _check_tensors(self, arrays: Sequence[np.ndarray], as_values: bool, *,
                       changing: bool = False, hint: str = "") -> None:
        """Refuse an answer whose tensors alone pass the message size limit, before building it
        (a few small requests must not make the server build gigabytes it will not send)."""
        size = sum(a.size * (8 if as_values else a.itemsize) for a in arrays)
        self._check_size(size, changing=changing, hint=hint)

    def _fit(self, answer: M, hint: str = "") -> M:
        """A read-only answer, once it is known to fit in a message."""
        self._check_size(answer.ByteSize(), hint=hint)
        return answer


def commit_point(call: Call) -> None:
    """Refuse to commit for a call nobody waits for any more: its client's deadline passed or it
    cancelled. The answer would be lost, and a retry without a request_id would apply it twice."""
    if not call.is_active():
        remaining = call.time_remaining()
        raise CallCancelled() if remaining is None or remaining > 0 else CallExpired()


def _client(call: Call) -> str:
    """Who is calling, for per-client limits: the peer's address without its port."""
    peer = call.peer()
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rpartition(":")[0]
    return peer


# --- what PutLeaf may do to a leaf ---------------------------------------------------------------

def _check_leaf_name(name: str) -> None:
    if not name:
        raise InvalidField("name", "a leaf needs a name")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidField("name", f"{len(name):,} characters; a leaf name has at most "
                           f"{MAX_NAME_CHARS}")


def apply_put_leaf(session: Session, command: PutLeaf, value: np.ndarray | None,
                   max_leaves: int) -> PutLeafResult:
    """The leaf ``command`` makes of the session's (``value``: its value, decoded): a new leaf
    needs a value; an existing one keeps its shape and dtype, and its version counts the changes
    of its value and requires_grad; only a floating point leaf requires grad."""
    name, wants_grad, expected = command.name, command.requires_grad, command.expected_version
    old = session.leaves.get(name)
    if expected is not None and expected != (0 if old is None else old.version):
        raise VersionMismatch(name, expected, 0 if old is None else old.version)
    if old is None:
        if len(session.leaves) >= max_leaves:
            raise BudgetExceeded("max_leaves", f"this session holds {len(session.leaves):,} "
                                 "leaves, the server's limit; create a new session for more")
        if value is None:
            raise InvalidField("value", f"leaf {short_name(name)} does not exist: creating it "
                               "needs a value")
        check_requires_grad(dtypes.from_numpy(value.dtype), bool(wants_grad))
        return PutLeafResult(name, LeafState(value, bool(wants_grad), None, 1), created=True)
    if value is None and wants_grad is None:
        raise InvalidArgument("PutLeaf changes nothing: give a value, requires_grad or both")
    leaf = old
    if value is not None:
        if value.shape != old.value.shape:
            raise InvalidField("value", f"leaf {short_name(name)} has shape "
                               f"{list(old.value.shape)}; the new value has shape "
                               f"{list(value.shape)}")
        leaf = leaf.with_value(_cast(value, old.value.dtype, name))
    if wants_grad is not None:
        check_requires_grad(dtypes.from_numpy(leaf.value.dtype), wants_grad)
        leaf = leaf.with_requires_grad(wants_grad)
    return PutLeafResult(name, leaf, created=False)


def _cast(value: np.ndarray, dtype: np.dtype[np.generic], name: str) -> np.ndarray:
    if not np.can_cast(value.dtype, dtype, "same_kind"):
        raise InvalidField("value", f"leaf {short_name(name)} is {dtype}; a {value.dtype} value "
                           "does not convert to it")
    with np.errstate(over="ignore"):  # found below
        cast = value.astype(dtype, copy=False)
    if cast.dtype.kind == "f" and not np.isfinite(cast).all():
        raise InvalidField("value", f"leaf {short_name(name)} is {dtype}, and the value "
                           "overflows it (a leaf value must be finite)")
    return cast
