"""End to end, through a real server on a loopback port with the generated stubs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import pytest
from crossgrad.server.main import RunningServer
from crossgrad.v1 import crossgrad_pb2 as pb
from crossgrad.v1 import crossgrad_pb2_grpc as pb_grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from .conftest import TEST_CONFIG

Stub = pb_grpc.AutogradServiceStub
F32 = np.float32
WAIT = 30.0  # seconds, for a thread to reach a point it must reach

# --- building requests -------------------------------------------------------------------------

_DTYPES: dict[np.dtype[Any], pb.Dtype] = {
    np.dtype(np.float32): pb.DTYPE_FLOAT32, np.dtype(np.float64): pb.DTYPE_FLOAT64,
    np.dtype(np.int64): pb.DTYPE_INT64, np.dtype(np.bool_): pb.DTYPE_BOOL}


def tensor(value: Any, dtype: Any = F32) -> pb.Tensor:
    array = np.asarray(value, dtype=dtype)
    return pb.Tensor(shape=array.shape, dtype=_DTYPES[array.dtype],
                     data=array.astype(array.dtype.newbyteorder("<")).tobytes())


def array(t: pb.Tensor) -> np.ndarray:
    dtype = {v: k for k, v in _DTYPES.items()}[t.dtype].newbyteorder("<")
    return np.frombuffer(t.data, dtype=dtype).reshape(tuple(t.shape))


def leaf(node_id: str, name: str | None = None) -> pb.Node:
    return pb.Node(id=node_id, leaf=name or node_id)


def const(node_id: str, value: Any) -> pb.Node:
    return pb.Node(id=node_id, constant=tensor(value, np.float64 if np.ndim(value) == 0 else F32))


def op(node_id: str, name: str, *inputs: str, **attrs: Any) -> pb.Node:
    values = {}
    for key, value in attrs.items():
        if isinstance(value, bool):
            values[key] = pb.AttrValue(flag=value)
        elif isinstance(value, float):
            values[key] = pb.AttrValue(number=value)
        elif isinstance(value, int):
            values[key] = pb.AttrValue(integer=value)
        else:
            values[key] = pb.AttrValue(integers=pb.IntList(values=list(value)))
    return pb.Node(id=node_id, op=pb.Operation(op=name, inputs=list(inputs), attrs=values))


def graph(*nodes: pb.Node, output: str | None = None) -> pb.Graph:
    return pb.Graph(nodes=list(nodes), output=output or nodes[-1].id)


def new_session(stub: Stub, **leaves: tuple[Any, bool]) -> str:
    session = stub.CreateSession(pb.CreateSessionRequest()).session.id
    for name, (value, requires_grad) in leaves.items():
        stub.PutLeaf(pb.PutLeafRequest(session_id=session, name=name, value=tensor(value),
                                       requires_grad=requires_grad))
    return session


def session_state(stub: Stub, session: str) -> pb.GetSessionResponse:
    """The session's settings and leaves (not its expiry time, which every call moves on)."""
    state = stub.GetSession(pb.GetSessionRequest(session_id=session))
    state.session.ClearField("expire_time")
    return state


def grad_of(stub: Stub, session: str, name: str) -> np.ndarray | None:
    got = stub.GetLeaf(pb.GetLeafRequest(session_id=session, name=name)).leaf
    return array(got.grad) if got.HasField("grad") else None


SQUARE = graph(leaf("x"), const("two", 2.0), op("y", "pow", "x", "two"))
SIN_SQUARE = graph(leaf("x"), const("two", 2.0), op("y", "pow", "x", "two"), op("z", "sin", "y"))


def bce(w: str = "w", b: str = "b") -> pb.Graph:
    # loss = -(y*log(p) + (1-y)*log(1-p)), p = clamp(sigmoid(w*x3 + b), 1e-8, 1-1e-8)
    return graph(leaf(w), leaf(b), const("x3", F32(6.7)), const("y3", F32(0.0)),
                 const("one", 1.0), op("wx", "mul", w, "x3"), op("z", "add", "wx", b),
                 op("s", "sigmoid", "z"), op("p", "clamp", "s", min=1e-8, max=1 - 1e-8),
                 op("lp", "log", "p"), op("t1", "mul", "y3", "lp"),
                 op("q", "sub", "one", "p"), op("lq", "log", "q"), op("r", "sub", "one", "y3"),
                 op("t2", "mul", "r", "lq"), op("sum", "add", "t1", "t2"),
                 op("loss", "neg", "sum"))


