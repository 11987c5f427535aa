"""Grad mode: whether ops record a graph for backward.

Kept in a ContextVar, not a global: the server runs many requests on many threads at once, and one
request's ``no_grad()`` must not leak into another's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, TypeVar

_enabled: ContextVar[bool] = ContextVar("crossgrad_grad_enabled", default=True)

F = TypeVar("F", bound=Callable[..., Any])


def is_grad_enabled() -> bool:
    """Whether ops record a graph in the current context."""
    return _enabled.get()


class set_grad_enabled:
    """Set grad mode for a ``with`` block (or for the rest of the context when called plainly).

    >>> with set_grad_enabled(False):
    ...     y = x * 2        # y.requires_grad is False
    """

    def __init__(self, mode: bool) -> None:
        self._mode = bool(mode)
        self._token: Token[bool] | None = _enabled.set(self._mode)

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._token is not None:
            _enabled.reset(self._token)
            self._token = None


class _GradModeBlock:
    """Base of ``no_grad`` and ``enable_grad``: a context manager and a decorator."""

    mode = True

    def __new__(cls, func: F | None = None) -> Any:
        # ``@no_grad`` without parentheses decorates ``func`` directly, as PyTorch allows.
        block = super().__new__(cls)
        block._tokens = []
        return block if func is None else block(func)

    def __init__(self, func: F | None = None) -> None:
        self._tokens: list[Token[bool]]

    def __enter__(self) -> None:
        self._tokens.append(_enabled.set(self.mode))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        _enabled.reset(self._tokens.pop())

    def __call__(self, fn: F) -> F:
        mode = self.mode

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = _enabled.set(mode)
            try:
                return fn(*args, **kwargs)
            finally:
                _enabled.reset(token)

        return wrapper  # type: ignore[return-value]


class no_grad(_GradModeBlock):
    """Ops inside record no graph: results do not require grad (inference, optimizer steps).

    >>> with no_grad():
    ...     w -= lr * w.grad
    """

    mode = False


class enable_grad(_GradModeBlock):
    """Ops inside record a graph again, even within ``no_grad``."""

    mode = True
