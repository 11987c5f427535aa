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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from crossgrad.engine import dtypes
from crossgrad.engine.check import CheckMode, CheckReport, Method, Status
from crossgrad.engine.dtypes import DType
from crossgrad.engine.errors import CrossgradError, InvalidArgument, short_name
from crossgrad.engine.graph import Constant, Graph, Leaf, Limits, Node, Operation
from crossgrad.engine.ops import ATTR_KINDS, TABLE
from crossgrad.v1 import crossgrad_pb2 as pb
from google.protobuf import duration_pb2, timestamp_pb2

from . import commands, idempotency
from .commands import Answer
from .errors import FieldLimitExceeded, InvalidField
from .sessions import LeafState, Session, grad_leaf

FLOAT32, FLOAT64, INT64, BOOL = dtypes.float32, dtypes.float64, dtypes.int64, dtypes.bool_

_MAX_NDIM = 64  # NumPy's limit on dimensions
_INT64_MIN, _INT64_END = -(2.0**63), 2.0**63  # the doubles that convert to int64


def map_field(field: str, key: str) -> str:
    """The path of a map entry or a named item, e.g. ``values['x']``."""
    return f"{field}[{short_name(key)}]"


# --- dtypes --------------------------------------------------------------------------------------

DTYPES: Mapping[int, DType] = {
    pb.DTYPE_FLOAT32: FLOAT32,
    pb.DTYPE_FLOAT64: FLOAT64,
    pb.DTYPE_INT64: INT64,
    pb.DTYPE_BOOL: BOOL,
}
_DTYPE_TO_PROTO: Mapping[DType, pb.Dtype] = {
    FLOAT32: pb.DTYPE_FLOAT32,
    FLOAT64: pb.DTYPE_FLOAT64,
    INT64: pb.DTYPE_INT64,
    BOOL: pb.DTYPE_BOOL,
}
# The wire's byte order for each dtype (bool is one byte: no order).
_LITTLE_ENDIAN: Mapping[DType, np.dtype[Any]] = {
    FLOAT32: np.dtype("<f4"), FLOAT64: np.dtype("<f8"), INT64: np.dtype("<i8"),
    BOOL: np.dtype("|b1"),
}


def dtype_from_proto(value: int, *, default: DType | None, field: str,
                     node: str | None = None) -> DType:
    """The engine dtype for a wire ``Dtype``; DTYPE_UNSPECIFIED gives ``default``, or is refused
    when there is none."""
    if value == pb.DTYPE_UNSPECIFIED:
        if default is None:
            raise InvalidField(field, "a dtype is required here (DTYPE_UNSPECIFIED is allowed "
                               "only in the values form)", node=node)
        return default
    try:
        return DTYPES[value]
    except KeyError:
        raise InvalidField(field, f"unknown dtype {value}; expected one of "
                           f"{', '.join(pb.Dtype.Name(k) for k in DTYPES)}",
                           node=node) from None


def dtype_to_proto(dtype: DType) -> pb.Dtype:
    """The wire ``Dtype`` of an engine dtype."""
    return _DTYPE_TO_PROTO[dtype]


def dtype_of(array: np.ndarray) -> DType:
    """The engine dtype of an array the server holds (float16 widens, other ints are int64)."""
    return dtypes.from_numpy(array.dtype)


# --- tensors -------------------------------------------------------------------------------------

