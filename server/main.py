"""``crossgrad-server``: start the service, serve until SIGTERM, then drain.

``serve(config)`` starts a server in this process and returns once it listens (the tests, the
benchmark and the SDK's embedded server use it); ``main()`` is the console script.

Threads: crossgrad's methods run in a pool of ``config.threads`` threads; ``grpc.health.v1.Health``
and ``ListOps`` in a pool of their own, and server reflection in a third (a reflection stream holds
its thread while the client keeps it open). However many crossgrad calls wait for their pool, a
health check never queues behind them: a busy replica still answers it within milliseconds.
(An asyncio server would isolate health as well, but handing each call from its event loop to a
worker thread and back costs two more thread wake-ups per call: a third more time per Backward on
a 2-core machine.)

Each crossgrad method is called as ``servicer.Method(request, call)``, ``call`` a ``Call`` (how long
the client still waits, and whether it still does); it answers or raises, and every exception
becomes a status in ``status.to_status``, the one mapping. A request whose bytes do not parse, to
any method served here, answers INVALID_ARGUMENT.

Shutdown (SIGTERM or SIGINT, or ``RunningServer.stop(grace)``): health turns NOT_SERVING at once and
new crossgrad calls answer UNAVAILABLE, while the port stays open and calls in flight finish, for
at most ``grace`` seconds; then the port closes, calls still running are cancelled and the
symbolic workers stop. ``main`` then exits without waiting for worker threads still busy in the
engine (their answers have nowhere to go).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from typing import Any

import grpc
from crossgrad.engine.errors import InvalidArgument
from crossgrad.engine.solver import Symbolic
from crossgrad.v1 import crossgrad_pb2 as pb
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

from . import config as configuration
from .call import Call
from .config import Config
from .errors import ServerDraining
from .memory_store import MemoryStore
from .servicer import Servicer
from .sessions import SessionStore
from .status import to_status

SERVICE = pb.DESCRIPTOR.services_by_name["AutogradService"]
HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"]
REFLECTION = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]
log = logging.getLogger("crossgrad.server")

# crossgrad's methods that never block (ListOps copies a prebuilt message): served beside health.
_LIGHT = frozenset({"ListOps"})
_LIGHT_THREADS = 2  # health checks and ListOps: microseconds each
_REFLECTION_THREADS = 2
# gRPC's threaded server gives a call without a deadline the end of time as one.
_NO_DEADLINE = 1e9  # seconds: more than any client means
# How long ``stop`` waits, past the grace period, for gRPC to close the port and cancel the calls.
_STOP_MARGIN = 0.5

_HANDLER_KINDS = {  # by (client streaming, server streaming)
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


# --- requests that do not parse ------------------------------------------------------------------

class _Unparsable:
    """A request whose bytes are not the method's message (so the call gets INVALID_ARGUMENT,
    not the INTERNAL and logged traceback gRPC gives a deserializer that raises)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _lenient(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def read(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as error:
            return _Unparsable(error)
    return read


def _refuse(method: MethodDescriptor, request: _Unparsable,
            context: grpc.ServicerContext) -> None:
    context.abort_with_status(to_status(InvalidArgument(
        f"the request is not a valid {method.input_type.name} message ({request.error})")))


def _parsed(method: MethodDescriptor, requests: Iterator[Any],
            context: grpc.ServicerContext) -> Iterator[Any]:
    for request in requests:
        if isinstance(request, _Unparsable):
            _refuse(method, request, context)
        yield request


def _tolerant(servicer: object, pool: futures.ThreadPoolExecutor,
              ) -> Callable[[MethodDescriptor], Callable[..., Any] | None]:
    """For gRPC's own servicers (health, reflection): each method, refusing a request that does
    not parse, run in ``pool``; None for one the servicer leaves to its generated base class
    (gRPC then answers UNIMPLEMENTED, without the base's logged NotImplementedError)."""
    def behavior(method: MethodDescriptor) -> Callable[..., Any] | None:
        implementation = getattr(servicer, method.name)
        if implementation.__module__.endswith("_pb2_grpc"):
            return None

        def serve(request: Any, context: grpc.ServicerContext, *more: Any) -> Any:
            if method.client_streaming:
                request = _parsed(method, request, context)
            elif isinstance(request, _Unparsable):
                _refuse(method, request, context)
            return implementation(request, context, *more)

        # gRPC's per-method hooks: the pool to run in, and (health's Watch) a callback to send
        # each response with instead of a thread blocked for the stream's life.
        serve.experimental_thread_pool = pool  # type: ignore[attr-defined]
        serve.experimental_non_blocking = getattr(  # type: ignore[attr-defined]
            implementation, "experimental_non_blocking", False)
        return serve
    return behavior


def _service_handler(service: ServiceDescriptor,
                     behavior: Callable[[MethodDescriptor], Callable[..., Any] | None],
                     ) -> grpc.GenericRpcHandler:
    """gRPC handlers for ``service``'s methods, each with the behavior ``behavior`` gives it (none
    for None) and a request deserializer that never raises."""
    handlers = {}
    for method in service.methods:
        serving = behavior(method)
        if serving is None:
            continue
        kind = _HANDLER_KINDS[method.client_streaming, method.server_streaming]
        handlers[method.name] = kind(
            serving,
            request_deserializer=_lenient(GetMessageClass(method.input_type).FromString),
            response_serializer=lambda response: response.SerializeToString())
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


# --- crossgrad's methods -------------------------------------------------------------------------

class _Calls:
    """crossgrad's methods: refused once the server drains, errors made statuses; and the count of
    calls in flight, which a drain waits for."""

    def __init__(self, servicer: Servicer, light_pool: futures.ThreadPoolExecutor) -> None:
        self._servicer = servicer
        self._light_pool = light_pool
        self._draining = False
        self._in_flight = 0
        self._changed = threading.Condition()

    def behavior(self, method: MethodDescriptor) -> Callable[..., Any]:
        work = getattr(self._servicer, method.name)

        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, _Unparsable):
                _refuse(method, request, context)
            try:
                return work(request, self._admit(context))
            except Exception as error:
                context.abort_with_status(to_status(error, request))

        if method.name in _LIGHT:
            handle.experimental_thread_pool = self._light_pool  # type: ignore[attr-defined]
        return handle

    def _admit(self, context: grpc.ServicerContext) -> Call:
        with self._changed:
            if self._draining:
                raise ServerDraining()
            self._in_flight += 1
        remaining = context.time_remaining()
        call = Call(None if remaining is None or remaining > _NO_DEADLINE else remaining,
                    context.peer())

        # Once the RPC is over: its status sent, or cancelled by the client or its deadline (the
        # thread may still be running; ``call`` tells it nobody waits for its answer).
        def finished() -> None:
            call.end()
            with self._changed:
                self._in_flight -= 1
                self._changed.notify_all()

        if not context.add_callback(finished):  # already over
            finished()
        return call

    def drain(self, grace: float) -> bool:
        """Refuse new calls, then wait up to ``grace`` seconds for those in flight to end; whether
        they all did."""
        with self._changed:
            self._draining = True
            return self._changed.wait_for(lambda: not self._in_flight, grace)


# --- the server ----------------------------------------------------------------------------------

class RunningServer:
    """A started server: its address, and ``stop`` (drain within ``grace`` seconds)."""

    def __init__(self, server: grpc.Server, port: int, host: str,
                 health_servicer: health.HealthServicer, calls: _Calls,
                 pools: Sequence[futures.ThreadPoolExecutor], symbolic: Symbolic,
                 store: SessionStore) -> None:
        self.server = server
        self.port = port
        self.address = f"{host}:{port}"
        self.health = health_servicer
        self.symbolic = symbolic
        self.store = store
        self._calls = calls
        self._pools = pools

    def stop(self, grace: float | None = None) -> None:
        """Drain, then stop: health NOT_SERVING and new calls UNAVAILABLE at once, calls in flight
        get up to ``grace`` seconds (None: none), then the port closes and the symbolic workers
        stop. Returns within ``grace`` plus about half a second: threads still running are not
        waited for."""
        started = time.monotonic()
        self.health.enter_graceful_shutdown()
        if not self._calls.drain(grace or 0.0):
            log.info("calls still running after the %g s grace period are cancelled", grace or 0)
        # Closes the port and cancels what is still running (health watches, reflection streams).
        self.server.stop(0).wait(_STOP_MARGIN)
        # Unblocks the threads waiting for a derivation; a thread busy in the engine itself runs
        # on, its answer unread.
        self.symbolic.close()
        self.store.close()
        for pool in self._pools:
            pool.shutdown(wait=False, cancel_futures=True)
        log.debug("stopped in %.2f s", time.monotonic() - started)


def serve(config: Config, store: SessionStore | None = None) -> RunningServer:
    """Start a server for ``config`` in this process and return it, serving. ``store``: the
    sessions' store (default: a new in-memory one); replicas given one store share sessions."""
    store = store if store is not None else MemoryStore(config.store_config)
    symbolic = Symbolic(config.caps)
    symbolic.budget.warm()
    pool = futures.ThreadPoolExecutor(config.threads, thread_name_prefix="crossgrad-call")
    light_pool = futures.ThreadPoolExecutor(_LIGHT_THREADS, thread_name_prefix="crossgrad-health")
    reflection_pool = futures.ThreadPoolExecutor(_REFLECTION_THREADS,
                                                 thread_name_prefix="crossgrad-reflection")
    pools = (pool, light_pool, reflection_pool)
    server = grpc.server(pool, options=[
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 0)])
    calls = _Calls(Servicer(config, store, symbolic), light_pool)
    health_servicer = health.HealthServicer()
    for name in ("", SERVICE.full_name):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    handlers = [_service_handler(SERVICE, calls.behavior),
                _service_handler(HEALTH, _tolerant(health_servicer, light_pool))]
    if config.reflection:
        names = (SERVICE.full_name, HEALTH.full_name, REFLECTION.full_name)
        handlers.append(_service_handler(
            REFLECTION, _tolerant(reflection.ReflectionServicer(names), reflection_pool)))
    server.add_generic_rpc_handlers(handlers)
    host = config.address.rpartition(":")[0]
    try:
        port = server.add_insecure_port(config.address)
    except RuntimeError:  # gRPC's "failed to bind"
        port = 0
    if port == 0:
        symbolic.close()
        store.close()
        raise SystemExit(f"crossgrad-server: cannot listen on {config.address}")
    server.start()
    return RunningServer(server, port, host or "127.0.0.1", health_servicer, calls, pools,
                         symbolic, store)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = configuration.parse(argv)
    running = serve(config)
    # Everything imported so far (NumPy, SymPy, SymEngine, gRPC: ~300k objects) lives as long as
    # the process: out of the collector's sight, a full collection no longer scans it.
    gc.freeze()
    print(f"crossgrad-server listening on {running.address}", flush=True)
    stopping = threading.Event()

    def on_signal(number: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stopping.wait()
    log.info("draining: health NOT_SERVING, up to %g s for calls in flight", config.grace)
    running.stop(config.grace)
    log.info("stopped")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Nobody waits for an answer any more, but a pool thread still busy (in NumPy, say: it cannot
    # be interrupted) would keep the interpreter alive at exit, which joins the pools' threads.
    # Leave without waiting for it.
    os._exit(0)
