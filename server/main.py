"""``crossgrad-server``: start the service, serve until SIGTERM, then drain.

``serve(config)`` starts a server in this process (the tests and the SDK's embedded server use
it); ``main()`` is the console script. Besides crossgrad's service the server answers
``grpc.health.v1.Health`` and, unless turned off, server reflection. On SIGTERM (or SIGINT) it
reports NOT_SERVING, lets in-flight calls finish within the grace period, and exits.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import grpc
from crossgrad.engine.differentiation import Symbolic
from crossgrad.engine.errors import InvalidArgument
from crossgrad.v1 import crossgrad_pb2 as pb
from google.protobuf import message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from . import config as configuration
from .config import Config
from .memory_store import MemoryStore
from .servicer import Servicer
from .sessions import StoreConfig
from .status import to_status

SERVICE = pb.DESCRIPTOR.services_by_name["AutogradService"]
log = logging.getLogger("crossgrad.server")


class _Unparsable:
    """A request whose bytes are not the method's message (so the call gets INVALID_ARGUMENT,
    not the INTERNAL gRPC gives a deserializer that raises)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _lenient(parse: Callable[[bytes], message.Message]) -> Callable[[bytes], Any]:
    def read(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as error:
            return _Unparsable(error)
    return read


def _guarded(name: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, _Unparsable):
            context.abort_with_status(to_status(InvalidArgument(
                f"the request is not a valid {name}Request message ({request.error})")))
        return behavior(request, context)
    return call


def _handler(servicer: Servicer) -> grpc.GenericRpcHandler:
    handlers = {}
    for method in SERVICE.methods:
        request_type = getattr(pb, method.input_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _guarded(method.name, getattr(servicer, method.name)),
            request_deserializer=_lenient(request_type.FromString),
            response_serializer=lambda response: response.SerializeToString())
    return grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)


class RunningServer:
    """A started server: its address, and ``stop`` (drain within ``grace`` seconds)."""

    def __init__(self, server: grpc.Server, port: int, host: str, health_servicer: Any,
                 symbolic: Symbolic, store: MemoryStore) -> None:
        self.server = server
        self.port = port
        self.address = f"{host}:{port}"
        self.health = health_servicer
        self.symbolic = symbolic
        self.store = store

    def stop(self, grace: float | None = None) -> None:
        self.health.enter_graceful_shutdown()  # health checks now answer NOT_SERVING
        self.server.stop(grace).wait()
        self.symbolic.close()
        self.store.close()


def serve(config: Config) -> RunningServer:
    """Start a server for ``config`` in this process and return it (serving, in threads)."""
    options = [("grpc.max_receive_message_length", config.max_message_bytes),
               ("grpc.max_send_message_length", config.max_message_bytes),
               ("grpc.so_reuseport", 0)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=config.threads),
                         options=options)
    store = MemoryStore(StoreConfig(max_sessions=config.max_sessions,
                                    default_idle_ttl=config.session_ttl,
                                    max_idle_ttl=max(config.session_ttl, 86_400.0)))
    symbolic = Symbolic(config.caps)
    symbolic.budget.warm()
    server.add_generic_rpc_handlers((_handler(Servicer(config, store, symbolic)),))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE.full_name):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if config.reflection:
        reflection.enable_server_reflection(
            (SERVICE.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    host = config.address.rpartition(":")[0]
    port = server.add_insecure_port(config.address)
    if port == 0:
        raise SystemExit(f"crossgrad-server: cannot listen on {config.address}")
    server.start()
    return RunningServer(server, port, host or "127.0.0.1", health_servicer, symbolic, store)


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
    log.info("draining: health NOT_SERVING, %.0f s for in-flight calls", config.grace)
    running.stop(config.grace)
    sys.exit(0)
