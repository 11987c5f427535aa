"""server/serde.py: tensors, graphs, reports, responses and sessions to and from the wire."""

from __future__ import annotations

import dataclasses
import math
import struct
import time
import tracemalloc
from typing import Any

import crossgrad.engine as cg
import numpy as np
import pytest
from crossgrad.engine import dtypes
from crossgrad.engine.check import CheckMode, CheckReport, Method, Status
from crossgrad.engine.dtypes import DType
from crossgrad.engine.errors import InvalidArgument, LimitExceeded
from crossgrad.engine.gradient_check import Result
from crossgrad.engine.graph import Constant, Graph, Leaf, Limits, Operation, validate
from crossgrad.engine.hessian import Hessian
from crossgrad.engine.ops import TABLE
from crossgrad.server import serde
from crossgrad.server.commands import (
    BackwardResult,
    DifferentiateResult,
    EvaluateResult,
    GetLeafResult,
    NodeValue,
    PutLeafResult,
    ZeroGradResult,
)
from crossgrad.server.sessions import LeafState, Session
from crossgrad.v1 import crossgrad_pb2 as pb
from crossgrad.wire import codec
from crossgrad.wire.errors import FieldLimitExceeded, InvalidField
from google.protobuf import duration_pb2, json_format

ALL_DTYPES = (dtypes.float32, dtypes.float64, dtypes.int64, dtypes.bool_)
SHAPES = ((), (0,), (5,), (2, 3, 4), (3, 0, 2))
MAX = 1_000_000


def wire(tensor: pb.Tensor) -> pb.Tensor:
    """The tensor as a receiver parses it off the wire."""
    return pb.Tensor.FromString(tensor.SerializeToString())


def decode(tensor: pb.Tensor, **kwargs: Any) -> np.ndarray:
    kwargs.setdefault("field", "t")
    kwargs.setdefault("max_elements", MAX)
    return serde.tensor_from_proto(wire(tensor), **kwargs)


def refusal(tensor: pb.Tensor, **kwargs: Any) -> InvalidField:
    with pytest.raises(InvalidField) as caught:
        decode(tensor, **kwargs)
    error = caught.value
    assert isinstance(error, InvalidArgument)
    assert error.message.startswith(error.field)
    return error


