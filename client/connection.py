"""The channel to the service: one target or a list of replicas, retries, call counting.

``target`` is any gRPC target. A list of replicas (``ipv4:127.0.0.1:7001,127.0.0.1:7002``) is
balanced round-robin by gRPC's own ``round_robin`` policy, and a call that fails UNAVAILABLE (a
replica stopped, or draining) is retried by gRPC's retry policy with the same request bytes: the
SDK gives every call that changes state a request_id, so a retry after a lost answer gets the
first answer back and applies nothing twice. Both are gRPC's service config, not hand-written.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from crossgrad.v1 import crossgrad_pb2_grpc as pb_grpc

from .errors import from_rpc_error

SERVICE = "crossgrad.v1.AutogradService"
_SERVICE_CONFIG = json.dumps({
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{
        "name": [{"service": SERVICE}],
        "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.05s", "maxBackoff": "1s",
                        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
    }],
})
_MAX_MESSAGE = 64 * 1024 * 1024  # the server's default message size limit


class _Counting(grpc.UnaryUnaryClientInterceptor):
    """Counts the calls made through the channel, by method (what a test and the benchmark
    read as RPCs per step)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any,
                              request: Any) -> Any:
        method = str(details.method).rsplit("/", 1)[-1]
        with self._lock:
            self.calls[method] = self.calls.get(method, 0) + 1
        return continuation(details, request)


class _Metadata(grpc.UnaryUnaryClientInterceptor):
    """Adds fixed metadata (the API key) to every call."""

    def __init__(self, metadata: Sequence[tuple[str, str]]) -> None:
        self._metadata = tuple(metadata)

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any,
                              request: Any) -> Any:
        details = details._replace(metadata=(*(details.metadata or ()), *self._metadata))
        return continuation(details, request)


class Connection:
    """A channel to ``target`` and the service's stub on it."""

    def __init__(self, target: str, *, api_key: str | None = None,
                 root_certificates: bytes | None = None, timeout: float = 60.0) -> None:
        self.target = target
        self.timeout = timeout
        options = [("grpc.service_config", _SERVICE_CONFIG), ("grpc.enable_retries", 1),
                   ("grpc.max_receive_message_length", _MAX_MESSAGE),
                   ("grpc.max_send_message_length", _MAX_MESSAGE)]
        if root_certificates is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            channel = grpc.secure_channel(target, credentials, options=options)
        else:
            channel = grpc.insecure_channel(target, options=options)
        self.counter = _Counting()
        interceptors: list[Any] = [self.counter]
        if api_key is not None:
            interceptors.append(_Metadata([("authorization", f"Bearer {api_key}")]))
        self._channel = channel
        self.stub = pb_grpc.AutogradServiceStub(grpc.intercept_channel(channel, *interceptors))

    @property
    def calls(self) -> int:
        """Calls made so far, all methods together."""
        return sum(self.counter.calls.values())

    def call(self, method: str, request: Any, *, session_id: str = "") -> Any:
        """``method``'s answer to ``request``; a failure raised as the matching Python error."""
        try:
            return getattr(self.stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error, session_id) from None

    def close(self) -> None:
        self._channel.close()
