"""Tests for ``format_tensor``: golden strings, then differential tests against PyTorch's repr."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from crossgrad.engine import dtypes
from crossgrad.engine.dtypes import DType
from crossgrad.engine.printing import format_tensor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

F32, F64, I64, BOOL = dtypes.float32, dtypes.float64, dtypes.int64, dtypes.bool_
INF, NAN = math.inf, math.nan

# (values, dtype, keyword flags, what PyTorch 2.13 prints); expected strings captured from torch.
GOLDEN: list[tuple[Any, DType, dict[str, Any], str]] = [
    # The scalar forms seen in crossgrad's examples.
    (5.0, F32, {"requires_grad": True}, "tensor(5., requires_grad=True)"),
    (25.0, F32, {"grad_fn": "PowBackward0"}, "tensor(25., grad_fn=<PowBackward0>)"),
    (-7.6613, F32, {}, "tensor(-7.6613)"),
    (6.7, F32, {"grad_fn": "AddBackward0"}, "tensor(6.7000, grad_fn=<AddBackward0>)"),
    (8.0, F32, {}, "tensor(8.)"),
    (2.0, F64, {}, "tensor(2., dtype=torch.float64)"),
    (5, I64, {}, "tensor(5)"),
    (0.1, F32, {}, "tensor(0.1000)"),
    (-0.0, F32, {}, "tensor(-0.)"),
    # grad_fn wins over requires_grad, as for any non-leaf tensor.
    (1.0, F32, {"requires_grad": True, "grad_fn": "MulBackward0"},
     "tensor(1., grad_fn=<MulBackward0>)"),
    # Vectors: one style and width for all elements.
    ([2 / 3, 2.0, 8 / 3], F32, {}, "tensor([0.6667, 2.0000, 2.6667])"),
    ([1.0, 3.0, 4.0], F32, {"requires_grad": True}, "tensor([1., 3., 4.], requires_grad=True)"),
    ([1.0, 2.0], F32, {}, "tensor([1., 2.])"),
    ([True, False], BOOL, {}, "tensor([ True, False])"),
    ([-5, 120, 7], I64, {}, "tensor([ -5, 120,   7])"),
    ([2.5, 3.5, 0.5], F32, {}, "tensor([2.5000, 3.5000, 0.5000])"),
    # float32 values print as their stored value: 1.00005f is 1.0000499..., 123456.7f is ...7031.
    ([1.00005, 2.0], F32, {}, "tensor([1.0000, 2.0000])"),
    ([1.00005, 2.0], F64, {}, "tensor([1.0001, 2.0000], dtype=torch.float64)"),
    ([123456.7], F32, {}, "tensor([123456.7031])"),
    # Scientific notation: a spread over 1000x, anything above 1e8 or below 1e-4.
    ([1e-8, 1.0], F32, {}, "tensor([1.0000e-08, 1.0000e+00])"),
    ([1e10, 1.0], F32, {}, "tensor([1.0000e+10, 1.0000e+00])"),
    ([1.0, 1001.0], F32, {}, "tensor([1.0000e+00, 1.0010e+03])"),
    ([1.5e-5], F32, {}, "tensor([1.5000e-05])"),
    ([1e-8, INF, -0.0], F32, {}, "tensor([1.0000e-08,        inf, -0.0000e+00])"),
    # Zeros, inf and nan do not influence the style or the width.
    ([INF, -INF, NAN, 1.0], F32, {}, "tensor([inf, -inf, nan, 1.])"),
    ([0.1, NAN], F32, {}, "tensor([0.1000,    nan])"),
    ([0.0, -0.0], F32, {}, "tensor([0., -0.])"),
    ([-0.0, 1.5], F32, {}, "tensor([-0.0000, 1.5000])"),
    # Matrices and 3-D blocks.
    ([[1, 2], [3, 4]], I64, {}, "tensor([[1, 2],\n        [3, 4]])"),
    ([[0.0, 0.0], [0.0, 0.0]], F32, {"requires_grad": True},
     "tensor([[0., 0.],\n        [0., 0.]], requires_grad=True)"),
    (np.arange(24).reshape(2, 3, 4), I64, {},
     "tensor([[[ 0,  1,  2,  3],\n         [ 4,  5,  6,  7],\n         [ 8,  9, 10, 11]],\n\n"
     "        [[12, 13, 14, 15],\n         [16, 17, 18, 19],\n         [20, 21, 22, 23]]])"),
    # Long rows wrap at 80 columns.
    (np.arange(30) * 1.5, F32, {},
     "tensor([ 0.0000,  1.5000,  3.0000,  4.5000,  6.0000,  7.5000,  9.0000, 10.5000,\n"
     "        12.0000, 13.5000, 15.0000, 16.5000, 18.0000, 19.5000, 21.0000, 22.5000,\n"
     "        24.0000, 25.5000, 27.0000, 28.5000, 30.0000, 31.5000, 33.0000, 34.5000,\n"
     "        36.0000, 37.5000, 39.0000, 40.5000, 42.0000, 43.5000])"),
    # Suffixes that would pass column 80 move to a new line, singly or together.
    (np.arange(8) / 3, F64, {},
     "tensor([0.0000, 0.3333, 0.6667, 1.0000, 1.3333, 1.6667, 2.0000, 2.3333],\n"
     "       dtype=torch.float64)"),
    (np.arange(8) * 2 / 3, F64, {"grad_fn": "MulBackward0"},
     "tensor([0.0000, 0.6667, 1.3333, 2.0000, 2.6667, 3.3333, 4.0000, 4.6667],\n"
     "       dtype=torch.float64, grad_fn=<MulBackward0>)"),
    (np.arange(14) / 3, F64, {"requires_grad": True},
     "tensor([0.0000, 0.3333, 0.6667, 1.0000, 1.3333, 1.6667, 2.0000, 2.3333, 2.6667,\n"
     "        3.0000, 3.3333, 3.6667, 4.0000, 4.3333], dtype=torch.float64,\n"
     "       requires_grad=True)"),
    # Past 1000 elements only three items at each end of each dimension are shown.
    (np.arange(1001), F32, {}, "tensor([   0.,    1.,    2.,  ...,  998.,  999., 1000.])"),
    (np.arange(2000).reshape(200, 10), I64, {},
     "tensor([[   0,    1,    2,  ...,    7,    8,    9],\n"
     "        [  10,   11,   12,  ...,   17,   18,   19],\n"
     "        [  20,   21,   22,  ...,   27,   28,   29],\n"
     "        ...,\n"
     "        [1970, 1971, 1972,  ..., 1977, 1978, 1979],\n"
     "        [1980, 1981, 1982,  ..., 1987, 1988, 1989],\n"
     "        [1990, 1991, 1992,  ..., 1997, 1998, 1999]])"),
    (np.arange(1200).reshape(2, 2, 300) * 1e-3, F32, {},
     "tensor([[[0.0000e+00, 1.0000e-03, 2.0000e-03,  ..., 2.9700e-01,\n"
     "          2.9800e-01, 2.9900e-01],\n"
     "         [3.0000e-01, 3.0100e-01, 3.0200e-01,  ..., 5.9700e-01,\n"
     "          5.9800e-01, 5.9900e-01]],\n\n"
     "        [[6.0000e-01, 6.0100e-01, 6.0200e-01,  ..., 8.9700e-01,\n"
     "          8.9800e-01, 8.9900e-01],\n"
     "         [9.0000e-01, 9.0100e-01, 9.0200e-01,  ..., 1.1970e+00,\n"
     "          1.1980e+00, 1.1990e+00]]])"),
    # Empty tensors name any shape but (0,) and any dtype but float32.
    (np.zeros(0), F32, {}, "tensor([])"),
    (np.zeros((0, 3)), F32, {}, "tensor([], size=(0, 3))"),
    (np.zeros((0, 3)), F64, {}, "tensor([], size=(0, 3), dtype=torch.float64)"),
    (np.zeros(0), I64, {}, "tensor([], dtype=torch.int64)"),
    (np.zeros((2, 0)), BOOL, {}, "tensor([], size=(2, 0), dtype=torch.bool)"),
    (np.zeros(0), F32, {"requires_grad": True}, "tensor([], requires_grad=True)"),
]


@pytest.mark.parametrize(("values", "dtype", "flags", "expected"), GOLDEN)
def test_golden(values: Any, dtype: DType, flags: dict[str, Any], expected: str) -> None:
    assert format_tensor(np.asarray(values, dtype=dtype.numpy), dtype, **flags) == expected


# ---- Differential tests against PyTorch -------------------------------------------------------

DTYPES = {"float32": F32, "float64": F64, "int64": I64, "bool": BOOL}
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def shapes(draw: st.DrawFn) -> tuple[int, ...]:
    """Small shapes (0-d to 3-D, empty ones included) or ones of at least 1000 elements."""
    if not draw(st.booleans()):
        return draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9))
    ndim = draw(st.integers(1, 3))
    lead = [draw(st.integers(1, 12)) for _ in range(ndim - 1)]
    # At least 1000 or 1001 elements, so both sides of the threshold come up.
    at_least = draw(st.sampled_from([1000, 1001]))
    last = -(-at_least // math.prod(lead)) + draw(st.integers(0, 40))
    return (*lead, last)


@st.composite
def arrays(draw: st.DrawFn, dtype_names: tuple[str, ...] = tuple(DTYPES)) -> np.ndarray:
    """Seeded random arrays whose values span a drawn range of magnitudes, with specials mixed in.

    NumPy generates the values, so arrays of thousands of elements stay cheap for Hypothesis.
    """
    name = draw(st.sampled_from(dtype_names))
    shape = draw(shapes())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    size = math.prod(shape)
    if name == "bool":
        return rng.random(size).reshape(shape) < draw(st.floats(0, 1))
    top = 18.9 if name == "int64" else (38.0 if name == "float32" else 300.0)
    low = draw(st.floats(-top if name != "int64" else 0.0, top))
    high = draw(st.floats(low, min(top, low + draw(st.sampled_from([0.0, 1.0, 3.0, 9.0, 40.0])))))
    values = 10.0 ** rng.uniform(low, high, size) * rng.choice([-1.0, 1.0], size)
    if name == "int64":
        return values.astype(np.int64).reshape(shape)
    if draw(st.booleans()):
        values = np.round(values)  # integral floats print in their own style
    specials = np.array([0.0, -0.0, math.inf, -math.inf, math.nan])
    mask = rng.random(size) < draw(st.sampled_from([0.0, 0.05, 0.5, 1.0]))
    values[mask] = rng.choice(specials, int(mask.sum()))
    return values.astype(name).reshape(shape)


def _check(torch: ModuleType, array: np.ndarray, **flags: Any) -> None:
    tensor = torch.tensor(array, requires_grad=bool(flags.get("requires_grad")))
    assert format_tensor(array, DTYPES[str(array.dtype)], **flags) == repr(tensor)


@pytest.mark.torch
@FAST
@given(array=arrays())
def test_matches_torch(require_torch: ModuleType, array: np.ndarray) -> None:
    _check(require_torch, array)


@pytest.mark.torch
@pytest.mark.parametrize("shape", [(1000,), (1001,), (10, 100), (10, 10, 10), (7, 11, 13)])
@pytest.mark.parametrize("name", ["float32", "int64"])
def test_matches_torch_at_summarization_threshold(
    require_torch: ModuleType, shape: tuple[int, ...], name: str
) -> None:
    """Exactly 1000 elements print in full, 1001 are summarized."""
    _check(require_torch, (np.arange(math.prod(shape)) * 1.25).astype(name).reshape(shape))


@pytest.mark.torch
@FAST
@given(array=hnp.arrays(
    st.sampled_from([np.float32, np.float64]),
    hnp.array_shapes(min_dims=0, max_dims=2, max_side=6),
    elements={"allow_subnormal": True},
))
def test_matches_torch_on_arbitrary_floats(require_torch: ModuleType, array: np.ndarray) -> None:
    """Any finite or special value, subnormals included, in float32 or float64."""
    _check(require_torch, array)


@pytest.mark.torch
@FAST
@given(array=hnp.arrays(np.int64, hnp.array_shapes(min_dims=0, max_dims=2, max_side=6)))
def test_matches_torch_on_arbitrary_ints(require_torch: ModuleType, array: np.ndarray) -> None:
    _check(require_torch, array)


@pytest.mark.torch
@FAST
@given(array=arrays(("float32", "float64")),
       name=st.none() | st.text("AaBbXyZz", min_size=1, max_size=60))
def test_matches_torch_with_autograd_flags(
    require_torch: ModuleType, array: np.ndarray, name: str | None
) -> None:
    """Leaf tensors show requires_grad; results of an op show its (here: arbitrary) node name."""
    torch = require_torch
    if name is None:
        _check(torch, array, requires_grad=True)
        return

    # An identity autograd.Function's node is named after the class, so suffixes of any length
    # can be checked against PyTorch's line-breaking.
    def forward(ctx: Any, x: Any) -> Any:
        return x.clone()

    def backward(ctx: Any, grad: Any) -> Any:
        return grad

    identity: Any = type(name, (torch.autograd.Function,), {
        "forward": staticmethod(forward), "backward": staticmethod(backward)})
    result = identity.apply(torch.tensor(array, requires_grad=True))
    expected = repr(result)
    assert f"grad_fn=<{name}Backward>" in expected
    actual = format_tensor(array, DTYPES[str(array.dtype)], grad_fn=f"{name}Backward")
    assert actual == expected
