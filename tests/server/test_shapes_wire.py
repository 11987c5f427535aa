"""The shape ops over the wire: select, slice, squeeze and cat graphs sent as RPCs, their
gradients and closed forms, a cat of three inputs, and a bad index refused naming its node."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from crossgrad.v1 import crossgrad_pb2 as pb
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from .test_service import Stub, array, graph, leaf, new_session, op


def _error_info(error: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return dict(info.metadata)
    raise AssertionError("no ErrorInfo")


def test_indexing_ops_over_the_wire(stub: Stub) -> None:
    # sum(x[1:3, 0] ** 2) + x[..., -1].sum(), as the ops indexing decomposes into.
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    session = new_session(stub, x=(x, True))
    g = graph(leaf("x"), op("rows", "slice", "x", dim=0, start=1, end=3, step=1),
              op("col", "select", "rows", dim=1, index=0),
              op("two", "unsqueeze", "col", dim=0), op("flat", "squeeze", "two"),
              op("last", "select", "x", dim=-1, index=-1),
              op("sq", "mul", "flat", "flat"), op("a", "sum", "sq"), op("b", "sum", "last"),
              op("loss", "add", "a", "b"))
    evaluated = stub.Evaluate(pb.EvaluateRequest(session_id=session, graph=g,
                                                 nodes=["rows", "col", "flat"]))
    names = [value.grad_fn for value in evaluated.values]
    assert names == ["SliceBackward0", "SelectBackward0", "SqueezeBackward0"]
    response = stub.Backward(pb.BackwardRequest(session_id=session, graph=g))
    expected = np.zeros_like(x)
    expected[1:3, 0] = 2 * x[1:3, 0]
    expected[:, -1] += 1
    np.testing.assert_allclose(array(response.leaves[0].grad), expected)
    assert response.check.status == pb.CHECK_STATUS_AGREE, response.check.reason


@pytest.mark.parametrize(("node", "expected"), [
    (op("bad", "select", "x", dim=0, index=5),
     "select(): index 5 out of range for tensor of size [4, 2] at dimension 0"),
    (op("bad", "slice", "x", dim=0, step=0), "slice step must be positive"),
    (op("bad", "squeeze", "x", dim=[0, 0]), "dim 0 appears multiple times"),
])
def test_a_bad_index_is_refused_naming_its_node(stub: Stub, node: pb.Node,
                                                expected: str) -> None:
    session = new_session(stub, x=(np.zeros((4, 2), np.float32), True))
    with pytest.raises(grpc.RpcError) as raised:
        stub.Evaluate(pb.EvaluateRequest(session_id=session, graph=graph(leaf("x"), node)))
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert expected in raised.value.details() and "node 'bad'" in raised.value.details()
    assert _error_info(raised.value).get("node") == "bad"


def test_list_ops_lists_the_shape_rows(stub: Stub) -> None:
    listed = {info.name: info for info in stub.ListOps(pb.ListOpsRequest()).ops}
    assert listed["slice"].grad_fn == "SliceBackward0"
    assert [(a.name, a.kind) for a in listed["slice"].attrs] == [
        ("dim", "int"), ("start", "int?"), ("end", "int?"), ("step", "int")]
    assert [(a.name, a.kind) for a in listed["squeeze"].attrs] == [("dim", "int|dims?")]


def test_a_cat_of_three_inputs(stub: Stub) -> None:
    a, b = np.array([[1.0, 2.0]], np.float32), np.array([[3.0], [4.0]], np.float32)
    session = new_session(stub, a=(a, True), b=(b, True))
    # cat([a, b.T, a], 0) ** 2, summed: each input gets 2 * its own values, a twice.
    g = graph(leaf("a"), leaf("b"), op("bt", "transpose", "b", dim0=0, dim1=1),
              op("joined", "cat", "a", "bt", "a", dim=0), op("sq", "mul", "joined", "joined"),
              op("loss", "sum", "sq"))
    evaluated = stub.Evaluate(pb.EvaluateRequest(session_id=session, graph=g, nodes=["joined"]))
    np.testing.assert_array_equal(array(evaluated.values[0].value), [[1, 2], [3, 4], [1, 2]])
    assert evaluated.values[0].grad_fn == "CatBackward0"
    response = stub.Backward(pb.BackwardRequest(session_id=session, graph=g))
    grads = {leaf.name: array(leaf.grad) for leaf in response.leaves}
    np.testing.assert_allclose(grads["a"], 4 * a)
    np.testing.assert_allclose(grads["b"], 2 * b)
    assert response.check.status == pb.CHECK_STATUS_AGREE, response.check.reason


@pytest.mark.parametrize(("inputs", "expected"), [
    ([], "cat takes one or more input(s), got 0"),
    (["x", "y"], "Sizes of tensors must match except in dimension 0. Expected size 2 but got "
                 "size 3 for tensor number 1 in the list."),
])
def test_a_bad_cat_is_refused_naming_its_node(stub: Stub, inputs: list[str],
                                              expected: str) -> None:
    session = new_session(stub, x=(np.zeros((4, 2), np.float32), True),
                          y=(np.zeros((1, 3), np.float32), True))
    g = graph(leaf("x"), leaf("y"), op("bad", "cat", *inputs))
    with pytest.raises(grpc.RpcError) as raised:
        stub.Evaluate(pb.EvaluateRequest(session_id=session, graph=g))
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert expected in raised.value.details()
    assert _error_info(raised.value).get("node") == "bad"


def test_list_ops_says_which_ops_are_variadic(stub: Stub) -> None:
    listed = {info.name: info for info in stub.ListOps(pb.ListOpsRequest()).ops}
    assert {name for name, info in listed.items() if info.variadic} == {"cat", "stack"}
    assert (listed["cat"].arity, listed["cat"].grad_fn) == (1, "CatBackward0")
