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
from crossgrad.engine.errors import (
    CrossgradError,
    DTypeError,
    InvalidArgument,
    ShapeError,
    UsageError,
    short_name,
)
from crossgrad.engine.graph import MAX_NAME_CHARS
from crossgrad.engine.leaves import check_requires_grad
from crossgrad.engine.solver import Symbolic
from crossgrad.engine.tensor import Tensor
from crossgrad.wire.errors import InvalidField

from . import idempotency
from .commands import (
    Answer,
    Backward,
    BackwardResult,
    BackwardStep,
    BackwardStepResult,
    CreateLeafStep,
    CreateSession,
    DeleteSession,
    Differentiate,
    DifferentiateResult,
    Encoded,
    Evaluate,
    EvaluateResult,
    FreeStep,
    GetLeaf,
    GetLeafResult,
    GetSession,
    GraphSource,
    KeepStep,
    NodeValue,
    PutLeaf,
    PutLeafResult,
    ReadStep,
    Run,
    RunResult,
    SetRequiresGradStep,
    Step,
    UpdateGradStep,
    UpdateLeafStep,
    ZeroGrad,
    ZeroGradResult,
    ZeroGradStep,
)
from .config import Config
from .errors import (
    BudgetExceeded,
    CallCancelled,
    CallExpired,
    SessionBusy,
    VersionMismatch,
)
from .idempotency import Key
from .known_graphs import Known, KnownGraphs
from .sessions import GRAD_MARK, Change, LeafState, Session, SessionStore, grad_leaf

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
            new = _zeroed(session, command.names, command.set_to_none)
            changed = sorted(n for n, leaf in new.leaves.items() if leaf is not session.leaves[n])
            return new, ZeroGradResult([(n, new.leaves[n]) for n in changed])

        return self._commit(command.session_id, command.key, change, answer, call)

    # --- graphs -----------------------------------------------------------------------------------

    def evaluate(self, command: Evaluate, encode: Callable[[EvaluateResult], M]) -> M:
        session = self._store.get(command.session_id)
        results = self._node_values(command.graph, session, command.nodes, command.as_values)
        return self._fit(encode(EvaluateResult(results, command.as_values)),
                         hint="; ask for fewer nodes")

    def _node_values(self, source: GraphSource, session: Session, nodes: Sequence[str],
                     as_values: bool) -> list[NodeValue]:
        """The values of graph nodes ``nodes`` (none: the output) over ``session``'s leaves,
        with their autograd state (as Evaluate answers them)."""
        known, ids, values = self._evaluated(source, session, nodes)
        valid = known.valid
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
        self._check_tensors([node.value for node in results], as_values,
                            hint="; ask for fewer nodes")
        return results

    def _arrays(self, source: GraphSource, session: Session, nodes: Sequence[str],
                ) -> list[np.ndarray]:
        """The values of graph nodes ``nodes`` (none: the output), without autograd."""
        known, ids, values = self._evaluated(source, session, nodes)
        return known.values(values, ids)

    def _evaluated(self, source: GraphSource, session: Session, nodes: Sequence[str],
                   ) -> tuple[Known, list[str], dict[str, np.ndarray]]:
        """The graph validated over ``session``, the ids of the nodes asked for (each once;
        none: the output) and the leaves' values."""
        known = self._graphs.get(source, session)
        ids = list(nodes) or [known.valid.output]
        seen: set[str] = set()
        for node_id in ids:
            if node_id in seen:
                raise InvalidField("nodes", f"node {short_name(node_id)} is asked for twice")
            seen.add(node_id)
        return known, ids, {name: session.leaves[name].value for name in known.valid.leaves}

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

    # --- programs -----------------------------------------------------------------------------

    def run(self, command: Run, call: Call, answer: Answer[RunResult, M]) -> M:
        """A Run's steps applied in order to the session, as one change: all of them or none.

        The steps run inside the store's update, so no other change of the session interleaves
        with them (a symbolic derivation a backward step waits for holds the session meanwhile).
        """
        if (first := self._recall(command.session_id, command.key, answer)) is not None:
            return first
        deadline = self._deadline(call)

        def change(session: Session) -> tuple[Session, RunResult]:
            results: list[BackwardStepResult | EvaluateResult | None] = []
            for index, (kind, step) in enumerate(command.steps):
                try:
                    session, result = self._step(session, step, command.as_values, deadline)
                except CrossgradError as error:
                    raise _in_step(error, index, step, kind) from None
                results.append(result)
            return session, RunResult(results)

        return self._commit(command.session_id, command.key, change, answer, call)

    def _step(self, session: Session, step: Step, as_values: bool, deadline: float,
              ) -> tuple[Session, BackwardStepResult | EvaluateResult | None]:
        """``session`` after one step of a Run, and what the step answers."""
        max_leaves = self._config.max_leaves
        if isinstance(step, CreateLeafStep):
            _check_leaf_name(step.name)
            put = PutLeaf("", step.name, None, step.requires_grad, 0, None)
            created = apply_put_leaf(session, put, step.value.decode(session.dtype), max_leaves)
            return session.with_leaves({step.name: created.leaf}), None
        if isinstance(step, ReadStep):
            values = self._node_values(step.graph, _reading(session, step.grads), step.nodes,
                                       as_values)
            return session, EvaluateResult(values, as_values)
        if isinstance(step, KeepStep):
            if not step.nodes:
                return session, None
            view = _reading(session, step.grads)
            wanted = list(dict.fromkeys(node for node, _ in step.nodes))
            computed = dict(zip(wanted, self._arrays(step.graph, view, wanted), strict=True))
            kept: dict[str, LeafState] = {}
            for k, (node_id, name) in enumerate(step.nodes):
                _check_leaf_name(name, f"nodes[{k}].leaf")
                taken = session.leaves.get(name) or kept.get(name)
                if taken is not None:  # as CreateLeaf: a new leaf's name must be free
                    raise VersionMismatch(name, 0, taken.version)
                kept[name] = LeafState(computed[node_id], False, None, 1)
            if len(session.leaves) + len(kept) > max_leaves:
                raise BudgetExceeded("max_leaves", f"keeping {len(kept):,} values would make "
                                     f"this session hold {len(session.leaves) + len(kept):,} "
                                     "leaves, past the server's limit; create a new session "
                                     "for more")
            return session.with_leaves(kept), None
        if isinstance(step, UpdateLeafStep):
            leaf = session.leaf(step.leaf)
            value = self._output(step.graph, _reading(session, step.grads), leaf, step.leaf)
            return session.with_leaves({step.leaf: leaf.with_value(value)}), None
        if isinstance(step, UpdateGradStep):
            leaf = session.leaf(step.leaf)
            grad = None if step.graph is None else self._output(
                step.graph, _reading(session, step.grads), leaf, step.leaf)
            return session.with_leaves({step.leaf: leaf.with_grad(grad)}), None
        if isinstance(step, SetRequiresGradStep):
            leaf = session.leaf(step.leaf)
            check_requires_grad(dtypes.from_numpy(leaf.value.dtype), step.requires_grad)
            changed = leaf.with_requires_grad(step.requires_grad)
            return session.with_leaves({step.leaf: changed}), None
        if isinstance(step, ZeroGradStep):
            return _zeroed(session, step.leaves, step.set_to_none), None
        if isinstance(step, FreeStep):
            return session.without(step.leaves), None
        return self._backward_step(session, step, as_values, deadline)

    def _output(self, source: GraphSource, session: Session, leaf: LeafState, name: str,
                ) -> np.ndarray:
        """A graph's output as a new value (or grad) for ``leaf``: broadcast to its shape and
        cast to its dtype within a kind, as an in-place op writes its result."""
        (value,) = self._arrays(source, session, ())
        target = leaf.value
        try:
            broadcast = np.broadcast_to(value, target.shape)
        except ValueError:
            raise ShapeError(f"the new value of leaf {short_name(name)} has shape "
                             f"{list(value.shape)}, which does not broadcast to the leaf's "
                             f"{list(target.shape)}") from None
        if not np.can_cast(value.dtype, target.dtype, "same_kind"):
            raise DTypeError(f"result type {dtypes.from_numpy(value.dtype)} can't be cast to the "
                             f"desired output type {dtypes.from_numpy(target.dtype)}")
        return broadcast.astype(target.dtype)

    def _backward_step(self, session: Session, step: BackwardStep, as_values: bool,
                       deadline: float) -> tuple[Session, BackwardStepResult]:
        view = _reading(session, step.grads)
        known = self._graphs.get(step.graph, view)
        leaves = view.leaves
        values = {name: leaves[name].value for name in known.valid.leaves}
        tracking = tuple(sorted(n for n in known.valid.leaves if leaves[n].requires_grad))
        checked = known.backward(values, tracking, seed=step.gradient, retain=step.retain,
                                 mode=step.check or session.check, deadline=deadline)
        if step.grads_only:  # torch.autograd.grad: this call's gradients, nothing accumulated
            updated = {name: session.leaves[name].with_grad(grad)
                       for name, grad in checked.gradients.items()}
        else:
            updated = {name: session.leaves[name].accumulate(grad)
                       for name, grad in checked.gradients.items()}
        answered = step.return_grads or step.grads_only
        self._check_tensors([checked.value, *checked.retained.values(),
                             *(leaf.grad for leaf in updated.values()
                               if answered and leaf.grad is not None)],
                            as_values, changing=True)
        result = BackwardResult(checked, updated, checked.retained, as_values)
        new = session if step.grads_only else session.with_leaves(updated)
        return new, BackwardStepResult(result, answered)

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