def const_tensor(node_id: str, value: Any) -> pb.Node:
    return pb.Node(id=node_id, constant=tensor(value))


# --- the seed notebook as RPCs -----------------------------------------------------------------

def test_example_1_square(stub: Stub) -> None:
    session = new_session(stub, x=(5.0, True))
    evaluated = stub.Evaluate(pb.EvaluateRequest(session_id=session, graph=SQUARE))
    assert array(evaluated.values[0].value) == 25.0
    assert evaluated.values[0].grad_fn == "PowBackward0" and evaluated.values[0].requires_grad
    response = stub.Backward(pb.BackwardRequest(session_id=session, graph=SQUARE))
    assert array(response.output) == 25.0
    assert response.leaves[0].name == "x" and array(response.leaves[0].grad) == 10.0
    assert response.leaves[0].closed_form == "2*x"
    assert response.check.status == pb.CHECK_STATUS_AGREE
    assert grad_of(stub, session, "x") == 10.0


def test_an_explicit_gradient_for_a_scalar_output(stub: Stub) -> None:
    # y.backward(torch.tensor(2.0)): twice the gradient, checked against twice the closed form.
    session = new_session(stub, x=(5.0, True))
    response = stub.Backward(pb.BackwardRequest(session_id=session, graph=SQUARE,
                                                gradient=tensor(2.0)))
    assert array(response.leaves[0].grad) == 20.0
    assert response.check.status == pb.CHECK_STATUS_AGREE, response.check.reason


def test_example_2_sin_of_square_with_a_retained_grad(stub: Stub) -> None:
    session = new_session(stub, x=(4.0, True))
    response = stub.Backward(pb.BackwardRequest(session_id=session, graph=SIN_SQUARE,
                                                retain=["y"]))
    assert array(response.leaves[0].grad) == pytest.approx(8 * np.cos(16), rel=1e-6)
    assert array(response.leaves[0].grad).dtype == np.float32
    assert response.leaves[0].closed_form == "2*x*cos(x**2)"
    assert array(response.retained["y"]) == pytest.approx(np.cos(16), rel=1e-6)


def test_example_3_neuron(stub: Stub) -> None:
    session = new_session(stub, w=(1.0, True), b=(0.0, True))
    response = stub.Backward(pb.BackwardRequest(session_id=session, graph=bce()))
    assert array(response.output) == pytest.approx(6.7012, abs=1e-4)
    assert grad_of(stub, session, "w") == pytest.approx(6.6918, abs=1e-4)
    assert grad_of(stub, session, "b") == pytest.approx(0.9988, abs=1e-4)
    assert response.check.status == pb.CHECK_STATUS_AGREE


def test_example_4_vector_mean(stub: Stub) -> None:
    session = new_session(stub, x=([1.0, 3.0, 4.0], True))
    g = graph(leaf("x"), const("two", 2.0), op("sq", "pow", "x", "two"), op("m", "mean", "sq"))
    response = stub.Backward(pb.BackwardRequest(session_id=session, graph=g))
    np.testing.assert_allclose(np.asarray(grad_of(stub, session, "x")),
                               np.array([2 / 3, 2.0, 8 / 3]), rtol=1e-6)
    assert response.leaves[0].closed_form == "[2*x[0]/3, 2*x[1]/3, 2*x[2]/3]"


def test_gradients_accumulate_until_zeroed(stub: Stub) -> None:
    session = new_session(stub, x=(2.0, True))
    for expected in (4.0, 8.0):
        stub.Backward(pb.BackwardRequest(session_id=session, graph=SQUARE))
        assert grad_of(stub, session, "x") == expected
    zeroed = stub.ZeroGrad(pb.ZeroGradRequest(session_id=session))
    assert zeroed.leaves[0].has_grad and grad_of(stub, session, "x") == 0.0
    stub.Backward(pb.BackwardRequest(session_id=session, graph=SQUARE))
    assert grad_of(stub, session, "x") == 4.0
    stub.ZeroGrad(pb.ZeroGradRequest(session_id=session, set_to_none=True))
    assert grad_of(stub, session, "x") is None


