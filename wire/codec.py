"""Values on the wire: dtypes, tensors, op attributes and check reports <-> their messages.

The codec both sides of crossgrad's wire API share: the server's ``serde`` (which decodes each
request into a command) and the SDK build and read these messages only through it. Pure
functions; every refusal is an ``InvalidField`` naming the request field's path, or past a size
limit a ``FieldLimitExceeded`` naming the limit, raised before anything is allocated.

Tensors arrive as shape + dtype + raw little-endian bytes (``data``) or as numbers (``values``)
and become native-endian, C-contiguous, read-only NumPy arrays; they leave as ``data``, or as
``values`` when asked for numbers (``answer_as_values``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from crossgrad.engine import dtypes
from crossgrad.engine.check import CheckMode, CheckReport, Method, Status
from crossgrad.engine.dtypes import DType
from crossgrad.engine.errors import InvalidArgument
from crossgrad.v1 import crossgrad_pb2 as pb

from .errors import FieldLimitExceeded, InvalidField

FLOAT32, FLOAT64, INT64, BOOL = dtypes.float32, dtypes.float64, dtypes.int64, dtypes.bool_

_MAX_NDIM = 64  # NumPy's limit on dimensions
_INT64_MIN, _INT64_END = -(2.0**63), 2.0**63  # the doubles that convert to int64


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


# --- attributes -----------------------------------------------------------------------------------

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


_METHODS_FROM_PROTO: Mapping[int, Method] = {value: method for method, value in _METHODS.items()}
_STATUSES_FROM_PROTO: Mapping[int, Status] = {value: status
                                              for status, value in _STATUSES.items()}


def check_report_from_proto(message: pb.CheckReport) -> CheckReport:
    """A check report as the server sent it."""
    return CheckReport(_METHODS_FROM_PROTO[message.method], _STATUSES_FROM_PROTO[message.status],
                       message.max_abs_error, message.max_rel_error, message.atol, message.rtol,
                       message.reason)
