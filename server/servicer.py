"""The gRPC servicer: a thin translation between the wire API and the engine and sessions.

Each method converts its request (``convert.py``), calls the engine or the store, and converts
the answer back; it raises on error, and the server's one mapping (``status.py``) makes the
status. Mutating calls go through the store's ``update``, whose change is a pure function of the
session snapshot: a call that fails changes nothing, and a retried ``request_id`` gets its first
answer. A change commits only while its call is still active (its client neither gone past its
deadline nor cancelled): it is checked inside the store's update, the last point before the
commit. Every answer is checked against the message size limit before it is sent (before the
commit, for a change).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
from crossgrad.engine import graph as graphs
from crossgrad.engine.cache import Cache
from crossgrad.engine.check import CheckMode
from crossgrad.engine.differentiation import GradientCheck, differentiate
from crossgrad.engine.dtypes import DType
from crossgrad.engine.errors import CrossgradError, InvalidArgument, UsageError, short_name
from crossgrad.engine.graph import MAX_NAME_CHARS, Graph, Leaf, ValidGraph
from crossgrad.engine.solver import Symbolic
from crossgrad.engine.tape import Tape
from crossgrad.engine.tensor import Tensor
from crossgrad.v1 import crossgrad_pb2 as pb
from crossgrad.v1 import crossgrad_pb2_grpc as pb_grpc
from google.protobuf import message

from . import convert
from .config import Config
from .errors import (
    BudgetExceeded,
    CallCancelled,
    CallExpired,
    LeafNotFound,
    RequestIdReused,
    SessionBusy,
    VersionMismatch,
)
from .sessions import LeafState, Remembered, Session, SessionStore

Request = TypeVar("Request", bound=message.Message)
Response = TypeVar("Response", bound=message.Message)

# Kept back from a client's deadline for what follows the derivation (the check, a
# finite-difference fallback, the answer): a tenth of it, and at least 50 ms.
_DEADLINE_SHARE, _DEADLINE_MARGIN = 0.1, 0.05
_RETRIES = 5  # recomputations of a Backward whose leaves changed under it
_PER_GRAPH = 16  # tapes and checks kept per known graph
# Graphs kept validated, and the largest kept (serialized): a graph with large constants costs
# its size to validate anyway, and the cache must stay small in bytes (keys are whole graphs).
_KNOWN_GRAPHS = 256
_KNOWN_GRAPH_BYTES = 64 * 1024
# The most a kept tape may hold in values computed from constants alone (a 16 kB graph can
# broadcast its constants to megabytes): a larger one is built for its call and not kept.
_KEPT_TAPE_BYTES = 16 * 1024
MAX_REQUEST_ID_CHARS = 128
# CreateSession's request_id gets a session back: as strong as a session id (128+ random bits:
# a UUID's 36 characters, 32 hex digits).
MIN_CREATE_REQUEST_ID_CHARS = 32


class Call(Protocol):
    """What the servicer asks of a call in progress (thread-safe)."""

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


class _Known:
    """A validated graph, with its gradient checks (by the leaves differentiated) and its tapes
    (by the leaves that require grad and the nodes retained), each built on first use with the
    op table as it is then. Both are bounded: a client picks the keys."""

    def __init__(self, valid: ValidGraph, symbolic: Symbolic) -> None:
        self.valid = valid
        self.symbolic = symbolic
        # What the graph was validated with: (leaf name, shape, NumPy dtype).
        self.signature = [(name, shape, dtype.numpy)
                          for name, (shape, dtype) in valid.leaves.items()]
        self.checks = Cache(_PER_GRAPH)
        self.tapes = Cache(_PER_GRAPH)

    def check(self, wrt: tuple[str, ...]) -> GradientCheck:
        return self.checks.get_or_put(wrt, lambda: GradientCheck(self.valid, wrt, self.symbolic))

    def tape(self, tracking: tuple[str, ...], retain: Sequence[str]) -> Tape:
        key = (tracking, tuple(retain))
        tape: Tape | None = self.tapes.get(key)
        if tape is None:
            tape = Tape(self.valid, tracking, key[1])
            if tape.static_nbytes <= _KEPT_TAPE_BYTES:
                self.tapes.put(key, tape)
        return tape


def _client(call: Call) -> str:
    """Who is calling, for per-client limits: the peer's address without its port."""
    peer = call.peer()
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rpartition(":")[0]
    return peer