def test_requires_grad_false_stops_tracking(stub: Stub) -> None:
    session = new_session(stub, x=(2.0, True))
    stub.PutLeaf(pb.PutLeafRequest(session_id=session, name="x", requires_grad=False))
    evaluated = stub.Evaluate(pb.EvaluateRequest(session_id=session, graph=SQUARE))
    assert not evaluated.values[0].requires_grad and evaluated.values[0].grad_fn == ""
    with pytest.raises(grpc.RpcError) as failure:
        stub.Backward(pb.BackwardRequest(session_id=session, graph=SQUARE))
    assert failure.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert failure.value.details() == ("element 0 of tensors does not require grad and does "
                                       "not have a grad_fn")


def test_an_optimizer_step_is_a_new_value(stub: Stub) -> None:
    session = new_session(stub, w=(1.0, True), b=(0.0, True))
    stub.Backward(pb.BackwardRequest(session_id=session, graph=bce()))
    w = stub.GetLeaf(pb.GetLeafRequest(session_id=session, name="w")).leaf
    step = array(w.value) - 0.1 * array(w.grad)
    put = stub.PutLeaf(pb.PutLeafRequest(session_id=session, name="w", value=tensor(step),
                                         expected_version=w.version))
    assert put.leaf.version == w.version + 1
    with pytest.raises(grpc.RpcError) as stale:
        stub.PutLeaf(pb.PutLeafRequest(session_id=session, name="w", value=tensor(step),
                                       expected_version=w.version))
    assert stale.value.code() is grpc.StatusCode.ABORTED


# --- stateless Differentiate -------------------------------------------------------------------

def test_differentiate_a_formula_with_its_hessian(stub: Stub) -> None:
    response = stub.Differentiate(pb.DifferentiateRequest(
        formula="sin(x**2)", values={"x": pb.Tensor(values=[4.0], dtype=pb.DTYPE_FLOAT64)},
        hessian=True))
    (gradient,) = response.gradients
    assert gradient.leaf == "x" and gradient.closed_form == "2*x*cos(x**2)"
    assert array(gradient.value) == pytest.approx(8 * np.cos(16))
    assert gradient.latex == r"2 x \cos{\left(x^{2} \right)}"
    assert response.check.method == pb.CHECK_METHOD_SYMBOLIC
    assert response.check.status == pb.CHECK_STATUS_AGREE
    (block,) = response.hessian.blocks
    assert block.closed_form == "-4*x**2*sin(x**2) + 2*cos(x**2)"
    assert response.hessian.check.status == pb.CHECK_STATUS_AGREE


def test_differentiate_a_norm_by_hand_at_0_reports_the_closed_forms_value(stub: Stub) -> None:
    # PyTorch's NaN as the gradient; the closed form's finite value in the check report.
    response = stub.Differentiate(pb.DifferentiateRequest(
        formula="sqrt(sum(x*x))**2", values={"x": tensor([0.0, 0.0])}))
    (gradient,) = response.gradients
    assert np.isnan(array(gradient.value)).all()
    assert response.check.status == pb.CHECK_STATUS_SINGULAR
    assert response.check.reason.startswith(
        "d/dx[0]: the numeric gradient gives nan where the closed form gives 0.0, as at "
        "d/dx[1] (nan vs 0.0)")
    assert gradient.closed_form == "[2*x[0], 2*x[1]]"


def test_differentiate_a_graph(stub: Stub) -> None:
    response = stub.Differentiate(pb.DifferentiateRequest(
        graph=bce(), values={"w": tensor(1.0), "b": tensor(0.0)}))
    got = {g.leaf: float(array(g.value)) for g in response.gradients}
    assert got == pytest.approx({"w": 6.6918, "b": 0.9988}, abs=1e-4)


def test_a_closed_form_slow_to_render_is_checked_and_shown_unsimplified(stub: Stub) -> None:
    # SymPy takes seconds to simplify this one: the check does not wait on the text.
    response = stub.Differentiate(pb.DifferentiateRequest(
        formula="exp(sigmoid(exp(cos(x) + 5) + 2)) + 4", values={"x": tensor(0.7)}))
    assert response.check.method == pb.CHECK_METHOD_SYMBOLIC
    assert response.check.status == pb.CHECK_STATUS_AGREE
    (gradient,) = response.gradients
    assert "sin(x)" in gradient.closed_form and gradient.latex
    assert "the closed form is shown unsimplified" in response.check.reason


