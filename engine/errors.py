"""The engine's typed errors.

Each carries the name of the gRPC status it maps to as a plain string (the engine never imports
grpc; the server maps these names to codes in one place). Each also derives from the built-in
exception type PyTorch raises in the same situation, so ``except RuntimeError`` code written for
PyTorch works.
"""

from __future__ import annotations

_NAME_CHARS = 64  # names are client-chosen: echo a bounded prefix, not a megabyte


def short_name(name: str) -> str:
    """A client-chosen name for a message: quoted, at most ``_NAME_CHARS`` characters of it."""
    return repr(name) if len(name) <= _NAME_CHARS else repr(name[:_NAME_CHARS]) + "…"


class CrossgradError(Exception):
    """Base of every error the engine raises on purpose."""

    status = "INTERNAL"

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


class DimensionError(CrossgradError, IndexError):
    """A dimension index out of range (PyTorch raises IndexError)."""

    status = "INVALID_ARGUMENT"


class UsageError(CrossgradError, RuntimeError):
    """A call PyTorch refuses in the current state: backward twice, in-place on a leaf, ..."""

    status = "FAILED_PRECONDITION"


class DTypeError(CrossgradError, TypeError):
    """A value of a type the op does not take."""

    status = "INVALID_ARGUMENT"