def _session_id(request: Any) -> str:
    """The request's session_id, which every session call needs."""
    session_id: str = request.session_id
    if not session_id:
        raise convert.InvalidField("session_id", "the session's id is required (CreateSession "
                                   "gives one)")
    return session_id


def _commit_point(call: Call) -> None:
    """Refuse to commit for a call nobody waits for any more: its client's deadline passed or it
    cancelled. The answer would be lost, and a retry without a request_id would apply it twice."""
    if not call.is_active():
        remaining = call.time_remaining()
        raise CallCancelled() if remaining is None or remaining > 0 else CallExpired()


def _fingerprint(request: message.Message) -> str:
    """What identifies a request under its request_id: its method (by its message type) and its
    fields."""
    digest = hashlib.blake2b(request.DESCRIPTOR.full_name.encode())
    digest.update(request.SerializeToString(deterministic=True))
    return digest.hexdigest()


def _request_id(request: Any) -> str | None:
    """The request's idempotency key, None when it has none."""
    key: str = request.request_id
    if len(key) > MAX_REQUEST_ID_CHARS:
        raise convert.InvalidField("request_id", f"{len(key)} characters; a request_id has at "
                                   f"most {MAX_REQUEST_ID_CHARS}")
    return key or None


def _replay(remembered: object, fingerprint: str, request_id: str,
            response_type: type[Response]) -> Response:
    """The answer remembered for a request_id, or RequestIdReused if it answered another request
    than the one whose ``fingerprint`` is given."""
    assert isinstance(remembered, Remembered)  # what ``_mutate`` has the store remember
    if remembered.fingerprint != fingerprint:
        raise RequestIdReused(request_id)
    return response_type.FromString(remembered.payload)