def test_list_ops_reports_the_table(stub: Stub) -> None:
    from crossgrad.engine.ops import TABLE

    ops = stub.ListOps(pb.ListOpsRequest()).ops
    assert {o.name for o in ops} == set(TABLE)


def test_a_client_deadline_bounds_the_wait_for_a_derivation(stub: Stub) -> None:
    n = 6000
    values = {"w": tensor(np.linspace(-1, 1, n)), "x": tensor(np.linspace(0, 2, n)),
              "b": tensor(0.1)}
    started = time.monotonic()
    response = stub.Differentiate(pb.DifferentiateRequest(
        formula="mean(sigmoid(w * x + b))", values=values), timeout=2.0)
    assert time.monotonic() - started < 2.0
    assert response.check.method == pb.CHECK_METHOD_FINITE_DIFFERENCE
    assert "deadline" in response.check.reason
    after = stub.Differentiate(pb.DifferentiateRequest(
        formula="x * y", values={"x": tensor(2.0), "y": tensor(3.0)}))
    assert after.check.method == pb.CHECK_METHOD_SYMBOLIC


# --- request ids, TTL, concurrency -------------------------------------------------------------

def test_a_retried_request_id_applies_once(stub: Stub) -> None:
    session = new_session(stub, x=(3.0, True))
    request = pb.BackwardRequest(session_id=session, graph=SQUARE, request_id="step-1")
    first = stub.Backward(request)
    again = stub.Backward(request)
    assert again == first
    assert grad_of(stub, session, "x") == 6.0
    with pytest.raises(grpc.RpcError) as reused:
        stub.Backward(pb.BackwardRequest(session_id=session, graph=SIN_SQUARE,
                                         request_id="step-1"))
    assert reused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(reused.value) == "REQUEST_ID_REUSED"
    key = str(uuid.uuid4())  # CreateSession's request_id is a secret: a random UUID
    created = stub.CreateSession(pb.CreateSessionRequest(request_id=key)).session
    assert stub.CreateSession(pb.CreateSessionRequest(request_id=key)).session.id == created.id


def test_a_retry_gets_its_first_answer_whatever_the_state_now(stub: Stub) -> None:
    session = new_session(stub, x=(3.0, True))
    request = pb.BackwardRequest(session_id=session, graph=SQUARE, request_id="step-1")
    first = stub.Backward(request)
    stub.PutLeaf(pb.PutLeafRequest(session_id=session, name="x", requires_grad=False))
    assert stub.Backward(request) == first  # now x requires no grad: computed again, it fails
    assert grad_of(stub, session, "x") == 6.0


def test_a_request_id_is_one_request_across_methods(stub: Stub) -> None:
    session = new_session(stub, x=(3.0, True))
    stub.Backward(pb.BackwardRequest(session_id=session, graph=SQUARE, request_id="r"))
    with pytest.raises(grpc.RpcError) as reused:
        stub.ZeroGrad(pb.ZeroGradRequest(session_id=session, request_id="r"))
    assert _reason(reused.value) == "REQUEST_ID_REUSED"
    assert grad_of(stub, session, "x") == 6.0
    key = str(uuid.uuid4())
    stub.CreateSession(pb.CreateSessionRequest(request_id=key))
    with pytest.raises(grpc.RpcError) as reused:  # the same key, other settings
        stub.CreateSession(pb.CreateSessionRequest(request_id=key, dtype=pb.DTYPE_FLOAT64))
    assert _reason(reused.value) == "REQUEST_ID_REUSED"


def test_a_response_over_the_size_limit_fails_and_changes_nothing(
        running_server: RunningServer, stub: Stub) -> None:
    session = stub.CreateSession(pb.CreateSessionRequest(dtype=pb.DTYPE_FLOAT64,
                                                         check_mode=pb.CHECK_MODE_OFF))
    sid = session.session.id
    n = 100_000  # the test server's max_elements: 800 kB of float64 a tensor
    stub.PutLeaf(pb.PutLeafRequest(session_id=sid, name="a", requires_grad=True,
                                   value=tensor(np.linspace(0, 1, n), np.float64)))
    chain = [leaf("a")] + [op(f"n{k}", "sin", f"n{k - 1}" if k else "a") for k in range(5)]
    request = pb.BackwardRequest(session_id=sid, graph=graph(*chain, op("s", "sum", "n4")),
                                 retain=[f"n{k}" for k in range(5)])  # six gradients: 4.8 MB
    for request_id in ("", "big"):
        request.request_id = request_id
        with pytest.raises(grpc.RpcError) as failure:
            stub.Backward(request)
        assert failure.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "message size limit" in (failure.value.details() or "")
        assert grad_of(stub, sid, "a") is None
    del request.retain[:]  # one gradient fits; the failed call's request_id was not kept
    assert array(stub.Backward(request).leaves[0].grad).shape == (n,)


