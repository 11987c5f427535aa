"""Differential tests of the creation functions (``arange``, ``linspace``, ``full``, ``eye``,
``zeros``/``ones`` and their ``_like`` forms) against PyTorch, on the engine and the SDK: values
and dtypes, ``requires_grad``, and PyTorch's errors for bad arguments."""

from __future__ import annotations

from functools import partial
from types import ModuleType

import numpy as np
import pytest
from crossgrad.engine import factories

from .test_torch_differential import Recorder, assert_same, sdk_server, sdk_session

pytestmark = pytest.mark.torch
__all__ = ["sdk_server", "sdk_session"]  # fixtures the harness's runners need

ARANGES = [(5,), (1, 4), (5, 0, -1), (0, 1, 0.1), (0.0, 3), (1, 2.5, 0.5), (-1, 1, 0.3),
           (0.1, 3.7, 0.7), (-3, 10, 4), (3, 3), (True,)]
LINSPACES = [(0, 1, 5), (-3.3, 2.9, 11), (1e-3, 5.5, 100), (0, 1, 1), (0, 1, 0), (2, -2, 6),
             (0.1, 0.7, 13)]


def ranges(lib: ModuleType, rec: Recorder) -> None:
    for args in ARANGES:
        rec.call(f"arange{args}", partial(lib.arange, *args))
        rec.call(f"arange{args} float64", partial(lib.arange, *args, dtype=lib.float64))
    for args in [(0.5, 3), (0, 3.5, 1.5), (-2.5, 3)]:
        rec.call(f"arange{args} int64", partial(lib.arange, *args, dtype=lib.int64))
    for args in LINSPACES:
        rec.call(f"linspace{args}", partial(lib.linspace, *args))
        rec.call(f"linspace{args} float64", partial(lib.linspace, *args, dtype=lib.float64))
    for args in [(0, 10, 5), (0, 10, 4), (-3, 10, 4), (0.5, 10.5, 4)]:
        rec.call(f"linspace{args} int64", partial(lib.linspace, *args, dtype=lib.int64))


def filled(lib: ModuleType, rec: Recorder) -> None:
    rec.call("full int", lambda: lib.full((2,), 3))
    rec.call("full float", lambda: lib.full((2, 2), 3.5))
    rec.call("full bool", lambda: lib.full((2,), True))
    rec.call("full 0-d", lambda: lib.full([], 2.0))
    rec.call("full nan", lambda: lib.full((2,), float("nan")))
    rec.call("full float64", lambda: lib.full((2,), 3, dtype=lib.float64))
    rec.call("full int64 of a float", lambda: lib.full((2,), 1.5, dtype=lib.int64))
    rec.call("full requires_grad", lambda: lib.full((2, 2), 1.5, requires_grad=True))
    rec.call("eye(2)", lambda: lib.eye(2))
    rec.call("eye(2, 3)", lambda: lib.eye(2, 3))
    rec.call("eye int64", lambda: lib.eye(2, dtype=lib.int64))
    rec.call("eye bool", lambda: lib.eye(2, dtype=lib.bool))
    rec.call("eye(0)", lambda: lib.eye(0))
    rec.call("eye(2, 0)", lambda: lib.eye(2, 0))
    rec.call("eye requires_grad", lambda: lib.eye(3, requires_grad=True))
    rec.call("zeros int64", lambda: lib.zeros(2, 3, dtype=lib.int64))
    rec.call("ones float64 requires_grad",
             lambda: lib.ones((2, 3), dtype=lib.float64, requires_grad=True))
    x = lib.tensor([[1.0, 2.0]], dtype=lib.float64)
    rec.call("zeros_like", lambda: lib.zeros_like(x))
    rec.call("ones_like int64", lambda: lib.ones_like(x, dtype=lib.int64))
    rec.call("arange requires_grad", lambda: lib.arange(0, 1, 0.25, requires_grad=True))


def refusals(lib: ModuleType, rec: Recorder) -> None:
    rec.call("arange int requires_grad", lambda: lib.arange(3, requires_grad=True))
    rec.call("arange step 0", lambda: lib.arange(0, 5, 0))
    rec.call("arange int64 step 0.5", lambda: lib.arange(0, 3, 0.5, dtype=lib.int64))
    rec.call("arange wrong sign", lambda: lib.arange(5, 0, 1))
    rec.call("arange inf", lambda: lib.arange(float("inf")))
    rec.call("arange bool", lambda: lib.arange(5, dtype=lib.bool))
    rec.call("arange end by keyword", lambda: lib.arange(end=3))
    rec.call("arange float end by keyword", lambda: lib.arange(end=2.5))
    rec.call("arange start and end by keyword", lambda: lib.arange(start=1, end=3))
    rec.call("arange str", lambda: lib.arange("a"))
    rec.call("linspace -1 steps", lambda: lib.linspace(0, 1, -1))
    rec.call("linspace bool", lambda: lib.linspace(0, 1, 3, dtype=lib.bool))
    rec.call("eye(-1)", lambda: lib.eye(-1))
    rec.call("eye(2.0)", lambda: lib.eye(2.0))
    rec.call("zeros(-1)", lambda: lib.zeros(-1))
    rec.call("zeros int64 requires_grad",
             lambda: lib.zeros(2, dtype=lib.int64, requires_grad=True))
    rec.call("full of an int size", lambda: lib.full(2, 1.0))
    rec.call("full float size", lambda: lib.full((2.0,), 1))


@pytest.mark.parametrize("scenario", [ranges, filled, refusals], ids=lambda s: s.__name__)
def test_creation_matches_torch(require_torch: ModuleType, scenario: object) -> None:
    assert_same(require_torch, scenario)  # type: ignore[arg-type]


def test_made_tensors_are_leaves_with_grads(require_torch: ModuleType) -> None:
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        w = lib.full((3,), 2.0, requires_grad=True)
        x = lib.linspace(-1, 1, 3)
        y = lib.arange(3.0) * lib.ones(3)
        (w * x + w * y).sum().backward()
        rec.log("w.grad", w.grad)
        rec.log("w.is_leaf", w.is_leaf)

    assert_same(require_torch, scenario)


def test_linspace_ends_are_exact() -> None:
    # Counted from both ends, the last value is ``end`` itself, which a forward-only count from
    # ``start`` misses by rounding (the case NumPy's own linspace also guards).
    values, _ = factories.linspace_values(-3.3, 2.9, 11)
    assert values[-1] == np.float32(2.9)
    assert values[0] == np.float32(-3.3)
