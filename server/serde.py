"""Protobuf messages <-> the service's commands and results: the one module that reads or builds a
message's fields.

``x_from_proto`` reads a message, ``x_to_proto`` builds one. Each request is decoded once, by
``<method>_from_proto``, into its command (``commands.py``); each result is encoded by
``<method>_to_proto`` into its response (``Answer``s for the changes, whose first answer a retry
reads back).

Pure functions. Every refusal of a request is an ``InvalidField`` (an ``InvalidArgument``) whose
message starts with the path of the offending request field (``values['x'].data: ...``,
``graph.nodes[3].op.attrs['dim'] (node 's'): ...``) and says what is wrong; its ``field``
attribute holds that path for ``google.rpc.BadRequest``, and ``node`` the graph node when there is
one. Past a size limit it is a ``FieldLimitExceeded`` (a ``LimitExceeded``, RESOURCE_EXHAUSTED)
whose ``limit`` names the limit. Sizes are checked before anything is allocated, and nothing a
client sends is ever evaluated.

Tensors arrive as shape + dtype + raw little-endian bytes (``data``) or as numbers (``values``)
and become native-endian, C-contiguous, read-only NumPy arrays; they leave as ``data``, or as
``values`` for a request that asks for numbers (``answer_as_values``).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from crossgrad.engine.dtypes import DType
from crossgrad.engine.errors import CrossgradError, InvalidArgument, short_name
from crossgrad.engine.graph import Constant, Graph, Leaf, Limits, Node, Operation
from crossgrad.engine.ops import ATTR_KINDS, TABLE
from crossgrad.v1 import crossgrad_pb2 as pb
from crossgrad.wire.codec import (
    FLOAT32,
    FLOAT64,
    attr_from_proto,
    attr_to_proto,
    check_mode_from_proto,
    check_mode_to_proto,
    check_report_to_proto,
    dtype_from_proto,
    dtype_of,
    dtype_to_proto,
    tensor_from_proto,
    tensor_to_proto,
)
from crossgrad.wire.errors import FieldLimitExceeded, InvalidField
from google.protobuf import duration_pb2, timestamp_pb2

from . import commands, idempotency
from .commands import Answer
from .sessions import LeafState, Session, grad_leaf


def map_field(field: str, key: str) -> str:
    """The path of a map entry or a named item, e.g. ``values['x']``."""
    return f"{field}[{short_name(key)}]"


# --- graphs --------------------------------------------------------------------------------------

def graph_from_proto(graph: pb.Graph, limits: Limits, *, default_dtype: DType = FLOAT32,
                     field: str = "graph", grads: bool = False) -> Graph:
    """A wire graph as the engine's ``Graph``, each node's fields checked and converted.

    ``default_dtype``: the dtype of a constant sent in the values form without one (the
    session's dtype; FLOAT32 in Differentiate). ``grads``: whether ``grad`` nodes are allowed
    (Run's graphs); each becomes a leaf node bound to the leaf's grad (``sessions.grad_leaf``).
    Structure (ids, inputs, cycles, ops, attribute names, shapes) is left to
    ``crossgrad.engine.graph.validate``, which names the node.
    """
    count = len(graph.nodes)
    if count > limits.max_nodes:
        raise FieldLimitExceeded(f"{field}.nodes", f"{count} nodes; the limit is "
                                 f"{limits.max_nodes}", limit="max_nodes")
    if not graph.output:
        raise InvalidField(f"{field}.output", "the id of the output node is required")
    nodes: list[Node] = []
    elements = 0
    for k, message in enumerate(graph.nodes):
        path = f"{field}.nodes[{k}]"
        node_id = message.id
        if not node_id:
            raise InvalidField(f"{path}.id", "a node needs a non-empty id")
        kind = message.WhichOneof("kind")
        if kind == "leaf":
            if not message.leaf:
                raise InvalidField(f"{path}.leaf", "a leaf needs a non-empty name", node=node_id)
            nodes.append(Leaf(node_id, message.leaf))
        elif kind == "constant":
            value = tensor_from_proto(message.constant, field=f"{path}.constant",
                                      default_dtype=default_dtype,
                                      max_elements=limits.max_elements, node=node_id)
            elements += value.size
            if elements > limits.max_total_elements:
                raise FieldLimitExceeded(f"{path}.constant", "the graph's constants hold more "
                                         f"than {limits.max_total_elements} elements",
                                         limit="max_total_elements", node=node_id)
            nodes.append(Constant(node_id, value))
        elif kind == "op":
            nodes.append(_operation(message.op, node_id, f"{path}.op"))
        elif kind == "grad":
            if not grads:
                raise InvalidField(f"{path}.grad", "grad nodes are read in Run's steps only",
                                   node=node_id)
            nodes.append(Leaf(node_id, grad_leaf(message.grad)))
        else:
            raise InvalidField(path, "no kind set: a node is a leaf, a constant, an op or a grad",
                               node=node_id)
    return Graph(tuple(nodes), graph.output)


def _operation(message: pb.Operation, node_id: str, path: str) -> Operation:
    op = TABLE.get(message.op)  # an unknown op is the engine's to refuse, naming the node
    attrs: dict[str, Any] = {}
    for name in sorted(message.attrs):
        attr_path = f"{path}.attrs[{short_name(name)}]"
        value = message.attrs[name]
        which = value.WhichOneof("value")
        spec = op.attrs.get(name) if op is not None else None
        accepted = ATTR_KINDS[spec.kind].wire if spec is not None else None
        if which is not None and spec is not None and accepted is not None and (
                which not in accepted):
            raise InvalidField(attr_path, f"{message.op}'s attribute {name!r} is of kind "
                               f"{spec.kind!r}, which takes {' or '.join(accepted)}; got "
                               f"{which}", node=node_id)
        attrs[name] = attr_from_proto(value, field=attr_path, node=node_id)
    return Operation(node_id, message.op, tuple(message.inputs), attrs)


def graph_to_proto(graph: Graph) -> pb.Graph:
    """The engine's ``Graph`` as a wire graph (what a client, or a test, sends)."""
    nodes = []
    for node in graph.nodes:
        if isinstance(node, Leaf):
            nodes.append(pb.Node(id=node.id, leaf=node.name))
        elif isinstance(node, Constant):
            nodes.append(pb.Node(id=node.id, constant=tensor_to_proto(node.value)))
        else:
            attrs = {}
            for name, value in node.attrs.items():
                encoded = attr_to_proto(value)
                if encoded is None:
                    continue  # None: absent
                attrs[name] = encoded
            nodes.append(pb.Node(id=node.id, op=pb.Operation(op=node.op, inputs=node.inputs,
                                                             attrs=attrs)))
    return pb.Graph(nodes=nodes, output=graph.output)


# --- sessions and leaves -------------------------------------------------------------------------

# Each LeafView as (with the value, with the grad).
_LEAF_VIEWS: Mapping[int, tuple[bool, bool]] = {
    pb.LEAF_VIEW_UNSPECIFIED: (True, True),
    pb.LEAF_VIEW_FULL: (True, True),
    pb.LEAF_VIEW_VALUE: (True, False),
    pb.LEAF_VIEW_GRAD: (False, True),
}


def leaf_to_proto(name: str, leaf: LeafState, out: pb.Leaf | None = None, *,
                  with_value: bool = True, with_grad: bool = True,
                  as_values: bool = False) -> pb.Leaf:
    """A session leaf (into ``out`` when given), with its value and grad unless told otherwise;
    ``grad`` absent when it is None. ``as_values``: see ``tensor_to_proto``."""
    message = pb.Leaf() if out is None else out
    message.name = name
    message.requires_grad = leaf.requires_grad
    message.version = leaf.version
    if with_value:
        tensor_to_proto(leaf.value, message.value, as_values=as_values)
    if with_grad and leaf.grad is not None:
        tensor_to_proto(leaf.grad, message.grad, as_values=as_values)
    return message


def leaf_view_from_proto(value: int, *, field: str = "view") -> tuple[bool, bool]:
    """The ``LeafView`` asked for, as (with the value, with the grad); UNSPECIFIED is FULL, an
    unknown value is refused."""
    try:
        return _LEAF_VIEWS[value]
    except KeyError:
        raise InvalidField(field, f"unknown leaf view {value}; expected one of "
                           f"{', '.join(pb.LeafView.keys())}") from None


def leaf_info_to_proto(name: str, leaf: LeafState) -> pb.LeafInfo:
    """A session leaf without its value and grad."""
    return pb.LeafInfo(name=name, shape=leaf.value.shape,
                       dtype=dtype_to_proto(dtype_of(leaf.value)),
                       requires_grad=leaf.requires_grad, has_grad=leaf.grad is not None,
                       version=leaf.version)


def session_to_proto(session: Session, expire_time: float | None = None) -> pb.Session:
    """A session's settings; ``expire_time`` in seconds since the epoch (None: not sent)."""
    message = pb.Session(id=session.id, dtype=dtype_to_proto(session.dtype),
                         check_mode=check_mode_to_proto(session.check),
                         idle_ttl=duration_to_proto(session.idle_ttl))
    if expire_time is not None:
        message.expire_time.CopyFrom(timestamp_to_proto(expire_time))
    return message


def _session_now_to_proto(session: Session) -> pb.Session:
    # This call restarted the session's idle timer.
    return session_to_proto(session, expire_time=time.time() + session.idle_ttl)


_NANOS_PER_SECOND = 1_000_000_000


def _split(seconds: float) -> tuple[int, int]:
    whole = math.floor(seconds)
    nanos = round((seconds - whole) * 1e9)
    if nanos >= _NANOS_PER_SECOND:
        whole, nanos = whole + 1, nanos - _NANOS_PER_SECOND
    return whole, nanos


def duration_to_proto(seconds: float) -> duration_pb2.Duration:
    """Non-negative seconds as a ``Duration``."""
    whole, nanos = _split(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=nanos)


def timestamp_to_proto(seconds: float) -> timestamp_pb2.Timestamp:
    """Seconds since the epoch as a ``Timestamp``."""
    whole, nanos = _split(seconds)
    return timestamp_pb2.Timestamp(seconds=whole, nanos=nanos)


def duration_from_proto(duration: duration_pb2.Duration, *, field: str) -> float | None:
    """A requested duration in seconds; None when absent or zero (the server's default).
    Negative ones are refused, and so are malformed ones (google.protobuf.Duration's rules:
    ``nanos`` within ±999,999,999 and of the same sign as ``seconds``)."""
    if not -_NANOS_PER_SECOND < duration.nanos < _NANOS_PER_SECOND:
        raise InvalidField(f"{field}.nanos", f"{duration.nanos:,} nanoseconds; a Duration's "
                           "nanos are within ±999,999,999")
    if duration.seconds * duration.nanos < 0:
        raise InvalidField(field, f"seconds {duration.seconds} and nanos {duration.nanos} have "
                           "different signs; a Duration's two parts share one sign")
    seconds = duration.seconds + duration.nanos / 1e9
    if seconds < 0:
        raise InvalidField(field, f"{seconds:g} seconds; a duration must not be negative")
    return seconds or None


# --- requests: each decoded once into its command ------------------------------------------------

def _session_id(value: str) -> str:
    """A request's session_id, which every session call needs."""
    if not value:
        raise InvalidField("session_id", "the session's id is required (CreateSession gives one)")
    return value


@dataclass(slots=True)
class _WireGraph:
    """A request's graph, decoded only when the service has no validated copy of it."""

    message: pb.Graph
    limits: Limits
    key: bytes
    field: str = "graph"
    grads: bool = False  # a Run's graph: it may read grads

    def decode(self, default_dtype: DType) -> Graph:
        return graph_from_proto(self.message, self.limits, default_dtype=default_dtype,
                                field=self.field, grads=self.grads)

    def field_of(self, node: str) -> str:
        for index, candidate in enumerate(self.message.nodes):
            if candidate.id == node:
                return f"graph.nodes[{index}]"
        return ""


def _graph_source(graph: pb.Graph, limits: Limits, field: str = "graph",
                  grads: bool = False) -> _WireGraph:
    return _WireGraph(graph, limits, graph.SerializeToString(deterministic=True), field, grads)


@dataclass(slots=True)
class _WireTensor:
    """A request's tensor whose dtype, when it names none, is the session's."""

    message: pb.Tensor
    field: str
    max_elements: int
    finite: bool = True  # NaN and ±inf refused (all but Run's values)

    def decode(self, default_dtype: DType) -> np.ndarray:
        return tensor_from_proto(self.message, field=self.field, default_dtype=default_dtype,
                                 max_elements=self.max_elements, finite=self.finite)


def create_session_from_proto(request: pb.CreateSessionRequest) -> commands.CreateSession:
    return commands.CreateSession(
        dtype=dtype_from_proto(request.dtype, default=FLOAT32, field="dtype"),
        check=check_mode_from_proto(request.check_mode),
        idle_ttl=duration_from_proto(request.idle_ttl, field="idle_ttl"),
        request_id=idempotency.create_request_id(request.request_id))


def get_session_from_proto(request: pb.GetSessionRequest) -> commands.GetSession:
    return commands.GetSession(_session_id(request.session_id))


def delete_session_from_proto(request: pb.DeleteSessionRequest) -> commands.DeleteSession:
    return commands.DeleteSession(_session_id(request.session_id),
                                  idempotency.request_id(request.request_id))


def put_leaf_from_proto(request: pb.PutLeafRequest, limits: Limits) -> commands.PutLeaf:
    key = idempotency.key(request, request.request_id)
    return commands.PutLeaf(
        session_id=_session_id(request.session_id), name=request.name,
        value=(_WireTensor(request.value, "value", limits.max_elements)
               if request.HasField("value") else None),
        requires_grad=request.requires_grad if request.HasField("requires_grad") else None,
        expected_version=(request.expected_version if request.HasField("expected_version")
                          else None),
        key=key)


def get_leaf_from_proto(request: pb.GetLeafRequest) -> commands.GetLeaf:
    with_value, with_grad = leaf_view_from_proto(request.view)
    return commands.GetLeaf(_session_id(request.session_id), request.name, with_value,
                            with_grad, request.answer_as_values)


def zero_grad_from_proto(request: pb.ZeroGradRequest) -> commands.ZeroGrad:
    session_id = _session_id(request.session_id)
    return commands.ZeroGrad(session_id, tuple(request.names), request.set_to_none,
                             idempotency.key(request, request.request_id))


def evaluate_from_proto(request: pb.EvaluateRequest, limits: Limits) -> commands.Evaluate:
    return commands.Evaluate(_session_id(request.session_id), _graph_source(request.graph, limits),
                             tuple(request.nodes), request.answer_as_values)


def backward_from_proto(request: pb.BackwardRequest, limits: Limits) -> commands.Backward:
    key = idempotency.key(request, request.request_id)
    return commands.Backward(
        session_id=_session_id(request.session_id),
        graph=_graph_source(request.graph, limits),
        gradient=(tensor_from_proto(request.gradient, field="gradient", default_dtype=FLOAT64,
                                    max_elements=limits.max_elements)
                  if request.HasField("gradient") else None),
        # Most retain nothing, and copying even an empty repeated field costs a microsecond.
        retain=tuple(request.retain) if request.retain else (),
        check=check_mode_from_proto(request.check_mode),
        as_values=request.answer_as_values,
        key=key)


def differentiate_from_proto(request: pb.DifferentiateRequest,
                             limits: Limits) -> commands.Differentiate:
    source: Graph | str
    which = request.WhichOneof("source")
    if which == "formula":
        source = request.formula
    elif which == "graph":
        source = graph_from_proto(request.graph, limits)
    else:
        raise InvalidArgument("give a graph or a formula")
    values = {name: tensor_from_proto(tensor, field=map_field("values", name),
                                      default_dtype=FLOAT32, max_elements=limits.max_elements)
              for name, tensor in request.values.items()}
    seed = (tensor_from_proto(request.seed, field="seed", default_dtype=FLOAT64,
                              max_elements=limits.max_elements)
            if request.HasField("seed") else None)
    return commands.Differentiate(
        source=source, values=values, wrt=tuple(request.wrt), seed=seed,
        check=check_mode_from_proto(request.check_mode), hessian=request.hessian,
        as_values=request.answer_as_values)


def run_from_proto(request: pb.RunRequest, limits: Limits, max_steps: int) -> commands.Run:
    if len(request.steps) > max_steps:
        raise FieldLimitExceeded("steps", f"{len(request.steps):,} steps; a Run takes at most "
                                 f"{max_steps:,}", limit="max_steps")
    steps = []
    for i, step in enumerate(request.steps):
        kind = step.WhichOneof("kind")
        if kind is None:
            error = InvalidField(f"steps[{i}]", "no kind set: a step is one of "
                                 f"{', '.join(f.name for f in pb.Step.DESCRIPTOR.fields)}")
            error.step = i
            raise error
        try:
            steps.append((kind, _step_from_proto(getattr(step, kind), kind,
                                                 f"steps[{i}].{kind}", limits)))
        except CrossgradError as error:
            error.step = i  # the index of the step, for ErrorInfo's metadata
            raise
    return commands.Run(_session_id(request.session_id), tuple(steps),
                        request.answer_as_values, idempotency.key(request, request.request_id))


def _step_from_proto(step: Any, kind: str, path: str, limits: Limits) -> commands.Step:
    """One of a Run's steps, as its command (``path``: where it is in the request)."""
    def graph(message: pb.Graph) -> tuple[_WireGraph, tuple[str, ...]]:
        reads = tuple(node.grad for node in message.nodes if node.WhichOneof("kind") == "grad")
        return _graph_source(message, limits, f"{path}.graph", grads=True), reads

    if kind == "create":
        if not step.HasField("value"):
            raise InvalidField(f"{path}.value", "a new leaf needs a value")
        return commands.CreateLeafStep(step.name, _WireTensor(step.value, f"{path}.value",
                                                              limits.max_elements, finite=False),
                                       step.requires_grad)
    if kind == "keep":
        source, reads = graph(step.graph)
        return commands.KeepStep(source, reads, tuple((kept.node, kept.leaf)
                                                      for kept in step.nodes))
    if kind == "update":
        source, reads = graph(step.graph)
        return commands.UpdateLeafStep(step.leaf, source, reads)
    if kind == "update_grad":
        if not step.HasField("graph"):
            return commands.UpdateGradStep(step.leaf, None, ())
        source, reads = graph(step.graph)
        return commands.UpdateGradStep(step.leaf, source, reads)
    if kind == "set_requires_grad":
        return commands.SetRequiresGradStep(step.leaf, step.requires_grad)
    if kind == "zero_grad":
        return commands.ZeroGradStep(tuple(step.leaves), step.set_to_none)
    if kind == "free":
        return commands.FreeStep(tuple(step.leaves))
    if kind == "backward":
        source, reads = graph(step.graph)
        gradient = (tensor_from_proto(step.gradient, field=f"{path}.gradient", finite=False,
                                      default_dtype=FLOAT64, max_elements=limits.max_elements)
                    if step.HasField("gradient") else None)
        return commands.BackwardStep(source, reads, gradient, tuple(step.retain),
                                     check_mode_from_proto(step.check_mode), step.return_grads,
                                     step.grads_only)
    source, reads = graph(step.graph)
    return commands.ReadStep(source, reads, tuple(step.nodes))


# --- answers: each result encoded into its response ----------------------------------------------

def create_session_to_proto(session: Session) -> pb.CreateSessionResponse:
    return pb.CreateSessionResponse(session=_session_now_to_proto(session))


def get_session_to_proto(session: Session) -> pb.GetSessionResponse:
    return pb.GetSessionResponse(
        session=_session_now_to_proto(session),
        leaves=[leaf_info_to_proto(n, leaf) for n, leaf in sorted(session.leaves.items())])


def delete_session_to_proto() -> pb.DeleteSessionResponse:
    return pb.DeleteSessionResponse()


def put_leaf_to_proto(result: commands.PutLeafResult) -> pb.PutLeafResponse:
    return pb.PutLeafResponse(leaf=leaf_info_to_proto(result.name, result.leaf),
                              created=result.created)


def get_leaf_to_proto(result: commands.GetLeafResult) -> pb.GetLeafResponse:
    response = pb.GetLeafResponse()
    leaf_to_proto(result.name, result.leaf, response.leaf, with_value=result.with_value,
                  with_grad=result.with_grad, as_values=result.as_values)
    return response


def zero_grad_to_proto(result: commands.ZeroGradResult) -> pb.ZeroGradResponse:
    return pb.ZeroGradResponse(leaves=[leaf_info_to_proto(n, leaf) for n, leaf in result.leaves])


def evaluate_to_proto(result: commands.EvaluateResult,
                      response: pb.EvaluateResponse | None = None) -> pb.EvaluateResponse:
    response = pb.EvaluateResponse() if response is None else response
    for node in result.values:
        out = response.values.add(id=node.id, requires_grad=node.requires_grad,
                                  grad_fn=node.grad_fn)
        tensor_to_proto(node.value, out.value, as_values=result.as_values)
    return response


def backward_to_proto(result: commands.BackwardResult, response: pb.BackwardResponse | None = None,
                      *, with_grads: bool = True) -> pb.BackwardResponse:
    """A backward's answer (into ``response`` when given); ``with_grads``: the leaves' grads too."""
    checked, as_values = result.checked, result.as_values
    # Built in place: a submessage given to a constructor is copied.
    response = pb.BackwardResponse() if response is None else response
    tensor_to_proto(checked.value, response.output, as_values=as_values)
    for name, leaf in sorted(result.leaves.items()):
        if leaf.grad is not None:
            message = response.leaves.add(name=name, version=leaf.version,
                                          closed_form=checked.closed_forms.get(name, ""),
                                          latex=checked.latex.get(name, ""))
            if with_grads:
                tensor_to_proto(leaf.grad, message.grad, as_values=as_values)
    for node_id, grad in result.retained.items():
        tensor_to_proto(grad, response.retained[node_id], as_values=as_values)
    check_report_to_proto(checked.check, response.check, notes=checked.notes)
    return response


def run_to_proto(result: commands.RunResult) -> pb.RunResponse:
    response = pb.RunResponse()
    for step in result.results:
        message = response.results.add()
        if isinstance(step, commands.BackwardStepResult):
            backward_to_proto(step.result, message.backward, with_grads=step.return_grads)
        elif step is not None:
            evaluate_to_proto(step, message.read)
    return response


def differentiate_to_proto(answer: commands.DifferentiateResult) -> pb.DifferentiateResponse:
    """``differentiate``'s result on the wire: one ``Gradient`` per leaf of ``answer.order``
    (without a value for a leaf the output does not depend on), and the Hessian's blocks
    row-major over that order when there is a Hessian.

    The result's notes (why no closed form is shown) are added to the check's reason.
    ``answer.as_values``: tensors as numbers (see ``tensor_to_proto``).
    """
    result, order = answer.result, answer.order
    as_values = answer.as_values
    gradients = []
    for name in order:
        gradient = pb.Gradient(leaf=name, closed_form=result.closed_forms.get(name, ""),
                               latex=result.latex.get(name, ""))
        value = result.gradients.get(name)
        if value is not None:
            tensor_to_proto(value, gradient.value, as_values=as_values)
        gradients.append(gradient)
    check = check_report_to_proto(result.check, notes=result.notes)
    response = pb.DifferentiateResponse(gradients=gradients, check=check)
    tensor_to_proto(result.value, response.output, as_values=as_values)
    hessian = result.hessian
    if hessian is not None:
        blocks = []
        for row in order:
            for column in order:
                block = hessian.values.get((row, column))
                if block is None:
                    continue  # no closed form (check OFF, or past a cap): the check says why
                message = pb.HessianBlock(
                    row=row, column=column,
                    closed_form=hessian.closed_forms.get((row, column), ""),
                    latex=hessian.latex.get((row, column), ""))
                tensor_to_proto(block, message.value, as_values=as_values)
                blocks.append(message)
        response.hessian.CopyFrom(pb.Hessian(blocks=blocks,
                                             check=check_report_to_proto(hessian.check)))
    return response


# The changes' answers, which a retried request_id reads back.
PUT_LEAF = Answer(put_leaf_to_proto, pb.PutLeafResponse.FromString)
ZERO_GRAD = Answer(zero_grad_to_proto, pb.ZeroGradResponse.FromString)
BACKWARD = Answer(backward_to_proto, pb.BackwardResponse.FromString)
RUN = Answer(run_to_proto, pb.RunResponse.FromString)


# --- ListOps -------------------------------------------------------------------------------------

@functools.cache
def _ops() -> pb.ListOpsResponse:
    ops = []
    for name in sorted(TABLE):
        op = TABLE[name]
        attrs = []
        for attr_name, attr in op.attrs.items():
            info = pb.AttrInfo(name=attr_name, kind=attr.kind, required=attr.required)
            default = attr_to_proto(attr.default)
            if default is not None:
                info.default_value.CopyFrom(default)
            attrs.append(info)
        ops.append(pb.OpInfo(name=name, arity=op.arity, attrs=attrs,
                             grad_fn=op.tensor_grad_fn, kink=op.kink, variadic=op.variadic))
    return pb.ListOpsResponse(ops=ops)


def list_ops_to_proto() -> pb.ListOpsResponse:
    """The op table, sorted by name. ``grad_fn`` is PyTorch's name for the op on tensor operands
    (matmul: on matrices); NodeValue.grad_fn gives the name a particular call gets."""
    response = pb.ListOpsResponse()
    response.CopyFrom(_ops())
    return response
