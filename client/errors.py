"""gRPC statuses to Python exceptions: the SDK's one mapping.

A user's code catches what it would catch with PyTorch, never ``grpc.RpcError``. The server names
the built-in type PyTorch raises (ErrorInfo metadata "pythonException") for its usage errors, and
its message is PyTorch's; every other status maps by its code, below.
"""

from __future__ import annotations

import grpc
from crossgrad.engine.errors import CrossgradError
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class ServiceError(CrossgradError, RuntimeError):
    """A call the service refused or could not complete; ``code`` is the gRPC status code's name,
    ``reason`` the ErrorInfo reason (e.g. "LIMIT_EXCEEDED")."""

    def __init__(self, message: str, code: str, reason: str, step: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.step = step  # the index of the Run step that failed, when the server says

    def located(self, where: str) -> ServiceError:
        """The same error, its message prefixed with ``where`` (a deferred operation's line)."""
        return type(self)(f"{where}: {self.message}", self.code, self.reason, self.step)


class SessionGone(ServiceError):
    """The SDK's session no longer exists on the server (expired after its idle TTL, deleted, or
    the server restarted): the tensors made in it cannot be used any more."""


class ServiceUnavailable(ServiceError, ConnectionError):
    """No replica could be reached (after the retries)."""


# By status code, for statuses without a Python exception type named by the server.
_BY_CODE: dict[grpc.StatusCode, type[ServiceError]] = {
    grpc.StatusCode.UNAVAILABLE: ServiceUnavailable,
}
_BUILTINS = {"RuntimeError": RuntimeError, "ValueError": ValueError, "IndexError": IndexError,
             "TypeError": TypeError, "NotImplementedError": NotImplementedError}


def from_rpc_error(error: grpc.RpcError, session_id: str = "") -> Exception:
    """The Python exception for a failed call: PyTorch's type and message for a usage error,
    ``SessionGone`` naming the session, else a ``ServiceError`` with the status's message."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    message = error.details() if isinstance(error, grpc.Call) else str(error)
    reason, metadata = "", {}
    status = rpc_status.from_call(error) if isinstance(error, grpc.Call) else None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason, dict(info.metadata)
    if reason == "SESSION_NOT_FOUND":
        shown = session_id[:8] + "…" if len(session_id) > 8 else session_id
        return SessionGone(f"crossgrad session {shown!r} no longer exists on the server: it "
                           "expired after its idle TTL, was deleted, or the server restarted; "
                           "tensors made in it cannot be used (connect again for a new session)",
                           code.name, reason)
    step = int(metadata["step"]) if metadata.get("step", "").isdigit() else None
    python = _BUILTINS.get(metadata.get("pythonException", ""))
    if python is not None and reason in ("USAGE_ERROR", "SHAPE_MISMATCH",
                                         "DIMENSION_OUT_OF_RANGE", "DTYPE_MISMATCH"):
        # PyTorch's own words and type: a user's ``except RuntimeError`` works as with torch.
        return _typed(python)(message, code.name, reason, step)
    kind = _BY_CODE.get(code, ServiceError)
    return kind(f"{message} ({code.name}{', ' + reason if reason else ''})", code.name, reason,
                step)


def _typed(python: type[Exception]) -> type[ServiceError]:
    """The exception class that is a ``python`` (the built-in PyTorch raises) and a
    ``ServiceError``."""
    name = f"Service{python.__name__}"
    cls = _TYPED.get(name)
    if cls is None:
        cls = _TYPED[name] = type(name, (ServiceError, python), {})
    return cls


_TYPED: dict[str, type[ServiceError]] = {}