def sample(dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(7)
    if dtype is dtypes.bool_:
        return rng.random(shape) > 0.5
    if dtype is dtypes.int64:
        return rng.integers(-(2**62), 2**62, size=shape, dtype=np.int64)
    return rng.standard_normal(shape).astype(dtype.numpy)


def assert_clean(array: np.ndarray) -> None:
    """Native byte order, C-contiguous, read-only."""
    assert array.dtype.isnative
    assert array.flags.c_contiguous
    assert not array.flags.writeable


# --- dtypes and modes ----------------------------------------------------------------------------

def test_dtypes_map_both_ways() -> None:
    assert set(codec.DTYPES.values()) == set(ALL_DTYPES)
    for value, dtype in codec.DTYPES.items():
        assert serde.dtype_to_proto(dtype) == value
        assert serde.dtype_from_proto(value, default=None, field="dtype") is dtype
    assert serde.dtype_to_proto(dtypes.float32) == pb.DTYPE_FLOAT32
    assert serde.dtype_to_proto(dtypes.bool_) == pb.DTYPE_BOOL


def test_unspecified_dtype_takes_the_default_or_is_refused() -> None:
    assert serde.dtype_from_proto(pb.DTYPE_UNSPECIFIED, default=dtypes.float64,
                                  field="dtype") is dtypes.float64
    with pytest.raises(InvalidField, match=r"^dtype: a dtype is required") as caught:
        serde.dtype_from_proto(pb.DTYPE_UNSPECIFIED, default=None, field="dtype")
    assert caught.value.field == "dtype"
    with pytest.raises(InvalidField, match=r"^session\.dtype: unknown dtype 9"):
        serde.dtype_from_proto(9, default=dtypes.float32, field="session.dtype")


def test_check_modes_map_both_ways() -> None:
    assert serde.check_mode_from_proto(pb.CHECK_MODE_UNSPECIFIED) is None
    for mode in CheckMode:
        value = serde.check_mode_to_proto(mode)
        assert value != pb.CHECK_MODE_UNSPECIFIED
        assert serde.check_mode_from_proto(value) is mode
        assert serde.check_mode_to_proto(mode.value) == value  # a session's plain string
    assert serde.check_mode_to_proto("REPORT") == pb.CHECK_MODE_REPORT
    with pytest.raises(InvalidField, match=r"^check_mode: unknown check mode 7"):
        serde.check_mode_from_proto(7)


@pytest.mark.parametrize("method", list(Method))
@pytest.mark.parametrize("status", list(Status))
def test_report_to_proto(method: Method, status: Status) -> None:
    report = CheckReport(method, status, 1e-9, 2e-8, 1e-5, 1e-4, "why")
    message = pb.CheckReport.FromString(serde.check_report_to_proto(report).SerializeToString())
    assert pb.CheckMethod.Name(message.method) == f"CHECK_METHOD_{method.value}"
    assert pb.CheckStatus.Name(message.status) == f"CHECK_STATUS_{status.value}"
    assert (message.max_abs_error, message.max_rel_error) == (1e-9, 2e-8)
    assert (message.atol, message.rtol, message.reason) == (1e-5, 1e-4, "why")


# --- tensors: round trips ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_tensor_round_trip(dtype: DType, shape: tuple[int, ...]) -> None:
    array = sample(dtype, shape)
    tensor = serde.tensor_to_proto(array)
    assert list(tensor.shape) == list(shape)
    assert tensor.dtype == serde.dtype_to_proto(dtype)
    assert len(tensor.data) == array.size * dtype.itemsize
    assert not tensor.values
    back = decode(tensor)
    assert back.dtype == dtype.numpy
    assert back.shape == shape
    np.testing.assert_array_equal(back, array)
    assert_clean(back)


def test_data_is_little_endian() -> None:
    assert serde.tensor_to_proto(np.array(1.5)).data == struct.pack("<d", 1.5)
    assert serde.tensor_to_proto(np.float32(-2.0)).data == struct.pack("<f", -2.0)
    assert serde.tensor_to_proto(np.array([1, -2])).data == struct.pack("<2q", 1, -2)
    assert serde.tensor_to_proto(np.array([True, False])).data == b"\x01\x00"
    # decoding reads little-endian whatever the machine
    tensor = pb.Tensor(shape=[2], dtype=pb.DTYPE_INT64, data=struct.pack("<2q", 258, -3))
    np.testing.assert_array_equal(decode(tensor), [258, -3])


@pytest.mark.parametrize("dtype", ["<f4", ">f4", "<f8", ">f8", "<i8", ">i8"])
def test_big_endian_input_goes_out_little_endian(dtype: str) -> None:
    array = np.arange(6).reshape(2, 3).astype(dtype)
    tensor = serde.tensor_to_proto(array)
    little = np.dtype(dtype).newbyteorder("<")
    assert tensor.data == array.astype(little).tobytes()
    back = decode(tensor)
    np.testing.assert_array_equal(back, array)
    assert back.dtype.kind == array.dtype.kind and back.dtype.itemsize == array.dtype.itemsize
    assert_clean(back)


@pytest.mark.parametrize("view", [
    lambda a: a[:, ::2],
    lambda a: a.T,
    lambda a: np.asfortranarray(a),
    lambda a: a[::-1, 1:3],
], ids=["strided", "transposed", "fortran", "reversed"])
def test_non_contiguous_input_is_sent_row_major(view: Any) -> None:
    base = np.arange(20, dtype=np.float64).reshape(4, 5)
    array = view(base)
    tensor = serde.tensor_to_proto(array)
    assert list(tensor.shape) == list(array.shape)
    assert tensor.data == np.ascontiguousarray(array).astype("<f8").tobytes()
    np.testing.assert_array_equal(decode(tensor), array)


def test_other_numpy_types_widen() -> None:
    assert serde.tensor_to_proto(np.array([1, 2], np.int32)).dtype == pb.DTYPE_INT64
    assert serde.tensor_to_proto(np.array([1.0], np.float16)).dtype == pb.DTYPE_FLOAT32
    assert serde.tensor_to_proto(2.5).dtype == pb.DTYPE_FLOAT64
    with pytest.raises(TypeError):
        serde.tensor_to_proto(np.array([1j]))


def test_decoded_array_does_not_share_the_message_bytes() -> None:
    tensor = serde.tensor_to_proto(np.arange(4.0))
    array = serde.tensor_from_proto(tensor, field="t", max_elements=MAX)
    assert array.base is None or not isinstance(array.base, bytes)
    with pytest.raises(ValueError):
        array[0] = 1.0


# --- tensors: the values form --------------------------------------------------------------------

def test_values_form_for_each_dtype() -> None:
    f64 = decode(pb.Tensor(shape=[3], dtype=pb.DTYPE_FLOAT64, values=[0.1, -2, 3.5]))
    assert f64.dtype == np.float64 and f64.tolist() == [0.1, -2.0, 3.5]
    f32 = decode(pb.Tensor(shape=[1], dtype=pb.DTYPE_FLOAT32, values=[0.1]))
    assert f32.dtype == np.float32 and f32[0] == np.float32(0.1)  # rounded to nearest
    i64 = decode(pb.Tensor(shape=[2, 2], dtype=pb.DTYPE_INT64, values=[1, -2, 2.0**53, 0]))
    assert i64.dtype == np.int64 and i64.tolist() == [[1, -2], [2**53, 0]]
    b = decode(pb.Tensor(shape=[3], dtype=pb.DTYPE_BOOL, values=[1, 0, 1]))
    assert b.dtype == np.bool_ and b.tolist() == [True, False, True]
    for array in (f64, f32, i64, b):
        assert_clean(array)


def test_values_form_without_dtype_takes_the_default() -> None:
    tensor = pb.Tensor(shape=[2], values=[1.0, 2.0])
    assert decode(tensor, default_dtype=dtypes.float64).dtype == np.float64
    assert decode(tensor, default_dtype=dtypes.float32).dtype == np.float32
    error = refusal(tensor)
    assert error.field == "t.dtype"


def test_values_form_from_json_as_grpcurl_sends_it() -> None:
    tensor = json_format.Parse('{"shape": ["2", 1], "values": [1, 2.5]}', pb.Tensor())
    array = serde.tensor_from_proto(tensor, field="values['x']", default_dtype=dtypes.float32,
                                    max_elements=MAX)
    assert array.shape == (2, 1) and array.dtype == np.float32
    assert array.ravel().tolist() == [1.0, 2.5]


def test_scalar_in_values_form() -> None:
    array = decode(pb.Tensor(dtype=pb.DTYPE_FLOAT64, values=[4.0]))
    assert array.shape == () and array.item() == 4.0


@pytest.mark.parametrize("dtype", [pb.DTYPE_FLOAT32, pb.DTYPE_INT64, pb.DTYPE_BOOL])
def test_empty_tensor_needs_no_payload(dtype: pb.Dtype) -> None:
    array = decode(pb.Tensor(shape=[0, 3], dtype=dtype))
    assert array.shape == (0, 3)
    assert array.dtype == codec.DTYPES[dtype].numpy
    assert_clean(array)


def test_empty_tensor_without_dtype_takes_the_default() -> None:
    array = decode(pb.Tensor(shape=[2, 0]), default_dtype=dtypes.float64)
    assert array.shape == (2, 0) and array.dtype == np.float64


# --- tensors: refusals ---------------------------------------------------------------------------

def test_data_length_mismatch() -> None:
    tensor = pb.Tensor(shape=[2, 2], dtype=pb.DTYPE_FLOAT32, data=bytes(12))
    error = refusal(tensor, field="values['x']")
    assert error.field == "values['x'].data"
    assert error.message == ("values['x'].data: data holds 12 bytes; shape [2, 2] of float32 "
                             "needs 16")
    longer = refusal(pb.Tensor(shape=[2, 2], dtype=pb.DTYPE_FLOAT32, data=bytes(20)))
    assert longer.field == "t.data" and "holds 20 bytes" in longer.message


def test_values_count_mismatch() -> None:
    error = refusal(pb.Tensor(shape=[3], dtype=pb.DTYPE_FLOAT64, values=[1, 2]))
    assert error.field == "t.values"
    assert "2 numbers; shape [3] needs 3" in error.message


def test_negative_dimension() -> None:
    error = refusal(pb.Tensor(shape=[2, -1], dtype=pb.DTYPE_FLOAT64), field="seed")
    assert error.field == "seed.shape[1]"
    assert "size -1" in error.message and ">= 0" in error.message


def test_both_forms_are_refused() -> None:
    tensor = pb.Tensor(shape=[1], dtype=pb.DTYPE_FLOAT64, data=struct.pack("<d", 1.0),
                       values=[1.0])
    error = refusal(tensor, field="gradient")
    assert error.field == "gradient"
    assert "both data" in error.message


def test_no_payload_for_elements_is_refused() -> None:
    error = refusal(pb.Tensor(dtype=pb.DTYPE_FLOAT64))  # 0-d: one element
    assert error.field == "t"
    assert "neither data nor values" in error.message


def test_data_without_dtype_is_refused() -> None:
    error = refusal(pb.Tensor(shape=[1], data=struct.pack("<d", 1.0)),
                    default_dtype=dtypes.float64)
    assert error.field == "t.dtype"
    assert "required with data" in error.message


def test_unknown_dtype_is_refused() -> None:
    error = refusal(pb.Tensor(shape=[1], dtype=9, values=[1.0]))  # type: ignore[arg-type]
    assert error.field == "t.dtype"
    assert "unknown dtype 9" in error.message


def test_over_max_elements_without_allocating() -> None:
    tensor = pb.Tensor(shape=[10**12, 10**12], dtype=pb.DTYPE_FLOAT64)
    tracemalloc.start()
    try:
        with pytest.raises(FieldLimitExceeded) as caught:
            decode(tensor)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    error = caught.value
    assert isinstance(error, LimitExceeded)
    assert error.status == "RESOURCE_EXHAUSTED"
    assert error.field == "t.shape" and error.limit == "max_elements"
    assert f"limit of {MAX} elements" in error.message
    assert peak < 1_000_000


def test_limit_is_exact() -> None:
    ok = pb.Tensor(shape=[2, 5], dtype=pb.DTYPE_BOOL, data=bytes(10))
    assert decode(ok, max_elements=10).shape == (2, 5)
    with pytest.raises(FieldLimitExceeded):
        decode(pb.Tensor(shape=[11], dtype=pb.DTYPE_BOOL, data=bytes(11)), max_elements=10)


def test_empty_tensor_with_huge_dimensions_is_refused() -> None:
    # NumPy cannot even describe it, and no sane client sends it.
    with pytest.raises(FieldLimitExceeded):
        decode(pb.Tensor(shape=[0, 2**62, 2**62], dtype=pb.DTYPE_FLOAT64))


def test_too_many_dimensions() -> None:
    error = refusal(pb.Tensor(shape=[1] * 65, dtype=pb.DTYPE_FLOAT64, values=[1.0]))
    assert error.field == "t.shape"
    assert "65 dimensions" in error.message


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_data_is_refused(bad: float) -> None:
    array = np.array([[1.0, 2.0], [bad, 4.0]], dtype=np.float32)
    error = refusal(serde.tensor_to_proto(array), field="values['w']")
    assert error.field == "values['w'].data"
    assert "element [1, 0]" in error.message and "finite" in error.message
    # server-computed values may hold them
    back = decode(serde.tensor_to_proto(array), finite=False)
    np.testing.assert_array_equal(back, array)


def test_non_finite_values_are_refused() -> None:
    error = refusal(pb.Tensor(shape=[3], dtype=pb.DTYPE_FLOAT64, values=[1, math.nan, 2]))
    assert error.field == "t.values[1]"
    assert "nan" in error.message and "finite" in error.message


def test_float32_overflow_in_values_is_refused() -> None:
    error = refusal(pb.Tensor(shape=[2], dtype=pb.DTYPE_FLOAT32, values=[1.0, 1e300]))
    assert error.field == "t.values[1]"
    assert "float32" in error.message


def test_bool_bytes_must_be_0_or_1() -> None:
    error = refusal(pb.Tensor(shape=[3], dtype=pb.DTYPE_BOOL, data=b"\x01\x00\x02"))
    assert error.field == "t.data"
    assert "byte 2" in error.message and "0x02" in error.message


@pytest.mark.parametrize("bad", [0.5, 2.0, -1.0, math.nan])
def test_bool_values_must_be_0_or_1(bad: float) -> None:
    error = refusal(pb.Tensor(shape=[2], dtype=pb.DTYPE_BOOL, values=[1.0, bad]))
    assert error.field == "t.values[1]"
    assert "0 and 1 only" in error.message


@pytest.mark.parametrize("bad", [2.5, -0.1, math.nan, math.inf, 2.0**63, -(2.0**64)])
def test_int64_values_must_be_integral(bad: float) -> None:
    error = refusal(pb.Tensor(shape=[2], dtype=pb.DTYPE_INT64, values=[bad, 1.0]))
    assert error.field == "t.values[0]"
    assert "integral values only" in error.message


def test_int64_extremes_in_values() -> None:
    array = decode(pb.Tensor(shape=[2], dtype=pb.DTYPE_INT64, values=[-(2.0**63), 2.0**62]))
    assert array.tolist() == [-(2**63), 2**62]


def test_node_is_named_when_given() -> None:
    with pytest.raises(InvalidField) as caught:
        serde.tensor_from_proto(pb.Tensor(shape=[-1]), field="graph.nodes[0].constant",
                                max_elements=MAX, node="c")
    assert caught.value.node == "c"
    assert caught.value.message.startswith("graph.nodes[0].constant.shape[0] (node 'c'): ")


# --- graphs --------------------------------------------------------------------------------------

def every_kind_graph() -> Graph:
    """A leaf, constants of each dtype (0-d and not), and ops with every attribute kind."""
    return Graph((
        Leaf("x", "x"),
        Constant("half", np.array(0.5)),  # 0-d float64: a weak Python float
        Constant("two", np.array(2, dtype=np.int64)),  # 0-d int64: a weak Python int
        Constant("w", np.array([1.0, -2.0, 3.0], dtype=np.float32)),
        Constant("mask", np.array([True, False, True])),
        Operation("xw", "mul", ("x", "w")),
        Operation("p", "pow", ("xw", "two")),
        Operation("c", "clamp", ("p",), {"min": -1.5, "max": 4}),  # number? as number, integer
        Operation("m", "mul", ("c", "mask")),
        Operation("r", "reshape", ("m",), {"shape": (1, 3)}),  # dims as integers
        Operation("t", "transpose", ("r",), {"dim0": 0, "dim1": -1}),  # int
        Operation("q", "permute", ("t",), {"dims": (1, 0)}),
        Operation("s", "sum", ("q",), {"dim": (0,), "keepdim": True}),  # dims?, bool
        Operation("s2", "sum", ("s",), {"dim": ()}),  # dim=[]: present and empty
        Operation("mn", "mean", ("s2",), {"dim": 0}),  # dims? as one integer
        Operation("r2", "reshape", ("mn",), {"shape": 1}),  # dims as one integer
        Operation("all", "sum", ("r2",)),  # absent attributes: defaults
        Operation("out", "mul", ("all", "half")),
    ), "out")


def test_graph_round_trip_with_every_node_and_attribute_kind() -> None:
    graph = every_kind_graph()
    message = pb.Graph.FromString(serde.graph_to_proto(graph).SerializeToString())
    back = serde.graph_from_proto(message, Limits())
    assert back == graph
    for node in back.nodes:
        if isinstance(node, Constant):
            assert_clean(node.value)
    # 0-d constants stay 0-d arrays of their dtype (weak scalars to the engine)
    constants = {n.id: n.value for n in back.nodes if isinstance(n, Constant)}
    assert constants["half"].shape == () and constants["half"].dtype == np.float64
    assert constants["two"].shape == () and constants["two"].dtype == np.int64
    # attribute types survive: float, int, tuple, bool; absent stays absent
    ops = {n.id: n for n in back.nodes if isinstance(n, Operation)}
    assert type(ops["c"].attrs["min"]) is float and type(ops["c"].attrs["max"]) is int
    assert ops["s"].attrs["dim"] == (0,) and ops["s"].attrs["keepdim"] is True
    assert ops["s2"].attrs["dim"] == ()
    assert ops["mn"].attrs["dim"] == 0
    assert dict(ops["all"].attrs) == {}
    # and it is a real graph
    valid = validate(back, {"x": ((3,), dtypes.float32)})
    assert valid.types["out"].shape == ()
    assert valid.types["r2"].shape == (1,)
    # the proto round-trips too
    assert serde.graph_to_proto(back) == message


def test_graph_to_proto_encodes_attributes_by_kind() -> None:
    message = serde.graph_to_proto(every_kind_graph())
    attrs = {node.id: node.op.attrs for node in message.nodes if node.WhichOneof("kind") == "op"}
    assert attrs["c"]["min"].WhichOneof("value") == "number"
    assert attrs["c"]["max"].WhichOneof("value") == "integer"
    assert attrs["r"]["shape"].WhichOneof("value") == "integers"
    assert list(attrs["r"]["shape"].integers.values) == [1, 3]
    assert attrs["s"]["keepdim"].WhichOneof("value") == "flag"
    assert attrs["s2"]["dim"].WhichOneof("value") == "integers"  # [] is present
    assert list(attrs["s2"]["dim"].integers.values) == []
    assert attrs["t"]["dim1"].integer == -1
    assert len(attrs["all"]) == 0


def test_none_attributes_are_sent_as_absent() -> None:
    graph = Graph((Leaf("x", "x"), Operation("c", "clamp", ("x",), {"min": None, "max": 1.0})),
                  "c")
    message = serde.graph_to_proto(graph)
    assert set(message.nodes[1].op.attrs) == {"max"}


def test_attr_to_proto_refuses_what_has_no_wire_form() -> None:
    assert serde.attr_to_proto(None) is None
    assert serde.attr_to_proto(np.int64(3)) == pb.AttrValue(integer=3)
    assert serde.attr_to_proto(np.bool_(True)) == pb.AttrValue(flag=True)
    for bad in ("x", [1.5], [True], 2**64, {"a": 1}):
        with pytest.raises(InvalidArgument):
            serde.attr_to_proto(bad)


def node(id: str, **kind: Any) -> pb.Node:
    return pb.Node(id=id, **kind)


def op(id: str, name: str, *inputs: str, **attrs: pb.AttrValue) -> pb.Node:
    return pb.Node(id=id, op=pb.Operation(op=name, inputs=inputs, attrs=attrs))


def graph_refusal(graph: pb.Graph, limits: Limits | None = None) -> InvalidField:
    with pytest.raises(InvalidField) as caught:
        serde.graph_from_proto(pb.Graph.FromString(graph.SerializeToString()),
                               limits or Limits())
    error = caught.value
    assert error.message.startswith(error.field)
    return error


def test_node_without_kind_is_refused() -> None:
    error = graph_refusal(pb.Graph(nodes=[node("x", leaf="x"), node("ghost")], output="x"))
    assert error.field == "graph.nodes[1]" and error.node == "ghost"
    assert "(node 'ghost')" in error.message and "no kind set" in error.message


def test_too_many_nodes_is_refused_before_converting_them() -> None:
    nodes = [node(f"n{k}") for k in range(5)]  # none has a kind: converting would refuse
    with pytest.raises(FieldLimitExceeded) as caught:
        serde.graph_from_proto(pb.Graph(nodes=nodes, output="n0"), Limits(max_nodes=4))
    assert caught.value.field == "graph.nodes" and caught.value.limit == "max_nodes"
    assert "5 nodes; the limit is 4" in caught.value.message


def test_constants_past_the_total_element_limit() -> None:
    constant = serde.tensor_to_proto(np.zeros(3))
    graph = pb.Graph(nodes=[node("a", constant=constant), node("b", constant=constant)],
                     output="a")
    with pytest.raises(FieldLimitExceeded) as caught:
        serde.graph_from_proto(graph, Limits(max_total_elements=5))
    assert caught.value.field == "graph.nodes[1].constant" and caught.value.node == "b"
    assert serde.graph_from_proto(graph, Limits(max_total_elements=6)).output == "a"


def test_constant_errors_name_the_node_and_field() -> None:
    bad = pb.Tensor(shape=[2], dtype=pb.DTYPE_FLOAT64, data=bytes(9))
    error = graph_refusal(pb.Graph(nodes=[node("k", constant=bad)], output="k"))
    assert error.field == "graph.nodes[0].constant.data" and error.node == "k"
    nan = serde.tensor_to_proto(np.array([math.nan]))
    error = graph_refusal(pb.Graph(nodes=[node("k", constant=nan)], output="k"))
    assert "finite" in error.message and error.node == "k"
    big = pb.Tensor(shape=[1000], dtype=pb.DTYPE_BOOL, data=bytes(1000))
    with pytest.raises(FieldLimitExceeded):
        serde.graph_from_proto(pb.Graph(nodes=[node("k", constant=big)], output="k"),
                               Limits(max_elements=999))


def test_constant_in_values_form_takes_the_default_dtype() -> None:
    graph = pb.Graph(nodes=[node("k", constant=pb.Tensor(values=[2.5]))], output="k")
    for dtype in (dtypes.float32, dtypes.float64):
        (constant,) = serde.graph_from_proto(graph, Limits(), default_dtype=dtype).nodes
        assert isinstance(constant, Constant)
        assert constant.value.dtype == dtype.numpy and constant.value.shape == ()


def test_missing_output_id_and_leaf_name() -> None:
    error = graph_refusal(pb.Graph(nodes=[node("x", leaf="x")]))
    assert error.field == "graph.output"
    error = graph_refusal(pb.Graph(nodes=[node("", leaf="x")], output="x"))
    assert error.field == "graph.nodes[0].id"
    error = graph_refusal(pb.Graph(nodes=[node("x", leaf="")], output="x"))
    assert error.field == "graph.nodes[0].leaf" and error.node == "x"


@pytest.mark.parametrize(("name", "attr", "value"), [
    ("sum", "dim", pb.AttrValue(flag=True)),
    ("sum", "dim", pb.AttrValue(number=1.0)),
    ("sum", "keepdim", pb.AttrValue(integer=1)),
    ("clamp", "min", pb.AttrValue(integers=pb.IntList(values=[1]))),
    ("transpose", "dim0", pb.AttrValue(integers=pb.IntList(values=[0]))),
    ("reshape", "shape", pb.AttrValue(number=3.0)),
])
def test_attribute_of_the_wrong_kind_is_refused(name: str, attr: str,
                                                value: pb.AttrValue) -> None:
    graph = pb.Graph(nodes=[node("x", leaf="x"), op("y", name, "x", **{attr: value})],
                     output="y")
    error = graph_refusal(graph)
    assert error.field == f"graph.nodes[1].op.attrs['{attr}']" and error.node == "y"
    assert f"kind {TABLE[name].attrs[attr].kind!r}" in error.message
    assert f"got {value.WhichOneof('value')}" in error.message


def test_attribute_kinds_accept_what_the_proto_says() -> None:
    graph = pb.Graph(nodes=[
        node("x", leaf="x"),
        op("c", "clamp", "x", min=pb.AttrValue(integer=0), max=pb.AttrValue(number=2.5)),
        op("s", "sum", "c", dim=pb.AttrValue(integer=-1), keepdim=pb.AttrValue(flag=False)),
        op("r", "reshape", "s", shape=pb.AttrValue(integer=2)),
    ], output="r")
    ops = {n.id: n for n in serde.graph_from_proto(graph, Limits()).nodes
           if isinstance(n, Operation)}
    assert dict(ops["c"].attrs) == {"min": 0, "max": 2.5}
    assert dict(ops["s"].attrs) == {"dim": -1, "keepdim": False}
    assert dict(ops["r"].attrs) == {"shape": 2}


def test_attribute_without_value_and_non_finite_number_are_refused() -> None:
    empty = pb.Graph(nodes=[node("x", leaf="x"), op("s", "sum", "x", dim=pb.AttrValue())],
                     output="s")
    error = graph_refusal(empty)
    assert error.field == "graph.nodes[1].op.attrs['dim']" and "no value set" in error.message
    inf = pb.Graph(nodes=[node("x", leaf="x"),
                          op("c", "clamp", "x", max=pb.AttrValue(number=math.inf))], output="c")
    error = graph_refusal(inf)
    assert error.field == "graph.nodes[1].op.attrs['max']" and "not finite" in error.message


def test_unknown_ops_and_attributes_are_left_to_the_engine() -> None:
    graph = pb.Graph(nodes=[node("x", leaf="x"),
                            op("y", "frobnicate", "x", k=pb.AttrValue(flag=True))], output="y")
    converted = serde.graph_from_proto(graph, Limits())
    with pytest.raises(InvalidArgument, match="unknown op 'frobnicate'") as caught:
        validate(converted, {"x": ((), dtypes.float32)})
    assert caught.value.node == "y"
    extra = pb.Graph(nodes=[node("x", leaf="x"), op("y", "sin", "x", k=pb.AttrValue(integer=1))],
                     output="y")
    with pytest.raises(InvalidArgument, match="sin has no attribute 'k'"):
        validate(serde.graph_from_proto(extra, Limits()), {"x": ((), dtypes.float32)})


# --- Differentiate -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sin_x2() -> Result:
    return cg.differentiate("sin(x**2)", {"x": 4.0}, hessian=True)


def differentiate_to_proto(result: Result, order: list[str],
                           **kwargs: Any) -> pb.DifferentiateResponse:
    return serde.differentiate_to_proto(DifferentiateResult(result, order, **kwargs))


def test_differentiate_response_from_a_real_result(sin_x2: Result) -> None:
    response = pb.DifferentiateResponse.FromString(
        differentiate_to_proto(sin_x2, ["x"]).SerializeToString())
    out = serde.tensor_from_proto(response.output, field="output", max_elements=MAX,
                                  finite=False)
    assert out.shape == () and out.item() == pytest.approx(math.sin(16))
    (gradient,) = response.gradients
    assert gradient.leaf == "x"
    assert gradient.closed_form == "2*x*cos(x**2)"
    assert gradient.latex == sin_x2.latex["x"] and "\\cos" in gradient.latex
    value = serde.tensor_from_proto(gradient.value, field="g", max_elements=MAX)
    assert value.dtype == np.float64
    assert value.item() == pytest.approx(8 * math.cos(16))
    assert response.check.method == pb.CHECK_METHOD_SYMBOLIC
    assert response.check.status == pb.CHECK_STATUS_AGREE
    assert response.HasField("hessian")
    (block,) = response.hessian.blocks
    assert (block.row, block.column) == ("x", "x")
    second = serde.tensor_from_proto(block.value, field="h", max_elements=MAX)
    assert second.item() == pytest.approx(2 * math.cos(16) - 64 * math.sin(16))
    assert block.closed_form == sin_x2.hessian.closed_forms["x", "x"]
    assert "sin" in block.closed_form
    assert response.hessian.check.method == pb.CHECK_METHOD_SYMBOLIC  # the closed form, checked
    assert response.hessian.check.status == pb.CHECK_STATUS_AGREE


def test_differentiate_response_leaf_without_gradient() -> None:
    result = cg.differentiate("sin(x**2) + detach(y)",
                              {"x": np.float32(4.0), "y": np.float32(1.0)},
                              wrt=["x", "y"], hessian=True)
    response = differentiate_to_proto(result, ["y", "x"])
    assert [g.leaf for g in response.gradients] == ["y", "x"]
    assert not response.gradients[0].HasField("value")  # None, as allow_unused=True gives
    assert response.gradients[1].HasField("value")
    assert response.gradients[1].value.dtype == pb.DTYPE_FLOAT32
    blocks = [(b.row, b.column) for b in response.hessian.blocks]
    assert blocks == [("y", "y"), ("y", "x"), ("x", "y"), ("x", "x")]  # row-major over order
    # Each block in its own dtype: the engine's, the wider of two float32 leaves'
    assert {b.value.dtype for b in response.hessian.blocks} == {pb.DTYPE_FLOAT32}


def fake_result(**overrides: Any) -> Result:
    report = CheckReport(Method.SYMBOLIC, Status.AGREE, reason="fine")
    fields: dict[str, Any] = dict(
        value=np.array(1.0, dtype=np.float32), gradients={"a": np.ones(2, np.float32)},
        closed_forms={"a": "[1, 1]"}, latex={"a": "1"}, check=report)
    fields.update(overrides)
    return Result(**fields)


def test_differentiate_response_hessian_dtypes_and_absence() -> None:
    report = CheckReport(Method.FINITE_DIFFERENCE, Status.AGREE)
    values = {(r, c): np.zeros((2, 2) if (r, c) == ("a", "a") else (2,) if r == "a" else
                                (2,) if c == "a" else (),
                                np.float32 if (r, c) == ("a", "a") else np.float64)
              for r in "ab" for c in "ab"}
    hessian = Hessian(values, {}, {}, report)
    response = differentiate_to_proto(fake_result(hessian=hessian), ["a", "b"])
    by_pair = {(b.row, b.column): b.value.dtype for b in response.hessian.blocks}
    assert by_pair == {("a", "a"): pb.DTYPE_FLOAT32, ("a", "b"): pb.DTYPE_FLOAT64,
                       ("b", "a"): pb.DTYPE_FLOAT64, ("b", "b"): pb.DTYPE_FLOAT64}
    assert list(response.hessian.blocks[0].value.shape) == [2, 2]
    assert not differentiate_to_proto(fake_result(), ["a"]).HasField("hessian")
    # a Hessian without values (check OFF): the check, no blocks
    skipped = Hessian({}, {}, {}, CheckReport(Method.NONE, Status.SKIPPED, reason="off"))
    response = differentiate_to_proto(fake_result(hessian=skipped), ["a"])
    assert response.HasField("hessian") and not response.hessian.blocks
    assert response.hessian.check.status == pb.CHECK_STATUS_SKIPPED


def test_differentiate_response_notes_join_the_reason() -> None:
    response = differentiate_to_proto(fake_result(notes=("closed forms too big",)), ["a"])
    assert response.check.reason == "fine; closed forms too big"  # two clauses, not run together
    assert differentiate_to_proto(fake_result(), ["a"]).check.reason == "fine"


# --- ListOps -------------------------------------------------------------------------------------

def test_list_ops_lists_every_op_in_the_table() -> None:
    response = pb.ListOpsResponse.FromString(serde.list_ops_to_proto().SerializeToString())
    names = [info.name for info in response.ops]
    assert names == sorted(TABLE)
    for info in response.ops:
        row = TABLE[info.name]
        assert info.arity == row.arity
        assert [a.name for a in info.attrs] == list(row.attrs)
        for attr in info.attrs:
            spec = row.attrs[attr.name]
            assert attr.kind == spec.kind and attr.required == spec.required
            assert attr.HasField("default_value") == (spec.default is not None)
        assert info.kink == row.kink
        if isinstance(row.grad_fn, str):
            assert info.grad_fn == row.grad_fn
        elif row.grad_fn is None:
            assert info.grad_fn == ""
        else:
            assert info.grad_fn.endswith(("Backward0", "Backward1", "Backward2", "Backward4"))


def test_list_ops_details() -> None:
    ops = {info.name: info for info in serde.list_ops_to_proto().ops}
    assert ops["detach"].grad_fn == ""
    assert ops["sin"].grad_fn == "SinBackward0"
    assert ops["sub"].grad_fn == "SubBackward0"  # tensor - tensor (a number first: Rsub)
    assert ops["pow"].grad_fn == "PowBackward1"  # tensor ** tensor
    assert ops["sum"].grad_fn == "SumBackward0" and ops["mean"].grad_fn == "MeanBackward0"
    assert ops["matmul"].grad_fn == "MmBackward0"
    assert ops["reshape"].grad_fn == "ViewBackward0"
    assert ops["relu"].kink == "relu'(0) = 0"
    keepdim = next(a for a in ops["sum"].attrs if a.name == "keepdim")
    assert keepdim.default_value == pb.AttrValue(flag=False) and not keepdim.required
    shape = next(a for a in ops["reshape"].attrs if a.name == "shape")
    assert shape.required and not shape.HasField("default_value")


def test_list_ops_answers_are_independent() -> None:
    first = serde.list_ops_to_proto()
    del first.ops[:]
    assert len(serde.list_ops_to_proto().ops) == len(TABLE)


# --- sessions ------------------------------------------------------------------------------------

def test_leaf_to_proto_with_and_without_grad() -> None:
    leaf = LeafState(np.array([1.0, 2.0], np.float32), requires_grad=True, version=3)
    message = serde.leaf_to_proto("w", leaf)
    assert message.name == "w" and message.requires_grad and message.version == 3
    np.testing.assert_array_equal(decode(message.value), leaf.value)
    assert message.value.dtype == pb.DTYPE_FLOAT32
    assert not message.HasField("grad")
    with_grad = serde.leaf_to_proto("w", leaf.with_grad(np.array([0.5, -1.0], np.float32)))
    assert with_grad.HasField("grad")
    assert decode(with_grad.grad).tolist() == [0.5, -1.0]


def test_leaf_info() -> None:
    leaf = LeafState(np.zeros((2, 3), np.int64), version=1)
    info = serde.leaf_info_to_proto("n", leaf)
    assert info.name == "n" and list(info.shape) == [2, 3]
    assert info.dtype == pb.DTYPE_INT64
    assert not info.requires_grad and not info.has_grad and info.version == 1
    grad = LeafState(np.zeros(()), True, np.ones(()), 4)
    info = serde.leaf_info_to_proto("s", grad)
    assert list(info.shape) == [] and info.dtype == pb.DTYPE_FLOAT64
    assert info.requires_grad and info.has_grad and info.version == 4


def test_session_to_proto() -> None:
    session = Session("abc", dtypes.float64, "REPORT", idle_ttl=90.5)
    message = serde.session_to_proto(session, expire_time=1_700_000_000.25)
    assert message.id == "abc"
    assert message.dtype == pb.DTYPE_FLOAT64
    assert message.check_mode == pb.CHECK_MODE_REPORT
    assert (message.idle_ttl.seconds, message.idle_ttl.nanos) == (90, 500_000_000)
    assert (message.expire_time.seconds, message.expire_time.nanos) == (1_700_000_000,
                                                                        250_000_000)
    plain = serde.session_to_proto(Session("abc"), None)
    assert plain.dtype == pb.DTYPE_FLOAT32 and plain.check_mode == pb.CHECK_MODE_STRICT
    assert plain.idle_ttl.seconds == 1800 and not plain.HasField("expire_time")


def test_durations() -> None:
    assert serde.duration_from_proto(duration_pb2.Duration(), field="idle_ttl") is None
    assert serde.duration_from_proto(duration_pb2.Duration(seconds=1, nanos=500_000_000),
                                     field="idle_ttl") == 1.5
    with pytest.raises(InvalidField, match=r"^idle_ttl: .*negative"):
        serde.duration_from_proto(duration_pb2.Duration(seconds=-5), field="idle_ttl")
    assert serde.duration_to_proto(0.9999999999) == duration_pb2.Duration(seconds=1)
    assert serde.timestamp_to_proto(-0.5).seconds == -1  # before the epoch: nanos >= 0
    assert serde.timestamp_to_proto(-0.5).nanos == 500_000_000


def test_attributes_round_trip() -> None:
    for value in (2.5, -3, (1, 2), (), True):
        encoded = serde.attr_to_proto(value)
        assert encoded is not None
        back = serde.attr_from_proto(pb.AttrValue.FromString(encoded.SerializeToString()),
                                     field="a")
        assert back == value and type(back) is type(value)
    with pytest.raises(InvalidField, match=r"^a \(node 'n'\): no value set"):
        serde.attr_from_proto(pb.AttrValue(), field="a", node="n")


# --- requests: decoded once into commands --------------------------------------------------------

LIMITS = Limits(max_elements=MAX)


def test_leaf_views() -> None:
    assert serde.leaf_view_from_proto(pb.LEAF_VIEW_UNSPECIFIED) == (True, True)
    assert serde.leaf_view_from_proto(pb.LEAF_VIEW_FULL) == (True, True)
    assert serde.leaf_view_from_proto(pb.LEAF_VIEW_VALUE) == (True, False)
    assert serde.leaf_view_from_proto(pb.LEAF_VIEW_GRAD) == (False, True)
    with pytest.raises(InvalidField, match=r"^view: unknown leaf view 7; expected one of "
                                           "LEAF_VIEW_UNSPECIFIED, LEAF_VIEW_FULL"):
        serde.leaf_view_from_proto(7)
    leaf = LeafState(np.zeros(2), True, np.ones(2))
    value_only = serde.leaf_to_proto("w", leaf, with_grad=False)
    assert value_only.HasField("value") and not value_only.HasField("grad")
    grad_only = serde.leaf_to_proto("w", leaf, with_value=False)
    assert grad_only.HasField("grad") and not grad_only.HasField("value")


def test_session_calls_need_a_session_id() -> None:
    for decode in (lambda: serde.get_session_from_proto(pb.GetSessionRequest()),
                   lambda: serde.delete_session_from_proto(pb.DeleteSessionRequest()),
                   lambda: serde.get_leaf_from_proto(pb.GetLeafRequest(name="x")),
                   lambda: serde.zero_grad_from_proto(pb.ZeroGradRequest()),
                   lambda: serde.put_leaf_from_proto(pb.PutLeafRequest(name="x"), LIMITS),
                   lambda: serde.evaluate_from_proto(pb.EvaluateRequest(), LIMITS),
                   lambda: serde.backward_from_proto(pb.BackwardRequest(), LIMITS)):
        with pytest.raises(InvalidField, match=r"^session_id: the session's id is required"):
            decode()


def test_create_session_request() -> None:
    command = serde.create_session_from_proto(pb.CreateSessionRequest(
        dtype=pb.DTYPE_FLOAT64, check_mode=pb.CHECK_MODE_REPORT,
        idle_ttl=duration_pb2.Duration(seconds=90), request_id="u" * 32))
    assert (command.dtype, command.check, command.idle_ttl, command.request_id) == (
        dtypes.float64, CheckMode.REPORT, 90.0, "u" * 32)
    plain = serde.create_session_from_proto(pb.CreateSessionRequest())
    assert (plain.dtype, plain.check, plain.idle_ttl, plain.request_id) == (
        dtypes.float32, None, None, None)
    with pytest.raises(InvalidField, match=r"^request_id: 31 characters; CreateSession's"):
        serde.create_session_from_proto(pb.CreateSessionRequest(request_id="u" * 31))


def test_request_ids_identify_their_requests() -> None:
    first = pb.BackwardRequest(session_id="s", request_id="r", graph=pb.Graph(output="y"))
    key = serde.backward_from_proto(first, LIMITS).key
    assert key is not None and key.request_id == "r"
    assert serde.backward_from_proto(pb.BackwardRequest.FromString(first.SerializeToString()),
                                     LIMITS).key == key
    other = pb.BackwardRequest(session_id="s", request_id="r", graph=pb.Graph(output="z"))
    assert serde.backward_from_proto(other, LIMITS).key != key
    put = pb.PutLeafRequest(session_id="s", name="x", request_id="r")
    assert serde.put_leaf_from_proto(put, LIMITS).key != key  # another method
    assert serde.backward_from_proto(pb.BackwardRequest(session_id="s"), LIMITS).key is None
    with pytest.raises(InvalidField, match=r"^request_id: 129 characters; a request_id has at "
                                           r"most 128"):
        serde.zero_grad_from_proto(pb.ZeroGradRequest(session_id="s", request_id="r" * 129))


def test_put_leaf_request() -> None:
    bare = serde.put_leaf_from_proto(pb.PutLeafRequest(session_id="s", name="x"), LIMITS)
    assert (bare.value, bare.requires_grad, bare.expected_version, bare.key) == (
        None, None, None, None)
    full = serde.put_leaf_from_proto(pb.PutLeafRequest(
        session_id="s", name="x", value=pb.Tensor(values=[1.5]), requires_grad=False,
        expected_version=0), LIMITS)
    assert (full.requires_grad, full.expected_version) == (False, 0)
    assert full.value is not None
    # A value without a dtype takes the session's, known once the session is read.
    assert full.value.decode(dtypes.float64).dtype == np.float64
    assert full.value.decode(dtypes.float32).dtype == np.float32
    bad = serde.put_leaf_from_proto(pb.PutLeafRequest(
        session_id="s", name="x", value=pb.Tensor(values=[math.inf])), LIMITS)
    assert bad.value is not None
    with pytest.raises(InvalidField, match=r"^value.values\[0\]: element \[\] is inf"):
        bad.value.decode(dtypes.float32)


def test_backward_and_evaluate_requests() -> None:
    wire_graph = serde.graph_to_proto(every_kind_graph())
    command = serde.backward_from_proto(pb.BackwardRequest(
        session_id="s", graph=wire_graph, gradient=pb.Tensor(values=[2.0]), retain=["c", "s"],
        check_mode=pb.CHECK_MODE_OFF, answer_as_values=True), LIMITS)
    assert command.gradient is not None and command.gradient.dtype == np.float64
    assert (command.retain, command.check, command.as_values) == (
        ("c", "s"), CheckMode.OFF, True)
    assert command.graph.key == wire_graph.SerializeToString(deterministic=True)
    assert command.graph.decode(dtypes.float32) == every_kind_graph()
    evaluate = serde.evaluate_from_proto(pb.EvaluateRequest(
        session_id="s", graph=wire_graph, nodes=["c", "out"]), LIMITS)
    assert evaluate.nodes == ("c", "out") and evaluate.graph.key == command.graph.key
    with pytest.raises(InvalidField, match=r"^check_mode: unknown check mode 9"):
        serde.backward_from_proto(pb.BackwardRequest(
            session_id="s", check_mode=9), LIMITS)  # type: ignore[arg-type]


def test_differentiate_request() -> None:
    command = serde.differentiate_from_proto(pb.DifferentiateRequest(
        formula="x * y", values={"x": pb.Tensor(values=[1.0]), "y": pb.Tensor(values=[2.0])},
        wrt=["y"], seed=pb.Tensor(values=[3.0]), hessian=True), LIMITS)
    assert command.source == "x * y" and command.wrt == ("y",) and command.hessian
    assert {name: value.dtype for name, value in command.values.items()} == {
        "x": np.float32, "y": np.float32}
    assert command.seed is not None and command.seed.dtype == np.float64
    assert command.check is None
    graph = serde.differentiate_from_proto(pb.DifferentiateRequest(
        graph=serde.graph_to_proto(every_kind_graph())), LIMITS)
    assert graph.source == every_kind_graph()
    with pytest.raises(InvalidArgument, match=r"^give a graph or a formula$"):
        serde.differentiate_from_proto(pb.DifferentiateRequest(), LIMITS)
    with pytest.raises(InvalidField, match=r"^values\['x'\].values\[0\]: element"):
        serde.differentiate_from_proto(pb.DifferentiateRequest(
            formula="x", values={"x": pb.Tensor(values=[math.nan])}), LIMITS)


# --- answers: results encoded into responses -----------------------------------------------------

def test_backward_answer_round_trip() -> None:
    report = CheckReport(Method.SYMBOLIC, Status.AGREE, reason="fine")
    checked = Result(np.array(9.0, np.float32), {}, {"w": "2*w"}, {"w": "2 w"}, report,
                     notes=("a note",))
    leaves = {"w": LeafState(np.zeros(2, np.float32), True, np.array([1.0, 2.0], np.float32), 3),
              "v": LeafState(np.zeros(1, np.float32), True)}  # no grad: not answered
    result = BackwardResult(checked, leaves, {"h": np.array([0.5], np.float32)}, as_values=False)
    response = serde.BACKWARD.decode(serde.BACKWARD.encode(result).SerializeToString())
    assert decode(response.output).tolist() == 9.0
    (gradient,) = response.leaves
    assert (gradient.name, gradient.version, gradient.closed_form, gradient.latex) == (
        "w", 3, "2*w", "2 w")
    assert decode(gradient.grad).tolist() == [1.0, 2.0]
    assert decode(response.retained["h"]).tolist() == [0.5]
    assert response.check.reason == "fine; a note"
    as_values = serde.backward_to_proto(dataclasses.replace(result, as_values=True))
    assert list(as_values.output.values) == [9.0] and not as_values.output.data


def test_leaf_answers() -> None:
    leaf = LeafState(np.array([1.0, 2.0], np.float32), True, None, 4)
    put = serde.PUT_LEAF.decode(serde.PUT_LEAF.encode(
        PutLeafResult("w", leaf, created=True)).SerializeToString())
    assert put.created and put.leaf == serde.leaf_info_to_proto("w", leaf)
    zeroed = serde.ZERO_GRAD.decode(serde.ZERO_GRAD.encode(
        ZeroGradResult([("a", leaf), ("b", leaf)])).SerializeToString())
    assert [info.name for info in zeroed.leaves] == ["a", "b"]
    got = serde.get_leaf_to_proto(GetLeafResult("w", leaf, True, False, True))
    assert list(got.leaf.value.values) == [1.0, 2.0] and got.leaf.version == 4


def test_evaluate_answer() -> None:
    response = serde.evaluate_to_proto(EvaluateResult(
        [NodeValue("y", np.array(2.0, np.float32), True, "MulBackward0"),
         NodeValue("c", np.array([1, 2]))], as_values=False))
    y, c = response.values
    assert (y.id, y.requires_grad, y.grad_fn) == ("y", True, "MulBackward0")
    assert (c.id, c.requires_grad, c.grad_fn) == ("c", False, "")
    assert decode(c.value).tolist() == [1, 2] and c.value.dtype == pb.DTYPE_INT64


def test_session_answers_carry_the_time_the_session_expires() -> None:
    session = Session("abc", idle_ttl=60.0).with_leaves(
        {"b": LeafState(np.zeros(2)), "a": LeafState(np.zeros(()))})
    before = time.time()
    created = serde.create_session_to_proto(session).session
    assert created.id == "abc" and before + 60 <= created.expire_time.seconds + 1
    got = serde.get_session_to_proto(session)
    assert [info.name for info in got.leaves] == ["a", "b"]
    assert got.session.expire_time.seconds >= int(before + 60)
