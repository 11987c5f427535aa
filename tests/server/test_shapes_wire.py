"""The shape ops over the wire: select, slice and squeeze graphs sent as RPCs, their gradients and
closed forms, and a bad index refused naming its node."""

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