def test_answers_list_leaves_by_name(stub: Stub) -> None:
    session = new_session(stub, b=(2.0, True), a=(3.0, True), c=(1.0, True))
    both = graph(leaf("b"), leaf("a"), op("m", "mul", "b", "a"))
    assert [g.name for g in stub.Backward(pb.BackwardRequest(
        session_id=session, graph=both)).leaves] == ["a", "b"]
    zeroed = stub.ZeroGrad(pb.ZeroGradRequest(session_id=session, names=["c", "b", "a"]))
    assert [leaf.name for leaf in zeroed.leaves] == ["a", "b"]  # c had no grad: unchanged


def test_create_session_caps_the_idle_ttl_and_says_when_it_expires(stub: Stub) -> None:
    for seconds in (10**6, 2**62):
        before = time.time()
        session = stub.CreateSession(pb.CreateSessionRequest(
            idle_ttl=duration_pb2.Duration(seconds=seconds))).session
        assert session.idle_ttl.seconds == 86_400  # the server's maximum
        expires = session.expire_time.seconds + session.expire_time.nanos / 1e9
        assert before + 86_400 <= expires <= time.time() + 86_400
    got = stub.GetSession(pb.GetSessionRequest(session_id=session.id)).session
    assert got.expire_time.seconds >= session.expire_time.seconds


def test_a_seed_in_the_values_form(stub: Stub) -> None:
    response = stub.Differentiate(pb.DifferentiateRequest(
        formula="x * 2", values={"x": tensor([1.0, 2.0])},
        seed=pb.Tensor(shape=[2], values=[1.0, 3.0])))
    assert array(response.gradients[0].value).tolist() == [2.0, 6.0]


def test_the_leaf_limit(stub: Stub) -> None:
    limit = TEST_CONFIG.max_leaves
    session = new_session(stub, **{f"l{k}": (1.0, False) for k in range(limit)})
    with pytest.raises(grpc.RpcError) as failure:
        stub.PutLeaf(pb.PutLeafRequest(session_id=session, name="one-more", value=tensor(1.0)))
    assert failure.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"{limit:,} leaves" in (failure.value.details() or "")
    stub.PutLeaf(pb.PutLeafRequest(session_id=session, name="l0", value=tensor(2.0)))  # a change


def test_sessions_expire_after_their_idle_ttl(stub: Stub) -> None:
    session = stub.CreateSession(pb.CreateSessionRequest(
        idle_ttl=duration_pb2.Duration(nanos=300_000_000))).session.id
    stub.GetSession(pb.GetSessionRequest(session_id=session))
    time.sleep(0.6)
    with pytest.raises(grpc.RpcError) as gone:
        stub.GetSession(pb.GetSessionRequest(session_id=session))
    assert gone.value.code() is grpc.StatusCode.NOT_FOUND


def test_concurrent_backwards_accumulate_exactly(stub: Stub) -> None:
    session = new_session(stub, x=(1.5, True))
    request = pb.BackwardRequest(session_id=session, graph=SIN_SQUARE)
    single = float(array(stub.Backward(request).leaves[0].grad))
    stub.ZeroGrad(pb.ZeroGradRequest(session_id=session))

    def fifty() -> None:
        for _ in range(50):
            stub.Backward(request)

    with futures.ThreadPoolExecutor(32) as pool:
        for job in [pool.submit(fifty) for _ in range(32)]:
            job.result()
    total = grad_of(stub, session, "x")
    # 1600 additions of the same float32 value, one at a time under the session's lock: in any
    # order they give exactly the sequential float32 sum (1600 * single up to its rounding).
    expected = np.float32(0)
    for _ in range(1600):
        expected += np.float32(single)
    assert total == expected
    assert float(expected) == pytest.approx(1600 * single, rel=1e-4)


# --- bad input ---------------------------------------------------------------------------------

def _reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None, "no rich details"
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    raise AssertionError("no ErrorInfo")