def tensor_from_proto(tensor: pb.Tensor, *, field: str, default_dtype: DType | None = None,
                      max_elements: int, finite: bool = True,
                      node: str | None = None) -> np.ndarray:
    """A wire tensor as a native-endian, C-contiguous, read-only array, checked as the proto says.

    ``field``: the tensor's path in the request, for messages. ``default_dtype``: what
    DTYPE_UNSPECIFIED means in the values form (None: it is refused). ``max_elements``: the most
    elements a tensor may hold (``FieldLimitExceeded`` past it, before anything is allocated).
    ``finite``: refuse NaN and ±inf (client values; server results may hold them).
    """
    shape = _shape(tensor.shape, field, max_elements, node)
    numel = math.prod(shape)
    data, values = tensor.data, tensor.values
    if data and values:
        raise InvalidField(field, f"both data ({len(data)} bytes) and values ({len(values)} "
                           "numbers) are set; send the elements in one of them", node=node)
    if data:
        if tensor.dtype == pb.DTYPE_UNSPECIFIED:
            raise InvalidField(f"{field}.dtype", "a dtype is required with data", node=node)
        dtype = dtype_from_proto(tensor.dtype, default=None, field=f"{field}.dtype", node=node)
        array = _from_data(data, shape, numel, dtype, f"{field}.data", node)
    else:
        if not values and numel:
            raise InvalidField(field, f"shape {list(shape)} holds {numel} element"
                               f"{'s' if numel > 1 else ''}, but neither data nor values is "
                               "set", node=node)
        dtype = dtype_from_proto(tensor.dtype, default=default_dtype, field=f"{field}.dtype",
                                 node=node)
        if values:
            array = _from_values(values, shape, numel, dtype, f"{field}.values", node, finite)
        else:  # no elements, none sent
            array = np.zeros(shape, dtype.numpy)
    if finite and dtype.is_floating_point and not np.isfinite(array).all():
        at = int(np.flatnonzero(~np.isfinite(array))[0])
        where = f"{field}.data" if data else f"{field}.values[{at}]"
        raise InvalidField(where, f"element {_index(at, shape)} is {float(array.flat[at])}; values "
                           "sent to the server must be finite", node=node)
    array.flags.writeable = False
    return array


def _shape(dims: Sequence[int], field: str, max_elements: int,
           node: str | None) -> tuple[int, ...]:
    """The shape, every size >= 0, within the element limit; no product larger than the limit
    is ever formed."""
    if len(dims) > _MAX_NDIM:
        raise InvalidField(f"{field}.shape", f"{len(dims)} dimensions; at most {_MAX_NDIM} are "
                           "supported", node=node)
    shape = tuple(int(d) for d in dims)
    for i, size in enumerate(shape):
        if size < 0:
            raise InvalidField(f"{field}.shape[{i}]", f"size {size}; sizes must be >= 0",
                               node=node)
    # The non-zero sizes bound the tensor even when another size is 0 (NumPy refuses an empty
    # array whose other sizes overflow, and every size must stay a sane allocation).
    product = 1
    for size in shape:
        product *= size or 1
        if product > max_elements:
            raise FieldLimitExceeded(f"{field}.shape", f"shape {list(shape)} is past the limit "
                                     f"of {max_elements} elements per tensor",
                                     limit="max_elements", node=node)
    return shape


def _index(flat: int, shape: tuple[int, ...]) -> list[int]:
    return [int(i) for i in np.unravel_index(flat, shape)] if shape else []


def _from_data(data: bytes, shape: tuple[int, ...], numel: int, dtype: DType, field: str,
               node: str | None) -> np.ndarray:
    expected = numel * dtype.itemsize
    if len(data) != expected:
        raise InvalidField(field, f"data holds {len(data)} bytes; shape {list(shape)} of "
                           f"{dtype.name} needs {expected}", node=node)
    if dtype is BOOL:
        raw = np.frombuffer(data, dtype=np.uint8)
        bad = raw > 1
        if bad.any():
            at = int(np.argmax(bad))
            raise InvalidField(field, f"byte {at} (element {_index(at, shape)}) is "
                               f"0x{int(raw[at]):02x}; a bool is 0x00 or 0x01", node=node)
        return raw.astype(np.bool_).reshape(shape)  # the one copy
    wire = np.frombuffer(data, dtype=_LITTLE_ENDIAN[dtype])
    return wire.astype(dtype.numpy).reshape(shape)  # the one copy, in native byte order


