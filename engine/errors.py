"""The engine's typed errors, all of them.

Each carries the name of the gRPC status it maps to as a plain string (the engine never imports
grpc; the server maps these names to codes in one place) and its reason, the UPPER_SNAKE_CASE
word of AIP-193's ErrorInfo, inherited from the nearest class that names one. Each also derives
from the built-in exception type PyTorch raises in the same situation, so ``except RuntimeError``
code written for PyTorch works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .check import CheckReport

_NAME_CHARS = 64  # names are client-chosen: echo a bounded prefix, not a megabyte


def short_name(name: str) -> str:
    """A client-chosen name for a message: quoted, at most ``_NAME_CHARS`` characters of it."""
    return repr(name) if len(name) <= _NAME_CHARS else repr(name[:_NAME_CHARS]) + "…"


class CrossgradError(Exception):
    """Base of every error the engine raises on purpose."""

    status = "INTERNAL"
    reason = "INVALID_REQUEST"

    def __init__(self, message: str, *, node: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.node = node  # the graph node the error is about, when there is one


class InvalidArgument(CrossgradError, ValueError):
    """A malformed graph, formula, attribute or value."""

    status = "INVALID_ARGUMENT"


class ShapeError(CrossgradError, RuntimeError):
    """Operand shapes that do not fit the op (PyTorch raises RuntimeError)."""

    status = "INVALID_ARGUMENT"
    reason = "SHAPE_MISMATCH"


class DimensionError(CrossgradError, IndexError):
    """A dimension index out of range (PyTorch raises IndexError)."""

    status = "INVALID_ARGUMENT"
    reason = "DIMENSION_OUT_OF_RANGE"


class UsageError(CrossgradError, RuntimeError):
    """A call PyTorch refuses in the current state: backward twice, in-place on a leaf, ..."""

    status = "FAILED_PRECONDITION"
    reason = "USAGE_ERROR"


class DTypeError(CrossgradError, TypeError):
    """A value of a type the op does not take."""

    status = "INVALID_ARGUMENT"
    reason = "DTYPE_MISMATCH"


class NoKernel(CrossgradError, NotImplementedError):
    """An op PyTorch has no kernel for in its operands' dtype (``abs`` of a bool tensor): its
    dispatcher's NotImplementedError."""

    status = "INVALID_ARGUMENT"
    reason = "DTYPE_MISMATCH"


def refusal(message: str) -> CrossgradError:
    """PyTorch's refusal of an op's operands by their dtypes, typed as PyTorch types it: a
    NotImplementedError where its dispatcher has no kernel ("... not implemented for 'Bool'"),
    a RuntimeError otherwise."""
    return NoKernel(message) if "not implemented for" in message else UsageError(message)


class LimitExceeded(InvalidArgument):
    """A request past a configured limit (nodes, elements, formula length or nesting)."""

    status = "RESOURCE_EXHAUSTED"
    reason = "LIMIT_EXCEEDED"


class DeadlineExceeded(CrossgradError):
    """The symbolic derivation did not finish before a deadline: a caller's (it stopped waiting),
    or the task's own ``limit`` (then set: its worker was stopped)."""

    status = "DEADLINE_EXCEEDED"
    reason = "DEADLINE_EXCEEDED"

    def __init__(self, message: str, limit: float | None = None) -> None:
        super().__init__(message)
        self.limit = limit


class WorkerFailed(CrossgradError):
    """No worker could finish the task: it died (killed by the system, a crash in native code:
    ``died`` says how, when it died running the task), none could start, the task was stopped to
    free its worker, or the pool was closed."""

    status = "INTERNAL"

    def __init__(self, message: str, died: str = "") -> None:
        super().__init__(message)
        self.died = died


class TaskFailed(CrossgradError):
    """The task itself raised in its worker (``error``, when it could be sent back): it would
    fail the same way again."""

    status = "INTERNAL"

    def __init__(self, message: str, error: BaseException | None = None) -> None:
        super().__init__(message)
        self.error = error


class CheckFailed(CrossgradError):
    """A STRICT check found the two derivations disagreeing: the gradient is not returned.

    A disagreement means one derivation is wrong, a fault of crossgrad's and not of the request,
    hence INTERNAL; the report says where.
    """

    status = "INTERNAL"
    reason = "CHECK_DISAGREEMENT"

    def __init__(self, report: CheckReport) -> None:
        super().__init__(f"the numeric and closed-form gradients disagree, so none is returned "
                         f"(check mode STRICT): {report.reason}")
        self.report = report