# --- a Run's steps -------------------------------------------------------------------------------

def _zeroed(session: Session, names: Sequence[str], set_to_none: bool) -> Session:
    """The session with the grads of leaves ``names`` (none: all) zeroed or set to None; leaves
    whose grad is None stay as they are, as PyTorch's zero_grad skips them."""
    changed = {}
    for name in names or sorted(session.leaves):
        leaf = session.leaf(name)
        if leaf.grad is not None:
            changed[name] = leaf.with_grad(None if set_to_none else np.zeros_like(leaf.grad))
    return session.with_leaves(changed) if changed else session


def _reading(session: Session, grads: Sequence[str]) -> Session:
    """The session as a graph that reads the grads of leaves ``grads`` sees it: each grad bound
    as a leaf of its own (``grad_leaf``) that does not require grad."""
    if not grads:
        return session
    bound = {}
    for name in grads:
        leaf = session.leaf(name)
        if leaf.grad is None:
            raise UsageError(f"leaf {short_name(name)} has no grad (it is None): a graph cannot "
                             "read it")
        bound[grad_leaf(name)] = LeafState(leaf.grad, False, None, leaf.version)
    return session.with_leaves(bound)


def _in_step(error: CrossgradError, index: int, step: Step, kind: str) -> CrossgradError:
    """``error``, raised by step ``index`` of a Run, located: its request field's path starts at
    the step (``steps[2].backward.graph.nodes[1]``), and its ``step`` says which. Other messages
    stay as they are: PyTorch's messages reach a torch-like client verbatim."""
    where = f"steps[{index}].{kind}"
    field = getattr(error, "field", None)
    if isinstance(field, str) and field and not field.startswith("steps["):
        located = f"{where}.{field}"
        if error.message.startswith(field):  # an InvalidField's message starts with its path
            error.message = located + error.message[len(field):]
            error.args = (error.message,)
        error.field = located
    elif not field:
        graph = getattr(step, "graph", None)
        inner = graph.field_of(error.node) if graph is not None and error.node else ""
        error.field = f"{where}.{inner}" if inner else where
    error.step = index
    return error


# --- what PutLeaf may do to a leaf ---------------------------------------------------------------

def _check_leaf_name(name: str, field: str = "name") -> None:
    if not name:
        raise InvalidField(field, "a leaf needs a name")
    if "\x00" in name:
        raise InvalidField(field, "a leaf name must not hold a NUL character")
    if name.startswith(GRAD_MARK):
        raise InvalidField(field, f"a leaf name must not start with {GRAD_MARK!r}: a graph reads "
                           f"leaf w's grad as {GRAD_MARK}w")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidField(field, f"{len(name):,} characters; a leaf name has at most "
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