def _from_values(values: Iterable[float], shape: tuple[int, ...], numel: int, dtype: DType,
                 field: str, node: str | None, finite: bool) -> np.ndarray:
    numbers = np.array(values, dtype=np.float64)
    if numbers.size != numel:
        raise InvalidField(field, f"{numbers.size} numbers; shape {list(shape)} needs {numel}",
                           node=node)
    if dtype is FLOAT64:
        return numbers.reshape(shape)
    if dtype is FLOAT32:
        with np.errstate(over="ignore"):
            array = numbers.astype(np.float32)
        if finite:
            overflow = np.isfinite(numbers) & ~np.isfinite(array)
            if overflow.any():
                at = int(np.argmax(overflow))
                raise InvalidField(f"{field}[{at}]", f"{float(numbers[at])!r} is outside float32's "
                                   "range", node=node)
        return array.reshape(shape)
    if dtype is INT64:
        with np.errstate(invalid="ignore"):
            ok = (numbers == np.trunc(numbers)) & (numbers >= _INT64_MIN) & (numbers < _INT64_END)
        if not ok.all():
            at = int(np.argmin(ok))
            raise InvalidField(f"{field}[{at}]", f"{float(numbers[at])!r} is not an int64; an "
                               "int64 tensor takes integral values only", node=node)
        return numbers.astype(np.int64).reshape(shape)
    ok = (numbers == 0) | (numbers == 1)
    if not ok.all():
        at = int(np.argmin(ok))
        raise InvalidField(f"{field}[{at}]", f"{float(numbers[at])!r} is not a bool; a bool tensor "
                           "takes 0 and 1 only", node=node)
    return (numbers == 1).reshape(shape)


def tensor_to_proto(array: npt.ArrayLike, out: pb.Tensor | None = None, *,
                    as_values: bool = False) -> pb.Tensor:
    """An array (any byte order or layout) as a wire tensor: shape, dtype, and the elements as
    raw little-endian ``data``, or as numbers in ``values`` when ``as_values`` (for clients that
    cannot decode bytes: grpcurl, JSON).

    ``out``: a tensor field of a message to fill in place (protobuf copies a submessage given to
    a constructor: a megabyte each time for a large tensor). Float16 widens to float32, other
    integer types become int64; other dtypes raise TypeError (a server bug, never a client's).
    """
    array = np.asarray(array)
    dtype = dtype_of(array)
    tensor = pb.Tensor() if out is None else out
    if array.ndim or tensor.shape:  # a scalar into a new field (most outputs): nothing to set
        tensor.shape[:] = array.shape
    tensor.dtype = _DTYPE_TO_PROTO[dtype]
    if as_values:
        tensor.values[:] = array.astype(np.float64).ravel().tolist()
    else:
        wire = _LITTLE_ENDIAN[dtype]
        # Native arrays on a little-endian machine are already in the wire's order.
        tensor.data = (array if array.dtype == wire else array.astype(wire)).tobytes()
    return tensor


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


def attr_from_proto(value: pb.AttrValue, *, field: str, node: str | None = None) -> Any:
    """An ``AttrValue`` as an attribute value: number -> float (finite), integer -> int,
    integers -> a tuple of ints, flag -> bool."""
    which = value.WhichOneof("value")
    if which == "number":
        if not math.isfinite(value.number):
            raise InvalidField(field, f"{value.number} is not finite", node=node)
        return float(value.number)
    if which == "integer":
        return int(value.integer)
    if which == "integers":
        return tuple(int(i) for i in value.integers.values)
    if which == "flag":
        return bool(value.flag)
    raise InvalidField(field, "no value set", node=node)


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


