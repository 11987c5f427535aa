"""The gRPC servicer: a thin translation between the wire API and the engine and sessions.

Each method converts its request (``convert.py``), calls the engine or the store, and converts
the answer back; every error becomes a status in ``status.py``. Mutating calls go through the
store's ``update``, whose change is a pure function of the session snapshot: a call that fails
changes nothing, and a retried ``request_id`` gets its first answer.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np
from crossgrad.engine import graph as graphs
from crossgrad.engine.check import CheckMode
from crossgrad.engine.differentiation import Cache, GradientCheck, Symbolic, differentiate
from crossgrad.engine.dtypes import DType
from crossgrad.engine.errors import CrossgradError, InvalidArgument, UsageError, short_name
from crossgrad.engine.graph import MAX_NAME_CHARS, Graph, Leaf, LimitExceeded, ValidGraph
from crossgrad.engine.tape import Tape
from crossgrad.engine.tensor import Tensor
from crossgrad.v1 import crossgrad_pb2 as pb
from crossgrad.v1 import crossgrad_pb2_grpc as pb_grpc
from google.protobuf import message

from . import convert
from .config import Config
from .errors import LeafNotFound, RequestIdReused, SessionBusy, VersionMismatch
from .sessions import LeafState, Session, SessionStore
from .status import to_status

Request = TypeVar("Request", bound=message.Message)
Response = TypeVar("Response", bound=message.Message)

_DEADLINE_MARGIN = 0.05  # seconds kept back from a client's deadline to answer in time
_RETRIES = 5  # recomputations of a Backward whose leaves changed under it
_PER_GRAPH = 16  # tapes and checks kept per known graph
MAX_REQUEST_ID_CHARS = 128


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
        return self.tapes.get_or_put(key, lambda: Tape(self.valid, tracking, key[1]))


def _rpc(method: Callable[[Any, Request, grpc.ServicerContext], Response],
         ) -> Callable[[Any, Request, grpc.ServicerContext], Response]:
    """Every error, expected or not, leaves as a status with details and no stack trace."""
    @functools.wraps(method)
    def handle(self: Any, request: Request, context: grpc.ServicerContext) -> Response:
        try:
            return method(self, request, context)
        except Exception as error:
            context.abort_with_status(to_status(error))
            raise AssertionError("abort_with_status returned") from None
    return handle


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


def _replay(remembered: Any, fingerprint: str, request_id: str,
            response_type: type[Response]) -> Response:
    """The answer remembered for a request_id, or RequestIdReused if it answered another request
    than the one whose ``fingerprint`` is given."""
    first, payload = remembered
    if first != fingerprint:
        raise RequestIdReused(request_id)
    return response_type.FromString(payload)


class Servicer(pb_grpc.AutogradServiceServicer):
    def __init__(self, config: Config, store: SessionStore, symbolic: Symbolic) -> None:
        self.config = config
        self.store = store
        self.symbolic = symbolic
        self._graphs = Cache(256)

    # --- helpers ----------------------------------------------------------------------------------

    def _deadline(self, context: grpc.ServicerContext) -> float:
        """Seconds the symbolic derivation may take: the configured deadline, or less when the
        client's own deadline comes first (the worker is then stopped in time)."""
        remaining = context.time_remaining()
        configured = self.config.symbolic_deadline
        if remaining is None:
            return configured
        return max(0.001, min(configured, remaining - _DEADLINE_MARGIN))

    def _answered(self, request: Any, response_type: type[Response]) -> Response | None:
        """The first answer, when this request's request_id has one: looked up before any work,
        so a retry gets it whatever the session's state is now."""
        request_id = _request_id(request)
        if request_id is None:
            return None
        remembered = self.store.recall(request.session_id, request_id)
        if remembered is None:
            return None
        return _replay(remembered, _fingerprint(request), request_id, response_type)

    def _mutate(self, request: Any, change: Callable[[Session], tuple[Session, Response]],
                response_type: type[Response]) -> Response:
        """``change`` applied through the store; a retried request_id gets its first answer."""
        request_id = _request_id(request)
        if request_id is None:
            def fitting(session: Session) -> tuple[Session, Response]:
                new, response = change(session)
                self._check_size(response.ByteSize())
                return new, response

            return self.store.update(request.session_id, fitting)
        # Only calls that can be retried pay for remembering their answer (and for hashing the
        # request, megabytes for a large tensor).
        fingerprint = _fingerprint(request)

        def recorded(session: Session) -> tuple[Session, tuple[str, bytes]]:
            new, response = change(session)
            payload = response.SerializeToString()
            self._check_size(len(payload))
            return new, (fingerprint, payload)

        remembered = self.store.update(request.session_id, recorded, request_id)
        return _replay(remembered, fingerprint, request_id, response_type)

    def _check_size(self, size: int) -> None:
        """Refuse an answer over the message size limit before the store commits its change:
        gRPC would refuse to send it after the change was applied."""
        if size > self.config.max_message_bytes:
            raise LimitExceeded(f"the response would be {size:,} bytes, over the server's "
                                f"message size limit of {self.config.max_message_bytes:,}; "
                                "nothing was changed")

    def _tensor(self, tensor: pb.Tensor, field: str, default_dtype: DType | None) -> np.ndarray:
        return convert.tensor_to_array(tensor, field=field, default_dtype=default_dtype,
                                       max_elements=self.config.max_elements)

    def _graph(self, request_graph: pb.Graph, session: Session) -> _Known:
        """The request's graph, validated over the session's leaves.

        A client sends the same graph call after call (a training loop), so validated graphs are
        kept by their bytes and the session's dtype, and reused while the leaves they use still
        have the shapes and dtypes they were validated with.
        """
        key = (request_graph.SerializeToString(deterministic=True), session.dtype)
        known: _Known | None = self._graphs.get(key)
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
        self._graphs.put(key, known)
        return known

    # --- sessions ---------------------------------------------------------------------------------

    @_rpc
    def CreateSession(self, request: pb.CreateSessionRequest, context: grpc.ServicerContext,
                      ) -> pb.CreateSessionResponse:
        dtype = convert.dtype_from_proto(request.dtype, default=convert.FLOAT32, field="dtype")
        mode = convert.check_mode_from_proto(request.check_mode) or CheckMode.STRICT
        ttl = convert.duration_from_proto(request.idle_ttl, field="idle_ttl")
        session = self.store.create(dtype, mode.value, ttl, request_id=_request_id(request))
        return pb.CreateSessionResponse(session=_session_to_proto(session))

    @_rpc
    def GetSession(self, request: pb.GetSessionRequest, context: grpc.ServicerContext,
                   ) -> pb.GetSessionResponse:
        session = self.store.get(request.session_id)
        return pb.GetSessionResponse(
            session=_session_to_proto(session),
            leaves=[convert.leaf_info(n, leaf) for n, leaf in sorted(session.leaves.items())])

    @_rpc
    def DeleteSession(self, request: pb.DeleteSessionRequest, context: grpc.ServicerContext,
                      ) -> pb.DeleteSessionResponse:
        self.store.delete(request.session_id, _request_id(request))
        return pb.DeleteSessionResponse()

    # --- leaves -----------------------------------------------------------------------------------

    @_rpc
    def PutLeaf(self, request: pb.PutLeafRequest, context: grpc.ServicerContext,
                ) -> pb.PutLeafResponse:
        if (first := self._answered(request, pb.PutLeafResponse)) is not None:
            return first
        if not request.name:
            raise convert.InvalidField("name", "a leaf needs a name")
        if len(request.name) > MAX_NAME_CHARS:
            raise convert.InvalidField("name", f"{len(request.name):,} characters; a leaf name "
                                       f"has at most {MAX_NAME_CHARS}")
        snapshot = self.store.get(request.session_id)
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
                    raise LimitExceeded(f"this session holds {len(session.leaves):,} leaves, the "
                                        "server's limit; create a new session for more")
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

        return self._mutate(request, change, pb.PutLeafResponse)

    @_rpc
    def GetLeaf(self, request: pb.GetLeafRequest, context: grpc.ServicerContext,
                ) -> pb.GetLeafResponse:
        session = self.store.get(request.session_id)
        response = pb.GetLeafResponse()
        convert.leaf_to_proto(request.name, session.leaf(request.name), response.leaf)
        return response

    @_rpc
    def ZeroGrad(self, request: pb.ZeroGradRequest, context: grpc.ServicerContext,
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

        return self._mutate(request, change, pb.ZeroGradResponse)

    # --- graphs -----------------------------------------------------------------------------------

    @_rpc
    def Evaluate(self, request: pb.EvaluateRequest, context: grpc.ServicerContext,
                 ) -> pb.EvaluateResponse:
        session = self.store.get(request.session_id)
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
        out = []
        for node_id in ids:
            result = env[node_id]
            if isinstance(result, Tensor):
                array = result.detach().numpy()
                grad_fn = result.grad_fn.name() if result.grad_fn is not None else ""
                out.append(pb.NodeValue(id=node_id, value=convert.array_to_tensor(array),
                                        requires_grad=result.requires_grad, grad_fn=grad_fn))
            else:
                array = np.asarray(result, dtype=valid.types[node_id].dtype.numpy)
                out.append(pb.NodeValue(id=node_id, value=convert.array_to_tensor(array)))
        return pb.EvaluateResponse(values=out)

    @_rpc
    def Backward(self, request: pb.BackwardRequest, context: grpc.ServicerContext,
                 ) -> pb.BackwardResponse:
        if (first := self._answered(request, pb.BackwardResponse)) is not None:
            return first
        try:
            for _ in range(_RETRIES):
                try:
                    return self._backward(request, context)
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

    def _backward(self, request: pb.BackwardRequest, context: grpc.ServicerContext,
                  ) -> pb.BackwardResponse:
        session = self.store.get(request.session_id)
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
                                        deadline=self._deadline(context))
        versions = {name: leaves[name].version for name in sweep.grads}

        def change(current: Session) -> tuple[Session, pb.BackwardResponse]:
            updated = {}
            for name, grad in sweep.grads.items():
                leaf = current.leaves.get(name)
                if leaf is None or leaf.version != versions[name]:
                    raise _Stale
                updated[name] = leaf.accumulate(grad)
            # Built in place: a submessage given to a constructor is copied.
            response = pb.BackwardResponse()
            convert.array_to_tensor(checked.value, response.output)
            for name, leaf in sorted(updated.items()):
                if leaf.grad is not None:
                    message = response.leaves.add(
                        name=name, version=leaf.version,
                        closed_form=checked.closed_forms.get(name, ""),
                        latex=checked.latex.get(name, ""))
                    convert.array_to_tensor(leaf.grad, message.grad)
            for node_id, grad in sweep.retained.items():
                convert.array_to_tensor(grad, response.retained[node_id])
            convert.report_to_proto(checked.check, response.check)
            return current.with_leaves(updated), response

        return self._mutate(request, change, pb.BackwardResponse)

    # --- stateless --------------------------------------------------------------------------------

    @_rpc
    def Differentiate(self, request: pb.DifferentiateRequest, context: grpc.ServicerContext,
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
                               deadline=self._deadline(context))
        return convert.differentiate_response(
            result, sorted(result.wrt) if wrt is None else wrt,
            leaf_dtypes={n: convert.dtype_of(v) for n, v in values.items()})

    @_rpc
    def ListOps(self, request: pb.ListOpsRequest, context: grpc.ServicerContext,
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