class Servicer(pb_grpc.AutogradServiceServicer):
    def __init__(self, config: Config, store: SessionStore, symbolic: Symbolic) -> None:
        self.config = config
        self.store = store
        self.symbolic = symbolic
        self._graphs = Cache(_KNOWN_GRAPHS)

    # --- helpers ----------------------------------------------------------------------------------

    def _deadline(self, call: Call) -> float:
        """Seconds this call waits for a symbolic derivation: the configured deadline, or less
        when the client's own deadline comes first (the derivation may go on for a later call)."""
        remaining = call.time_remaining()
        configured = self.config.symbolic_deadline
        if remaining is None:
            return configured
        kept = max(_DEADLINE_MARGIN, _DEADLINE_SHARE * remaining)
        return max(0.001, min(configured, remaining - kept))

    def _answered(self, request: Any, response_type: type[Response]) -> Response | None:
        """The first answer, when this request's request_id has one: looked up before any work,
        so a retry gets it whatever the session's state is now."""
        request_id = _request_id(request)
        if request_id is None:
            return None
        remembered = self.store.recall(_session_id(request), request_id)
        if remembered is None:
            return None
        return _replay(remembered, _fingerprint(request), request_id, response_type)

    def _mutate(self, request: Any, change: Callable[[Session], tuple[Session, Response]],
                response_type: type[Response], call: Call) -> Response:
        """``change`` applied through the store, if the call is still active when it is done; a
        retried request_id gets its first answer."""
        session_id = _session_id(request)
        request_id = _request_id(request)
        if request_id is None:
            def fitting(session: Session) -> tuple[Session, Response]:
                new, response = change(session)
                self._check_size(response.ByteSize(), changing=True)
                _commit_point(call)
                return new, response

            return self.store.update(session_id, fitting)
        # Only calls that can be retried pay for remembering their answer (and for hashing the
        # request, megabytes for a large tensor).
        fingerprint = _fingerprint(request)

        def recorded(session: Session) -> tuple[Session, Remembered]:
            new, response = change(session)
            payload = response.SerializeToString()
            self._check_size(len(payload), changing=True)
            _commit_point(call)
            return new, Remembered(fingerprint, payload)

        remembered = self.store.update(session_id, recorded, request_id)
        return _replay(remembered, fingerprint, request_id, response_type)

    def _check_size(self, size: int, *, changing: bool = False,
                    hint: str = "") -> None:
        """Refuse an answer over the message size limit before it is sent (gRPC would fail it
        without details), and for a change before the store commits it."""
        if size > self.config.max_message_bytes:
            raise BudgetExceeded(
                "max_message_bytes", f"the answer would be {size:,} bytes, over the server's "
                f"message size limit of {self.config.max_message_bytes:,}"
                f"{'; nothing was changed' if changing else ''}{hint}")

    def _check_tensors(self, arrays: Sequence[np.ndarray], as_values: bool, *,
                       changing: bool = False, hint: str = "") -> None:
        """Refuse an answer whose tensors alone pass the message size limit, before building it
        (a few small requests must not make the server build gigabytes it will not send)."""
        size = sum(a.size * (8 if as_values else a.itemsize) for a in arrays)
        self._check_size(size, changing=changing, hint=hint)

    def _answer(self, response: Response, hint: str = "") -> Response:
        """A read-only answer, once it is known to fit in a message."""
        self._check_size(response.ByteSize(), hint=hint)
        return response

    def _tensor(self, tensor: pb.Tensor, field: str, default_dtype: DType | None) -> np.ndarray:
        return convert.tensor_to_array(tensor, field=field, default_dtype=default_dtype,
                                       max_elements=self.config.max_elements)

    def _graph(self, request_graph: pb.Graph, session: Session) -> _Known:
        """The request's graph, validated over the session's leaves.

        A client sends the same graph call after call (a training loop), so validated graphs of up
        to ``_KNOWN_GRAPH_BYTES`` are kept by their bytes and the session's dtype, and reused
        while the leaves they use still have the shapes and dtypes they were validated with.
        """
        key = (request_graph.SerializeToString(deterministic=True), session.dtype)
        cached = len(key[0]) <= _KNOWN_GRAPH_BYTES
        known: _Known | None = self._graphs.get(key) if cached else None
        if known is not None and _fits(known.signature, session.leaves):
            return known
        graph: Graph = convert.graph_from_proto(request_graph, self.config.limits,
                                                default_dtype=session.dtype)
        for node in graph.nodes:
            if isinstance(node, Leaf) and node.name not in session.leaves:
                raise LeafNotFound(node.name, node=node.id)
        declared = {name: (leaf.value.shape, convert.dtype_of(leaf.value))
                    for name, leaf in session.leaves.items()}
        known = _Known(graphs.validate(graph, declared, self.config.limits), self.symbolic)
        if cached:
            self._graphs.put(key, known)
        return known

    # --- sessions ---------------------------------------------------------------------------------

    def CreateSession(self, request: pb.CreateSessionRequest, call: Call,
                      ) -> pb.CreateSessionResponse:
        dtype = convert.dtype_from_proto(request.dtype, default=convert.FLOAT32, field="dtype")
        mode = convert.check_mode_from_proto(request.check_mode) or CheckMode.STRICT
        ttl = convert.duration_from_proto(request.idle_ttl, field="idle_ttl")
        request_id = _request_id(request)
        if request_id is not None and len(request_id) < MIN_CREATE_REQUEST_ID_CHARS:
            raise convert.InvalidField(
                "request_id", f"{len(request_id)} characters; CreateSession's request_id gets "
                "the session back on a retry, so it must be as hard to guess as a session id: "
                f"at least {MIN_CREATE_REQUEST_ID_CHARS} characters (a random UUID)")
        session = self.store.create(dtype, mode.value, ttl, request_id=request_id,
                                    client=_client(call),
                                    before_commit=lambda: _commit_point(call))
        return pb.CreateSessionResponse(session=_session_to_proto(session))

    def GetSession(self, request: pb.GetSessionRequest, call: Call,
                   ) -> pb.GetSessionResponse:
        session = self.store.get(_session_id(request))
        return self._answer(pb.GetSessionResponse(
            session=_session_to_proto(session),
            leaves=[convert.leaf_info(n, leaf) for n, leaf in sorted(session.leaves.items())]))

    def DeleteSession(self, request: pb.DeleteSessionRequest, call: Call,
                      ) -> pb.DeleteSessionResponse:
        self.store.delete(_session_id(request), _request_id(request),
                          before_commit=lambda: _commit_point(call))
        return pb.DeleteSessionResponse()

    # --- leaves -----------------------------------------------------------------------------------

    def PutLeaf(self, request: pb.PutLeafRequest, call: Call,
                ) -> pb.PutLeafResponse:
        if (first := self._answered(request, pb.PutLeafResponse)) is not None:
            return first
        if not request.name:
            raise convert.InvalidField("name", "a leaf needs a name")
        if len(request.name) > MAX_NAME_CHARS:
            raise convert.InvalidField("name", f"{len(request.name):,} characters; a leaf name "
                                       f"has at most {MAX_NAME_CHARS}")
        snapshot = self.store.get(_session_id(request))
        value = (self._tensor(request.value, "value", snapshot.dtype) if request.HasField("value")
                 else None)
        wants_grad = request.requires_grad if request.HasField("requires_grad") else None
        expected = (request.expected_version if request.HasField("expected_version")
                    else None)

        def change(session: Session) -> tuple[Session, pb.PutLeafResponse]:
            old = session.leaves.get(request.name)
            if expected is not None and expected != (0 if old is None else old.version):
                raise VersionMismatch(request.name, expected, 0 if old is None else old.version)
            if old is None:
                if len(session.leaves) >= self.config.max_leaves:
                    raise BudgetExceeded("max_leaves", f"this session holds "
                                         f"{len(session.leaves):,} leaves, the server's limit; "
                                         "create a new session for more")
                if value is None:
                    raise convert.InvalidField("value", f"leaf {short_name(request.name)} does "
                                               "not exist: creating it needs a value")
                if wants_grad and value.dtype.kind != "f":
                    raise UsageError("only Tensors of floating point dtype can require gradients")
                leaf = LeafState(value, bool(wants_grad), None, 1)
            else:
                if value is None and wants_grad is None:
                    raise InvalidArgument("PutLeaf changes nothing: give a value, "
                                          "requires_grad or both")
                leaf = old
                if value is not None:
                    if value.shape != old.value.shape:
                        raise convert.InvalidField(
                            "value", f"leaf {short_name(request.name)} has shape "
                            f"{list(old.value.shape)}; the new value has shape {list(value.shape)}")
                    leaf = leaf.with_value(_cast(value, old.value.dtype, request.name))
                if wants_grad is not None:
                    if wants_grad and leaf.value.dtype.kind != "f":
                        raise UsageError("only Tensors of floating point dtype can require "
                                         "gradients")
                    leaf = leaf.with_requires_grad(wants_grad)
            return (session.with_leaves({request.name: leaf}),
                    pb.PutLeafResponse(leaf=convert.leaf_info(request.name, leaf),
                                       created=old is None))

        return self._mutate(request, change, pb.PutLeafResponse, call)

    def GetLeaf(self, request: pb.GetLeafRequest, call: Call,
                ) -> pb.GetLeafResponse:
        view = convert.leaf_view_from_proto(request.view)
        session = self.store.get(_session_id(request))
        response = pb.GetLeafResponse()
        convert.leaf_to_proto(request.name, session.leaf(request.name), response.leaf, view=view,
                              as_values=request.answer_as_values)
        return self._answer(response, hint=(
            "; ask for the value and the grad one at a time (GetLeafRequest.view)"
            if view == pb.LEAF_VIEW_FULL else ""))

    def ZeroGrad(self, request: pb.ZeroGradRequest, call: Call,
                 ) -> pb.ZeroGradResponse:
        def change(session: Session) -> tuple[Session, pb.ZeroGradResponse]:
            names = list(request.names) or sorted(session.leaves)
            changed = {}
            for name in names:
                leaf = session.leaf(name)
                if leaf.grad is not None:
                    changed[name] = leaf.with_grad(
                        None if request.set_to_none else np.zeros_like(leaf.grad))
            new = session.with_leaves(changed)
            return new, pb.ZeroGradResponse(
                leaves=[convert.leaf_info(n, new.leaves[n]) for n in sorted(changed)])

        return self._mutate(request, change, pb.ZeroGradResponse, call)

    # --- graphs -----------------------------------------------------------------------------------

    def Evaluate(self, request: pb.EvaluateRequest, call: Call,
                 ) -> pb.EvaluateResponse:
        session = self.store.get(_session_id(request))
        valid = self._graph(request.graph, session).valid
        ids = list(request.nodes) or [valid.output]
        seen: set[str] = set()
        for node_id in ids:
            if node_id in seen:
                raise convert.InvalidField("nodes", f"node {short_name(node_id)} is asked for "
                                           "twice")
            seen.add(node_id)
        values = {name: session.leaves[name].value for name in valid.leaves}
        tracking = {n for n in valid.leaves if session.leaves[n].requires_grad}
        _, env = graphs.run(valid, values, tracking, ids, checked=True)
        arrays = [env[node_id].detach().numpy() if isinstance(env[node_id], Tensor) else
                  np.asarray(env[node_id], dtype=valid.types[node_id].dtype.numpy)
                  for node_id in ids]
        hint = "; ask for fewer nodes"
        self._check_tensors(arrays, request.answer_as_values, hint=hint)
        response = pb.EvaluateResponse()
        for node_id, array in zip(ids, arrays, strict=True):
            result = env[node_id]
            out = response.values.add(id=node_id)
            if isinstance(result, Tensor):
                out.requires_grad = result.requires_grad
                out.grad_fn = result.grad_fn.name() if result.grad_fn is not None else ""
            convert.array_to_tensor(array, out.value, as_values=request.answer_as_values)
        return self._answer(response, hint=hint)

    def Backward(self, request: pb.BackwardRequest, call: Call,
                 ) -> pb.BackwardResponse:
        if (first := self._answered(request, pb.BackwardResponse)) is not None:
            return first
        try:
            for _ in range(_RETRIES):
                try:
                    return self._backward(request, call)
                except _Stale:
                    continue  # a PutLeaf changed a leaf under us: compute from the new values
            raise SessionBusy(f"the session's leaves changed under backward {_RETRIES} times in "
                              "a row; try again")
        except CrossgradError:
            # A retry racing its first call: that call may have committed, and the session moved
            # on, since the lookup above. Its answer, if it has one now, is this call's.
            if (first := self._answered(request, pb.BackwardResponse)) is not None:
                return first
            raise

    def _backward(self, request: pb.BackwardRequest, call: Call,
                  ) -> pb.BackwardResponse:
        session = self.store.get(_session_id(request))
        known = self._graph(request.graph, session)
        valid = known.valid
        leaves = session.leaves
        values = {name: leaves[name].value for name in valid.leaves}
        tracking = tuple(sorted(n for n in valid.leaves if leaves[n].requires_grad))
        tape = known.tape(tracking, request.retain)
        # The request's own fields are read before the graph runs (a malformed gradient is
        # refused first).
        seed = (self._tensor(request.gradient, "gradient", convert.FLOAT64)
                if request.HasField("gradient") else None)
        sweep = tape(values, seed)
        mode = convert.check_mode_from_proto(request.check_mode) or CheckMode(session.check)
        checked = known.check(tracking)(values, sweep.value, sweep.grads, mode=mode, seed=seed,
                                        deadline=self._deadline(call))
        versions = {name: leaves[name].version for name in sweep.grads}

        def change(current: Session) -> tuple[Session, pb.BackwardResponse]:
            updated = {}
            for name, grad in sweep.grads.items():
                leaf = current.leaves.get(name)
                if leaf is None or leaf.version != versions[name]:
                    raise _Stale
                updated[name] = leaf.accumulate(grad)
            as_values = request.answer_as_values
            self._check_tensors([checked.value, *(leaf.grad for leaf in updated.values()
                                                  if leaf.grad is not None),
                                 *sweep.retained.values()], as_values, changing=True)
            # Built in place: a submessage given to a constructor is copied.
            response = pb.BackwardResponse()
            convert.array_to_tensor(checked.value, response.output, as_values=as_values)
            for name, leaf in sorted(updated.items()):
                if leaf.grad is not None:
                    message = response.leaves.add(
                        name=name, version=leaf.version,
                        closed_form=checked.closed_forms.get(name, ""),
                        latex=checked.latex.get(name, ""))
                    convert.array_to_tensor(leaf.grad, message.grad, as_values=as_values)
            for node_id, grad in sweep.retained.items():
                convert.array_to_tensor(grad, response.retained[node_id], as_values=as_values)
            convert.report_to_proto(checked.check, response.check, notes=checked.notes)
            return current.with_leaves(updated), response

        return self._mutate(request, change, pb.BackwardResponse, call)

    # --- stateless --------------------------------------------------------------------------------

    def Differentiate(self, request: pb.DifferentiateRequest, call: Call,
                      ) -> pb.DifferentiateResponse:
        source: Graph | str
        if request.WhichOneof("source") == "formula":
            source = request.formula
        elif request.WhichOneof("source") == "graph":
            source = convert.graph_from_proto(request.graph, self.config.limits)
        else:
            raise InvalidArgument("give a graph or a formula")
        values = {name: self._tensor(t, convert.map_field("values", name), convert.FLOAT32)
                  for name, t in request.values.items()}
        seed = (self._tensor(request.seed, "seed", convert.FLOAT64) if request.HasField("seed")
                else None)
        mode = convert.check_mode_from_proto(request.check_mode) or CheckMode.STRICT
        wrt = list(request.wrt) or None
        result = differentiate(source, values, wrt=wrt, check=mode, hessian=request.hessian,
                               seed=seed, limits=self.config.limits, symbolic=self.symbolic,
                               deadline=self._deadline(call))
        return self._answer(convert.differentiate_response(
            result, sorted(result.wrt) if wrt is None else wrt,
            leaf_dtypes={n: convert.dtype_of(v) for n, v in values.items()},
            as_values=request.answer_as_values))

    def ListOps(self, request: pb.ListOpsRequest, call: Call,
                ) -> pb.ListOpsResponse:
        return convert.list_ops_response()


def _session_to_proto(session: Session) -> pb.Session:
    # This call restarted the session's idle timer.
    return convert.session_to_proto(session, expire_time=time.time() + session.idle_ttl)


def _fits(signature: list[tuple[str, tuple[int, ...], np.dtype[Any]]],
          leaves: Mapping[str, LeafState]) -> bool:
    """Whether the session's leaves still have the shapes and dtypes a graph was validated with."""
    for name, shape, dtype in signature:
        leaf = leaves.get(name)
        if leaf is None or leaf.value.shape != shape or leaf.value.dtype != dtype:
            return False
    return True


def _cast(value: np.ndarray, dtype: np.dtype[Any], name: str) -> np.ndarray:
    if not np.can_cast(value.dtype, dtype, "same_kind"):
        raise convert.InvalidField("value", f"leaf {short_name(name)} is {dtype}; a {value.dtype} "
                                   "value does not convert to it")
    with np.errstate(over="ignore"):  # found below
        cast = value.astype(dtype, copy=False)
    if cast.dtype.kind == "f" and not np.isfinite(cast).all():
        raise convert.InvalidField("value", f"leaf {short_name(name)} is {dtype}, and the value "
                                   "overflows it (a leaf value must be finite)")
    return cast
