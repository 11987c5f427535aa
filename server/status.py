"""Errors to gRPC statuses: the one place where an exception becomes a status code and details.

Every error the engine and the server raise on purpose is a ``CrossgradError`` naming its status
(``.status``) and reason (``.reason``); here they become the code, an ``ErrorInfo`` as AIP-193
lays it out (the service's name as domain, the reason, lowerCamelCase metadata: the node, the
leaf, the Python exception type PyTorch raises, the limit), a ``BadRequest`` field violation for
INVALID_ARGUMENT (the request field's path: repeated fields by index, so a node is
``graph.nodes[3]``, and anything in a formula is ``formula``), and the check report for a STRICT
disagreement. Anything else is a bug: it is logged here with its stack trace and answered
INTERNAL with a message that carries none, so no call ever ends in UNKNOWN.
"""

from __future__ import annotations

import logging

import grpc
from crossgrad.engine.errors import CheckFailed, CrossgradError
from google.protobuf import any_pb2, message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from .errors import VersionMismatch
from .serde import check_report_to_proto

log = logging.getLogger("crossgrad.server")

DOMAIN = "crossgrad.v1.AutogradService"  # AIP-193: the service's registered name
# A status travels in the call's trailers, which gRPC caps at 16 KiB: client-chosen names of any
# length must not push it over (the client would get "Stream removed" instead). The message goes
# there twice (percent-encoded, and inside the base64 details), so budgets are in UTF-8 bytes.
_MESSAGE_BYTES = 1000
_METADATA_BYTES = 256

# NotImplementedError before RuntimeError, which it derives from.
_PYTHON_EXCEPTIONS = (IndexError, TypeError, ValueError, NotImplementedError, RuntimeError)


def to_status(error: BaseException, request: message.Message | None = None) -> grpc.Status:
    """The gRPC status for ``error``, raised while answering ``request`` (when given: it tells
    which request field a node of the error is)."""
    if not isinstance(error, CrossgradError):
        log.exception("internal error", exc_info=error)
        return _status(grpc.StatusCode.INTERNAL, "internal error: the server could not complete "
                       "the call; nothing was changed", "INTERNAL", {})
    code = grpc.StatusCode[error.status]
    reason = error.reason
    metadata = {}
    if error.node is not None:
        metadata["node"] = _bounded(str(error.node), _METADATA_BYTES)
    name = getattr(error, "name", None)
    if isinstance(name, str):
        metadata["leaf"] = _bounded(name, _METADATA_BYTES)
    python = next((cls.__name__ for cls in _PYTHON_EXCEPTIONS if isinstance(error, cls)), None)
    if python is not None:
        metadata["pythonException"] = python
    if isinstance(error, VersionMismatch):
        metadata["version"] = str(error.version)
    limit = getattr(error, "limit", None)
    if isinstance(limit, str):
        metadata["limit"] = limit
    step = getattr(error, "step", None)
    if isinstance(step, int):
        metadata["step"] = str(step)  # the index of the Run step that failed
    text = _bounded(error.message, _MESSAGE_BYTES)
    extra = []
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        where = getattr(error, "field", None) or _field_of_node(error.node, request)
        extra.append(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=_bounded(where, _METADATA_BYTES),
                                                        description=text)]))
    if isinstance(error, CheckFailed):
        extra.append(check_report_to_proto(error.report))
    return _status(code, text, reason, metadata, *extra)


def _field_of_node(node: str | None, request: message.Message | None) -> str:
    """The path of the request field that holds ``node``: its index in the request's graph, or
    the formula it was parsed from."""
    if request is None:
        return ""
    fields = request.DESCRIPTOR.fields_by_name
    if "formula" in fields and request.HasField("formula"):
        return "formula"
    if node is None or "graph" not in fields:
        return ""
    graph = getattr(request, "graph")  # noqa: B009 (a field of some request types only)
    for index, candidate in enumerate(graph.nodes):
        if candidate.id == node:
            return f"graph.nodes[{index}]"
    return "graph"


def _bounded(text: str, size: int) -> str:
    """``text`` cut to at most ``size`` bytes of UTF-8, an ellipsis marking the cut."""
    data = text.encode()
    if len(data) <= size:
        return text
    return data[:size - len("…".encode())].decode(errors="ignore") + "…"


def _status(code: grpc.StatusCode, message: str, reason: str, metadata: dict[str, str],
            *details: object) -> grpc.Status:
    packed = []
    for detail in (error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata),
                   *details):
        box = any_pb2.Any()
        box.Pack(detail)
        packed.append(box)
    return rpc_status.to_status(status_pb2.Status(code=getattr(code_pb2, code.name),
                                                  message=message, details=packed))