def _bad_requests(session: str) -> list[tuple[str, Callable[[Stub], Any], grpc.StatusCode,
                                               str]]:
    def backward(g: pb.Graph, **extra: Any) -> Callable[[Stub], Any]:
        return lambda stub: stub.Backward(pb.BackwardRequest(session_id=session, graph=g,
                                                             **extra))
    big = pb.Tensor(shape=[1000, 1000], dtype=pb.DTYPE_FLOAT32, data=b"\0" * 16)
    return [
        ("cycle", backward(graph(leaf("x"), op("a", "sin", "b"), op("b", "cos", "a"))),
         grpc.StatusCode.INVALID_ARGUMENT, "cycle"),
        ("unknown op", backward(graph(leaf("x"), op("y", "frobnicate", "x"))),
         grpc.StatusCode.INVALID_ARGUMENT, "unknown op 'frobnicate'"),
        ("wrong arity", backward(graph(leaf("x"), op("y", "sin", "x", "x"))),
         grpc.StatusCode.INVALID_ARGUMENT, "takes 1 input"),
        ("dangling input", backward(graph(leaf("x"), op("y", "sin", "nowhere"))),
         grpc.StatusCode.INVALID_ARGUMENT, "'nowhere' is not in the graph"),
        ("shape mismatch", backward(graph(leaf("x"), const_tensor("c", [1.0, 2.0, 3.0]),
                                          op("y", "add", "v", "c"), leaf("v"), output="y")),
         grpc.StatusCode.INVALID_ARGUMENT, "must match"),
        ("NaN", backward(graph(leaf("x"), const("c", float("nan")), op("y", "mul", "x", "c"))),
         grpc.StatusCode.INVALID_ARGUMENT, "must be finite"),
        ("oversized tensor", backward(graph(leaf("x"), pb.Node(id="c", constant=big),
                                            op("y", "mul", "x", "c"))),
         grpc.StatusCode.RESOURCE_EXHAUSTED, "100000"),
        ("too many nodes", backward(graph(leaf("x"), *[op(f"n{k}", "sin", f"n{k - 1}" if k
                                                          else "x") for k in range(2500)])),
         grpc.StatusCode.RESOURCE_EXHAUSTED, "nodes"),
        ("bytes that do not match shape x dtype",
         backward(graph(leaf("x"), pb.Node(id="c", constant=pb.Tensor(
             shape=[2], dtype=pb.DTYPE_FLOAT32, data=b"\0" * 7)), op("y", "mul", "x", "c"))),
         grpc.StatusCode.INVALID_ARGUMENT, "7 bytes"),
        ("unknown session", lambda stub: stub.Backward(pb.BackwardRequest(
            session_id="no-such-session", graph=SQUARE)), grpc.StatusCode.NOT_FOUND, "not found"),
        ("unknown leaf", backward(graph(leaf("q"), op("y", "sin", "q"))),
         grpc.StatusCode.NOT_FOUND, "no leaf named 'q'"),
        ("backward of a non-scalar without a gradient",
         backward(graph(leaf("v"), op("y", "sin", "v"))), grpc.StatusCode.FAILED_PRECONDITION,
         "grad can be implicitly created only for scalar outputs"),
        ("a formula with __import__", lambda stub: stub.Differentiate(pb.DifferentiateRequest(
            formula="__import__('os').system('true')", values={})),
         grpc.StatusCode.INVALID_ARGUMENT, "not allowed"),
        ("a 20,000-character node id", backward(graph(leaf("x"), op("n" * 20_000, "sin", "x"))),
         grpc.StatusCode.INVALID_ARGUMENT, "a node id has at most 256"),
        ("a 5,000-character op name, not ASCII", backward(graph(leaf("x"),
                                                                  op("y", "é" * 5000, "x"))),
         grpc.StatusCode.INVALID_ARGUMENT, "unknown op 'ééé"),
        ("a 3,000-character node to retain, not ASCII", backward(SQUARE, retain=["é" * 3000]),
         grpc.StatusCode.INVALID_ARGUMENT, "ééé"),
        ("a 20,000-character leaf name", backward(graph(leaf("q", "q" * 20_000),
                                                       op("y", "sin", "q"))),
         grpc.StatusCode.NOT_FOUND, "no leaf named 'qqq"),
        ("a leaf name over the limit", lambda stub: stub.PutLeaf(pb.PutLeafRequest(
            session_id=session, name="n" * 300, value=tensor(1.0))),
         grpc.StatusCode.INVALID_ARGUMENT, "at most 256"),
        ("a request_id over the limit", lambda stub: stub.ZeroGrad(pb.ZeroGradRequest(
            session_id=session, request_id="r" * 129)),
         grpc.StatusCode.INVALID_ARGUMENT, "at most 128"),
        ("a value past its leaf's dtype", lambda stub: stub.PutLeaf(pb.PutLeafRequest(
            session_id=session, name="x", value=tensor(1e300, np.float64))),
         grpc.StatusCode.INVALID_ARGUMENT, "overflows"),
        ("a node asked for twice", lambda stub: stub.Evaluate(pb.EvaluateRequest(
            session_id=session, graph=SQUARE, nodes=["y", "x", "y"])),
         grpc.StatusCode.INVALID_ARGUMENT, "'y' is asked for twice"),
        ("no session_id", lambda stub: stub.GetLeaf(pb.GetLeafRequest(name="x")),
         grpc.StatusCode.INVALID_ARGUMENT, "session_id: the session's id is required"),
        ("a malformed Duration", lambda stub: stub.CreateSession(pb.CreateSessionRequest(
            idle_ttl=duration_pb2.Duration(seconds=1, nanos=-5))),
         grpc.StatusCode.INVALID_ARGUMENT, "different signs"),
        ("a Duration's nanos past a second", lambda stub: stub.CreateSession(
            pb.CreateSessionRequest(idle_ttl=duration_pb2.Duration(nanos=2_000_000_000))),
         grpc.StatusCode.INVALID_ARGUMENT, "within ±999,999,999"),
        ("a guessable CreateSession request_id", lambda stub: stub.CreateSession(
            pb.CreateSessionRequest(request_id="retry-1")),
         grpc.StatusCode.INVALID_ARGUMENT, "at least 32 characters"),
        ("an int64 value that is not integral", lambda stub: stub.PutLeaf(pb.PutLeafRequest(
            session_id=session, name="i", value=pb.Tensor(dtype=pb.DTYPE_INT64, values=[1.5]))),
         grpc.StatusCode.INVALID_ARGUMENT, "1.5 is not an int64"),
        ("an unknown leaf view", lambda stub: stub.GetLeaf(pb.GetLeafRequest(
            session_id=session, name="x", view=99)),  # type: ignore[arg-type]
         grpc.StatusCode.INVALID_ARGUMENT, "unknown leaf view 99"),
        ("a message over the size limit", lambda stub: stub.PutLeaf(pb.PutLeafRequest(
            session_id=session, name="huge", value=pb.Tensor(
                shape=[1_250_000], dtype=pb.DTYPE_FLOAT32, data=b"\0" * 5_000_000))),
         grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    ]


def test_bad_input_gets_its_status_and_changes_nothing(running_server: RunningServer,
                                                       channel: grpc.Channel, stub: Stub) -> None:
    session = new_session(stub, x=(2.0, True), v=([1.0, 2.0], True))
    stub.Backward(pb.BackwardRequest(session_id=session, graph=SQUARE))
    before = session_state(stub, session)
    x_before = stub.GetLeaf(pb.GetLeafRequest(session_id=session, name="x"))
    health = health_pb2_grpc.HealthStub(channel)
    for name, call, code, message in _bad_requests(session):
        with pytest.raises(grpc.RpcError) as failure:
            call(stub)
        assert failure.value.code() is code, (name, failure.value.details())
        assert message in (failure.value.details() or ""), (name, failure.value.details())
        assert "Traceback" not in (failure.value.details() or "")
        if code is not grpc.StatusCode.RESOURCE_EXHAUSTED or name != \
                "a message over the size limit":
            assert _reason(failure.value), name
        assert health.Check(health_pb2.HealthCheckRequest()).status == \
            health_pb2.HealthCheckResponse.SERVING, name
    assert session_state(stub, session) == before
    assert stub.GetLeaf(pb.GetLeafRequest(session_id=session, name="x")) == x_before


def test_garbage_bytes_are_an_invalid_argument(channel: grpc.Channel) -> None:
    method = channel.unary_unary("/crossgrad.v1.AutogradService/Backward",
                                 request_serializer=lambda b: b,
                                 response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as failure:
        method(b"\xff\xff\xff\xff not a protobuf message")
    assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid BackwardRequest" in (failure.value.details() or "")


def test_a_strict_disagreement_fails_and_changes_nothing(stub: Stub,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from crossgrad.engine import ops

    session = new_session(stub, x=(4.0, True))
    wrong = dataclasses.replace(ops.TABLE["sin"], vjps=(lambda g, out, x: g * np.sin(x),))
    monkeypatch.setitem(ops.TABLE, "sin", wrong)
    # A graph this server has not seen: the ones it has are compiled with the right table.
    sin_square = graph(leaf("x"), const("two", 2.0), op("y", "pow", "x", "two"),
                       op("wrong", "sin", "y"))
    with pytest.raises(grpc.RpcError) as failure:
        stub.Backward(pb.BackwardRequest(session_id=session, graph=sin_square))
    assert failure.value.code() is grpc.StatusCode.INTERNAL
    assert _reason(failure.value) == "CHECK_DISAGREEMENT"
    assert grad_of(stub, session, "x") is None
    reported = stub.Backward(pb.BackwardRequest(session_id=session, graph=sin_square,
                                                check_mode=pb.CHECK_MODE_REPORT))
    assert reported.check.status == pb.CHECK_STATUS_DISAGREE


# --- health, reflection, shutdown --------------------------------------------------------------

def test_health_and_reflection(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "crossgrad.v1.AutogradService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == \
            health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    (answer,) = reflect.ServerReflectionInfo(iter([
        reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for s in answer.list_services_response.service}
    assert "crossgrad.v1.AutogradService" in names and "grpc.health.v1.Health" in names


def test_sigterm_drains_then_exits() -> None:
    process = subprocess.Popen([sys.executable, "-m", "crossgrad.server", "--address",
                                "127.0.0.1:0", "--grace", "20"],
                               stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "CROSSGRAD_SYMBOLIC_WORKERS": "1"})
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("crossgrad-server listening on 127.0.0.1:"), line
        address = line.rsplit(" ", 1)[1].strip()
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.AutogradServiceStub(channel)
            # The first Differentiate starts a worker: a call in flight for about a second.
            call = stub.Differentiate.future(pb.DifferentiateRequest(
                formula="sin(x) * x", values={"x": tensor(0.5)}))
            time.sleep(0.2)
            process.send_signal(signal.SIGTERM)
            response = call.result(timeout=60)
            assert response.check.status == pb.CHECK_STATUS_AGREE
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        threading.Event().wait(0)


def test_a_backward_whose_leaves_keep_changing_is_aborted(stub: Stub,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from crossgrad.server import service

    session = new_session(stub, x=(3.0, True))

    def always_stale(*args: Any) -> None:
        raise service._Stale  # as if a PutLeaf landed during every attempt

    monkeypatch.setattr(service.Service, "_backward", always_stale)
    with pytest.raises(grpc.RpcError) as busy:
        stub.Backward(pb.BackwardRequest(session_id=session, graph=SQUARE))
    assert busy.value.code() is grpc.StatusCode.ABORTED
    assert _reason(busy.value) == "SESSION_BUSY"
    assert grad_of(stub, session, "x") is None


def test_a_retry_racing_its_first_call_gets_the_first_answer(
        running_server: RunningServer, stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    session = new_session(stub, x=(3.0, True))
    request = pb.BackwardRequest(session_id=session, graph=SQUARE, request_id="raced")
    store = running_server.store
    recall = store.recall
    looked, resume = threading.Event(), threading.Event()

    def slow_recall(session_id: str, request_id: str, **kwargs: Any) -> object | None:
        found = recall(session_id, request_id, **kwargs)
        if not looked.is_set():  # the retry: it looks before the first call has landed
            looked.set()
            assert resume.wait(WAIT)
        return found

    monkeypatch.setattr(store, "recall", slow_recall)
    with futures.ThreadPoolExecutor(1) as pool:
        retry = pool.submit(stub.Backward, request)
        assert looked.wait(WAIT)
        first = stub.Backward(request)  # the first call lands now, and the client moves on
        stub.PutLeaf(pb.PutLeafRequest(session_id=session, name="x", requires_grad=False))
        resume.set()
        assert retry.result(WAIT) == first  # not "element 0 of tensors does not require grad"
    assert grad_of(stub, session, "x") == 6.0
