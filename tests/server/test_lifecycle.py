"""The server's life around the calls: health while every call thread is busy, the drain on
SIGTERM, requests that do not parse, and a call's liveness as the servicer sees it."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import pytest
from crossgrad.server.call import Call
from crossgrad.server.main import RunningServer, serve
from crossgrad.server.servicer import Servicer
from crossgrad.v1 import crossgrad_pb2 as pb
from crossgrad.v1 import crossgrad_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from .conftest import TEST_CONFIG

WAIT = 30.0  # seconds, for a thread to reach a point it must reach
PROMPT = 0.5  # seconds: a health check on a loaded 2-core machine, with a wide margin
THREADS = 4

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Gate:
    """Stands in for a servicer method: each call checks in, then waits until opened."""

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.opened = threading.Event()
        self.calls: list[Call] = []

    def __call__(self, request: Any, call: Call) -> pb.GetSessionResponse:
        self.calls.append(call)
        self.entered.release()
        assert self.opened.wait(WAIT)
        return pb.GetSessionResponse()

    def wait_entered(self, count: int) -> None:
        for _ in range(count):
            assert self.entered.acquire(timeout=WAIT)


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RunningServer, Gate]]:
    """A server of THREADS call threads whose GetSession waits at a gate."""
    gate = Gate()
    monkeypatch.setattr(Servicer, "GetSession", gate)
    server = serve(dataclasses.replace(TEST_CONFIG, threads=THREADS))
    try:
        yield server, gate
    finally:
        gate.opened.set()
        server.stop(0)


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_health_and_list_ops_answer_while_every_call_thread_is_busy(
        gated: tuple[RunningServer, Gate]) -> None:
    server, gate = gated
    with grpc.insecure_channel(server.address) as channel, \
            futures.ThreadPoolExecutor(4 * THREADS) as clients:
        stub = pb_grpc.AutogradServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        health.Check(health_pb2.HealthCheckRequest())  # the connection is up
        # Every call thread blocked, and as many calls again queued behind them.
        blocked = [clients.submit(stub.GetSession, pb.GetSessionRequest(session_id="s"),
                                  timeout=WAIT) for _ in range(2 * THREADS)]
        gate.wait_entered(THREADS)
        for service in ("", "crossgrad.v1.AutogradService"):
            request = health_pb2.HealthCheckRequest(service=service)
            answer, seconds = timed(lambda: health.Check(request, timeout=10))  # noqa: B023
            assert answer.status == SERVING
            assert seconds < PROMPT, f"health took {seconds:.3f} s"
        ops, seconds = timed(lambda: stub.ListOps(pb.ListOpsRequest(), timeout=10))
        assert ops.ops and seconds < PROMPT, f"ListOps took {seconds:.3f} s"
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        (listed,), seconds = timed(lambda: list(reflect.ServerReflectionInfo(iter([
            reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)))
        assert listed.list_services_response.service and seconds < PROMPT
        gate.opened.set()
        for call in blocked:
            call.result(WAIT)


def test_a_call_is_inactive_once_its_client_cancels(gated: tuple[RunningServer, Gate]) -> None:
    server, gate = gated
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.AutogradServiceStub(channel)
        pending = stub.GetSession.future(pb.GetSessionRequest(session_id="s"))
        gate.wait_entered(1)
        (call,) = gate.calls
        assert call.is_active() and call.time_remaining() is None
        pending.cancel()
        assert _becomes_inactive(call)
        gate.opened.set()


def test_a_call_is_inactive_once_its_deadline_passes(gated: tuple[RunningServer, Gate]) -> None:
    server, gate = gated
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.AutogradServiceStub(channel)
        pending = stub.GetSession.future(pb.GetSessionRequest(session_id="s"), timeout=1.0)
        gate.wait_entered(1)
        (call,) = gate.calls
        remaining = call.time_remaining()
        # gRPC sends the timeout rounded up to its wire unit and the server starts its clock on
        # receipt: the server may see a few milliseconds more than the client's second.
        assert call.is_active() and remaining is not None and 0 < remaining <= 1.05
        with pytest.raises(grpc.RpcError) as failure:
            pending.result(WAIT)
        assert failure.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        # The client's clock and the server's differ by the timeout's rounding: the server's
        # deadline may pass a few milliseconds after the client gave up, and gRPC may end the
        # call (the client's cancel) before it does. Once it has passed, the call is inactive.
        assert _deadline_passes(call) and not call.is_active()
        gate.opened.set()


def _deadline_passes(call: Call) -> bool:
    give_up = time.monotonic() + WAIT
    while call.time_remaining() != 0:
        if time.monotonic() > give_up:
            return False
        time.sleep(0.01)
    return True


def _becomes_inactive(call: Call) -> bool:
    give_up = time.monotonic() + WAIT
    while call.is_active():
        if time.monotonic() > give_up:
            return False
        time.sleep(0.01)
    return True


def test_a_call_alone() -> None:
    endless = Call(None)
    assert endless.is_active() and endless.time_remaining() is None
    endless.end()
    assert not endless.is_active()
    short = Call(0.05, "ipv4:127.0.0.1:5")
    assert short.is_active() and short.peer() == "ipv4:127.0.0.1:5"
    time.sleep(0.06)
    assert not short.is_active() and short.time_remaining() == 0


# --- requests that do not parse ------------------------------------------------------------------

def test_garbage_bytes_to_health_and_reflection_are_an_invalid_argument(
        running_server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    garbage = b"\xff\xff\xff\xff not a protobuf message"
    with grpc.insecure_channel(running_server.address) as channel, \
            caplog.at_level(logging.DEBUG):
        check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                    request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as failure:
            check(garbage, timeout=WAIT)
        assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid HealthCheckRequest" in (failure.value.details() or "")
        reflect = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as failure:
            list(reflect(iter([garbage]), timeout=WAIT))
        assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        unimplemented = channel.unary_unary("/grpc.health.v1.Health/List",
                                            request_serializer=lambda b: b,
                                            response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as failure:
            unimplemented(b"", timeout=WAIT)
        assert failure.value.code() is grpc.StatusCode.UNIMPLEMENTED
        # Still serving, and nothing was logged as a failure.
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest()).status == SERVING
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]


# --- the drain -----------------------------------------------------------------------------------

def _start(*flags: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([sys.executable, "-m", "crossgrad.server", "--address",
                                "127.0.0.1:0", *flags], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "CROSSGRAD_SYMBOLIC_WORKERS": "1"})
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("crossgrad-server listening on 127.0.0.1:"), line
    return process, line.rsplit(" ", 1)[1].strip()


def _slow_differentiate(elements: int) -> pb.DifferentiateRequest:
    """A request whose closed form takes its worker many seconds to derive."""
    def tensor(values: np.ndarray) -> pb.Tensor:
        array = values.astype("<f4")
        return pb.Tensor(shape=array.shape, dtype=pb.DTYPE_FLOAT32, data=array.tobytes())

    return pb.DifferentiateRequest(formula="mean(sigmoid(w * x + b))", values={
        "w": tensor(np.linspace(-1, 1, elements)), "x": tensor(np.linspace(0, 2, elements)),
        "b": tensor(np.array(0.1))})


def test_sigterm_drains_within_the_grace_period_then_exits() -> None:
    process, address = _start("--grace", "1", "--threads", "2")
    try:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.AutogradServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest()).status == SERVING
            in_flight = [stub.Differentiate.future(_slow_differentiate(20_000)) for _ in range(3)]
            time.sleep(0.5)
            assert not any(call.done() for call in in_flight)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            # Draining: the port is open, health says to go elsewhere, and so do new calls.
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=WAIT).status == \
                NOT_SERVING
            with pytest.raises(grpc.RpcError) as refused:
                stub.ListOps(pb.ListOpsRequest(), timeout=WAIT)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "shutting down" in (refused.value.details() or "")
            assert process.wait(timeout=WAIT) == 0
            # The grace period (1 s) plus at most a second; generous on a loaded machine.
            assert time.monotonic() - signalled < 3.5
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_grace_zero_still_turns_health_not_serving_first() -> None:
    process, address = _start("--grace", "0")
    try:
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=WAIT)
            assert next(watch).status == SERVING
            process.send_signal(signal.SIGTERM)
            seen = []
            with pytest.raises(grpc.RpcError):
                for answer in watch:
                    seen.append(answer.status)
            assert seen == [NOT_SERVING]
            assert process.wait(timeout=WAIT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
