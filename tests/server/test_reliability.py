"""The server as an unlucky or hostile client finds it: calls that end before they commit, answers
over the size limit, byte budgets, secrets that request_ids must not weaken, error details that
agree with themselves, and answers readable without decoding bytes."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from crossgrad.server.config import Config
from crossgrad.server.main import RunningServer, serve
from crossgrad.v1 import crossgrad_pb2 as pb
from crossgrad.v1 import crossgrad_pb2_grpc as pb_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from .test_service import SQUARE, grad_of, graph, leaf, new_session, op, tensor

Stub = pb_grpc.AutogradServiceStub
WAIT = 30.0


def details(error: grpc.RpcError) -> tuple[error_details_pb2.ErrorInfo,
                                            error_details_pb2.BadRequest | None]:
    status = rpc_status.from_call(error)
    assert status is not None, "no rich details"
    info, bad = None, None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
    assert info is not None, "no ErrorInfo"
    return info, bad


# --- a call that cannot answer commits nothing ---------------------------------------------------

def _hold_updates(store: Any, monkeypatch: pytest.MonkeyPatch,
                  ) -> tuple[threading.Event, threading.Event, threading.Event]:
    """Make the store's updates wait (``reached`` set) until ``release`` is set; ``done`` is set
    once an update has returned or raised."""
    reached, release, done = threading.Event(), threading.Event(), threading.Event()
    update = store.update

    def held(*args: Any, **kwargs: Any) -> Any:
        reached.set()
        assert release.wait(WAIT)
        try:
            return update(*args, **kwargs)
        finally:
            done.set()

    monkeypatch.setattr(store, "update", held)
    return reached, release, done


@pytest.mark.parametrize("request_id", ["", "deadline-1"])
def test_a_call_past_its_deadline_commits_nothing(
        running_server: RunningServer, stub: Stub, monkeypatch: pytest.MonkeyPatch,
        request_id: str) -> None:
    session = new_session(stub, x=(3.0, True))
    stub.Backward(pb.BackwardRequest(session_id=new_session(stub, x=(1.0, True)),
                                     graph=SQUARE))  # the graph's closed form, derived before
    reached, release, done = _hold_updates(running_server.store, monkeypatch)
    request = pb.BackwardRequest(session_id=session, graph=SQUARE, request_id=request_id)
    with pytest.raises(grpc.RpcError) as failure:
        stub.Backward(request, timeout=0.5)
    assert failure.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert reached.wait(WAIT)
    release.set()  # after the client's deadline: the update reaches its commit point, refused
    assert done.wait(WAIT)
    monkeypatch.undo()
    assert grad_of(stub, session, "x") is None
    # Its retry runs anew, and accumulates once.
    assert stub.Backward(request).leaves[0].grad.data == tensor(6.0).data
    assert grad_of(stub, session, "x") == 6.0


def test_a_cancelled_call_commits_nothing(running_server: RunningServer, stub: Stub,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    session = new_session(stub, x=(3.0, True))
    stub.Backward(pb.BackwardRequest(session_id=new_session(stub, x=(1.0, True)),
                                     graph=SQUARE))
    reached, release, done = _hold_updates(running_server.store, monkeypatch)
    future = stub.Backward.future(pb.BackwardRequest(session_id=session, graph=SQUARE))
    assert reached.wait(WAIT)
    future.cancel()
    time.sleep(1.0)  # the cancellation reaches the server before the update goes on
    release.set()
    assert done.wait(WAIT)
    monkeypatch.undo()
    assert grad_of(stub, session, "x") is None


# --- request_ids ---------------------------------------------------------------------------------

def test_a_create_session_request_id_is_a_secret(stub: Stub) -> None:
    key = str(uuid.uuid4())
    first = stub.CreateSession(pb.CreateSessionRequest(request_id=key)).session.id
    assert stub.CreateSession(pb.CreateSessionRequest(request_id=key)).session.id == first
    # A guessable one is refused rather than made a weaker secret than a session id.
    for weak in ("retry-1", "x" * 31):
        with pytest.raises(grpc.RpcError) as failure:
            stub.CreateSession(pb.CreateSessionRequest(request_id=weak))
        assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        _, bad = details(failure.value)
        assert bad is not None and bad.field_violations[0].field == "request_id"


# --- answers over the size limit -----------------------------------------------------------------

@pytest.fixture(scope="module")
def small_server() -> Iterator[RunningServer]:
    """A server whose messages hold at most 1 MiB: a 100,000-element float64 leaf (800 kB)
    fits, its value and grad together do not."""
    server = serve(Config(address="127.0.0.1:0", max_message_bytes=1 << 20, max_elements=100_000,
                          symbolic_workers=1, threads=4))
    yield server
    server.stop(0)


def test_a_read_only_answer_over_the_limit_is_refused_with_details(
        small_server: RunningServer) -> None:
    n = 100_000
    with grpc.insecure_channel(small_server.address) as channel:
        stub = Stub(channel)
        session = stub.CreateSession(pb.CreateSessionRequest(
            dtype=pb.DTYPE_FLOAT64, check_mode=pb.CHECK_MODE_OFF)).session.id
        stub.PutLeaf(pb.PutLeafRequest(session_id=session, name="a", requires_grad=True,
                                       value=tensor(np.linspace(0, 1, n), np.float64)))
        stub.Backward(pb.BackwardRequest(session_id=session, graph=graph(
            leaf("a"), op("s", "sum", "a"))))
        with pytest.raises(grpc.RpcError) as failure:
            stub.GetLeaf(pb.GetLeafRequest(session_id=session, name="a"))
        assert failure.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "GetLeafRequest.view" in (failure.value.details() or "")
        info, _ = details(failure.value)
        assert (info.reason, info.metadata["limit"]) == ("LIMIT_EXCEEDED", "max_message_bytes")
        value = stub.GetLeaf(pb.GetLeafRequest(session_id=session, name="a",
                                               view=pb.LEAF_VIEW_VALUE)).leaf
        grad = stub.GetLeaf(pb.GetLeafRequest(session_id=session, name="a",
                                              view=pb.LEAF_VIEW_GRAD)).leaf
        assert value.HasField("value") and not value.HasField("grad")
        assert grad.HasField("grad") and not grad.HasField("value")
        assert np.frombuffer(grad.grad.data, "<f8").tolist() == [1.0] * n
        # Evaluate of the leaf and a node of its size: two values, over the limit.
        with pytest.raises(grpc.RpcError) as failure:
            stub.Evaluate(pb.EvaluateRequest(session_id=session, graph=graph(
                leaf("a"), op("b", "sin", "a")), nodes=["a", "b"]))
        assert failure.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details(failure.value)[0].metadata["limit"] == "max_message_bytes"


# --- answers for hand-written clients ------------------------------------------------------------

def test_answers_come_as_numbers_when_asked(stub: Stub) -> None:
    response = stub.Differentiate(pb.DifferentiateRequest(
        formula="sin(x**2)", values={"x": pb.Tensor(values=[4.0])}, answer_as_values=True))
    (gradient,) = response.gradients
    assert gradient.value.data == b"" and gradient.value.values[0] == pytest.approx(-7.6613,
                                                                                   abs=1e-4)
    assert response.output.data == b"" and len(response.output.values) == 1
    session = new_session(stub, x=(3.0, True))
    backward = stub.Backward(pb.BackwardRequest(session_id=session, graph=SQUARE,
                                                answer_as_values=True))
    assert list(backward.leaves[0].grad.values) == [6.0]
    read = stub.GetLeaf(pb.GetLeafRequest(session_id=session, name="x", answer_as_values=True))
    assert list(read.leaf.value.values) == [3.0] and list(read.leaf.grad.values) == [6.0]
    evaluated = stub.Evaluate(pb.EvaluateRequest(session_id=session, graph=SQUARE,
                                                 answer_as_values=True))
    assert list(evaluated.values[0].value.values) == [9.0]


# --- error details -------------------------------------------------------------------------------

def test_error_details_follow_one_form(stub: Stub) -> None:
    session = new_session(stub, x=(3.0, True), v=([1.0, 2.0], True))
    bad_node = graph(leaf("x"), op("y", "frobnicate", "x"))
    with pytest.raises(grpc.RpcError) as failure:
        stub.Backward(pb.BackwardRequest(session_id=session, graph=bad_node))
    info, bad = details(failure.value)
    assert info.domain == "crossgrad.v1.AutogradService"
    assert info.metadata["node"] == "y"
    assert bad is not None and bad.field_violations[0].field == "graph.nodes[1]"  # its index
    with pytest.raises(grpc.RpcError) as failure:
        stub.Differentiate(pb.DifferentiateRequest(formula="x ** y @ q", values={
            "x": pb.Tensor(values=[1.0]), "y": pb.Tensor(values=[1.0]),
            "q": pb.Tensor(values=[1.0])}))
    _, bad = details(failure.value)
    assert bad is not None and bad.field_violations[0].field == "formula"
    # One condition, one status: a non-scalar output without a seed or gradient.
    codes = set()
    for call in (lambda: stub.Backward(pb.BackwardRequest(session_id=session, graph=graph(
                     leaf("v"), op("y", "sin", "v")))),
                 lambda: stub.Differentiate(pb.DifferentiateRequest(
                     formula="sin(v)", values={"v": pb.Tensor(shape=[2], values=[1.0, 2.0])}))):
        with pytest.raises(grpc.RpcError) as failure:
            call()
        info, _ = details(failure.value)
        codes.add((failure.value.code(), info.reason, info.metadata["pythonException"]))
        assert "grad can be implicitly created only for scalar outputs" in (
            failure.value.details() or "")
    assert codes == {(grpc.StatusCode.FAILED_PRECONDITION, "USAGE_ERROR", "RuntimeError")}


# --- byte budgets, through a server --------------------------------------------------------------

def test_byte_budgets_refuse_whole_changes_and_name_the_budget() -> None:
    mib = 1 << 20
    server = serve(Config(address="127.0.0.1:0", max_elements=100_000, symbolic_workers=1,
                          threads=4, max_session_bytes=2 * mib, max_store_bytes=3 * mib))
    big = tensor(np.zeros(100_000), np.float64)  # 800 kB
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = Stub(channel)
            first, second = (stub.CreateSession(pb.CreateSessionRequest()).session.id
                             for _ in range(2))
            for name in ("a", "b"):
                stub.PutLeaf(pb.PutLeafRequest(session_id=first, name=name, value=big))
            refused = []
            for session, name in ((first, "c"), (second, "a"), (second, "b")):
                try:
                    stub.PutLeaf(pb.PutLeafRequest(session_id=session, name=name, value=big))
                except grpc.RpcError as error:
                    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert "nothing was changed" in (error.details() or "")
                    refused.append(details(error)[0].metadata["limit"])
            assert refused == ["max_session_bytes", "max_store_bytes"]
            leaves = stub.GetSession(pb.GetSessionRequest(session_id=first)).leaves
            assert [leaf.name for leaf in leaves] == ["a", "b"]
            assert server.store.nbytes == 3 * 800_000
            stub.DeleteSession(pb.DeleteSessionRequest(session_id=first))
            stub.PutLeaf(pb.PutLeafRequest(session_id=second, name="b", value=big))
            assert server.store.nbytes == 2 * 800_000
    finally:
        server.stop(0)


# --- the symbolic workers, killed under a running server -----------------------------------------

def test_the_server_recovers_from_its_workers_being_killed() -> None:
    server = serve(Config(address="127.0.0.1:0", symbolic_workers=2, threads=4))
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = Stub(channel)
            budget = server.symbolic.budget
            for round_ in range(2):  # an OOM kill or a native crash, twice
                deadline = time.monotonic() + WAIT
                while len(budget.pids()) < 2 and time.monotonic() < deadline:
                    time.sleep(0.05)
                pids = budget.pids()
                assert len(pids) == 2, pids
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                # A structure never derived before: it must come back SYMBOLIC, not fall back to
                # finite differences for good.
                deadline = time.monotonic() + WAIT
                while True:
                    response = stub.Differentiate(pb.DifferentiateRequest(
                        formula=f"sin(x ** {round_ + 3}) * x", values={"x": pb.Tensor(
                            values=[0.5])}), timeout=WAIT)
                    if response.check.method == pb.CHECK_METHOD_SYMBOLIC:
                        break
                    assert time.monotonic() < deadline, response.check.reason
                    time.sleep(0.2)
                # Both killed workers are replaced: one by the call above, an idle one when the
                # pool next checks it (within a second).
                while not set(budget.pids()).isdisjoint(pids):
                    assert time.monotonic() < deadline, (budget.pids(), pids)
                    time.sleep(0.05)
    finally:
        server.stop(0)