def attr_to_proto(value: Any) -> pb.AttrValue | None:
    """An attribute value as an ``AttrValue`` (None: absent): bool -> flag, int -> integer,
    float -> number, a sequence of ints -> integers. Anything else raises InvalidArgument."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return pb.AttrValue(flag=bool(value))
    if isinstance(value, (int, np.integer)):
        if not _INT64_MIN <= value < _INT64_END:
            raise InvalidArgument(f"attribute value {value} is out of int64 range")
        return pb.AttrValue(integer=int(value))
    if isinstance(value, (float, np.floating)):
        return pb.AttrValue(number=float(value))
    if isinstance(value, (list, tuple)) and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
            and _INT64_MIN <= v < _INT64_END for v in value):
        return pb.AttrValue(integers=pb.IntList(values=[int(v) for v in value]))
    raise InvalidArgument(f"attribute value {value!r} has no wire form (a number, an int, a "
                          "list of ints or a bool)")


# --- the check -----------------------------------------------------------------------------------

_CHECK_MODES: Mapping[int, CheckMode] = {
    pb.CHECK_MODE_STRICT: CheckMode.STRICT,
    pb.CHECK_MODE_REPORT: CheckMode.REPORT,
    pb.CHECK_MODE_OFF: CheckMode.OFF,
}
_CHECK_MODE_TO_PROTO: Mapping[CheckMode, pb.CheckMode] = {
    CheckMode.STRICT: pb.CHECK_MODE_STRICT,
    CheckMode.REPORT: pb.CHECK_MODE_REPORT,
    CheckMode.OFF: pb.CHECK_MODE_OFF,
}
_METHODS: Mapping[Method, pb.CheckMethod] = {
    Method.SYMBOLIC: pb.CHECK_METHOD_SYMBOLIC,
    Method.FINITE_DIFFERENCE: pb.CHECK_METHOD_FINITE_DIFFERENCE,
    Method.NONE: pb.CHECK_METHOD_NONE,
}
_STATUSES: Mapping[Status, pb.CheckStatus] = {
    Status.AGREE: pb.CHECK_STATUS_AGREE,
    Status.DISAGREE: pb.CHECK_STATUS_DISAGREE,
    Status.SKIPPED: pb.CHECK_STATUS_SKIPPED,
    Status.SINGULAR: pb.CHECK_STATUS_SINGULAR,
}


def check_mode_from_proto(value: int, *, field: str = "check_mode") -> CheckMode | None:
    """The check mode asked for; None for CHECK_MODE_UNSPECIFIED (the session's, or STRICT)."""
    if value == pb.CHECK_MODE_UNSPECIFIED:
        return None
    try:
        return _CHECK_MODES[value]
    except KeyError:
        raise InvalidField(field, f"unknown check mode {value}; expected one of "
                           f"{', '.join(pb.CheckMode.Name(k) for k in _CHECK_MODES)}") from None


def check_mode_to_proto(mode: CheckMode) -> pb.CheckMode:
    return _CHECK_MODE_TO_PROTO[mode]


def check_report_to_proto(report: CheckReport, out: pb.CheckReport | None = None, *,
                          notes: Sequence[str] = ()) -> pb.CheckReport:
    """A check report on the wire (into ``out``, a message's field, when given); ``notes`` (why
    no closed form is shown, ...) follow its reason, each as a clause of its own."""
    message = pb.CheckReport() if out is None else out
    message.method = _METHODS[report.method]
    message.status = _STATUSES[report.status]
    message.max_abs_error = report.max_abs_error
    message.max_rel_error = report.max_rel_error
    message.atol = report.atol
    message.rtol = report.rtol
    message.reason = "; ".join(part for part in (report.reason, *notes) if part)
    return message


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
    grads: bool = False

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

    def decode(self, default_dtype: DType) -> np.ndarray:
        return tensor_from_proto(self.message, field=self.field, default_dtype=default_dtype,
                                 max_elements=self.max_elements)


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
                                                              limits.max_elements),
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
        gradient = (tensor_from_proto(step.gradient, field=f"{path}.gradient",
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
                             grad_fn=op.tensor_grad_fn, kink=op.kink))
    return pb.ListOpsResponse(ops=ops)


def list_ops_to_proto() -> pb.ListOpsResponse:
    """The op table, sorted by name. ``grad_fn`` is PyTorch's name for the op on tensor operands
    (matmul: on matrices); NodeValue.grad_fn gives the name a particular call gets."""
    response = pb.ListOpsResponse()
    response.CopyFrom(_ops())
    return response
