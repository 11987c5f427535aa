"""Tensors made from sizes, ranges and other tensors' shapes, as ``torch``'s creation functions.

The values and dtypes are computed here once, as NumPy arrays; ``Factories`` binds them to a
tensor constructor, so the engine's tensors and the SDK's are made by the same rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from . import dtypes
from .dtypes import DType
from .errors import UsageError
from .refusals import data_dtype
from .tensor import Tensor, tensor

T = TypeVar("T")
Number = int | float | bool


class Shaped(Protocol):
    """What ``zeros_like`` reads of a tensor."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> DType: ...


def sizes(size: tuple[Any, ...], function: str = "zeros") -> tuple[int, ...]:
    """``zeros(2, 3)``'s and ``zeros((2, 3))``'s sizes alike, each an int >= 0."""
    values = size[0] if len(size) == 1 and not isinstance(size[0], int) else size
    for position, d in enumerate(values):
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool):
            raise TypeError(f"{function}(): argument 'size' (position 1) must be tuple of ints, "
                            f"but found element of type {type(d).__name__} at pos {position}")
        if d < 0:
            raise UsageError(f"{function}: Dimension size must be non-negative.")
    return tuple(int(d) for d in values)


def _number(value: Any, function: str, argument: str, position: int) -> Number:
    if isinstance(value, (int, float, bool, np.integer, np.floating)):
        return value.item() if isinstance(value, np.generic) else value
    raise TypeError(f"{function}(): argument '{argument}' (position {position}) must be Number, "
                    f"not {type(value).__name__}")


def _count(value: Any, function: str, argument: str, position: int) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    raise TypeError(f"{function}(): argument '{argument}' (position {position}) must be int, not "
                    f"{type(value).__name__}")


def _refuse_bool(dtype: DType, function: str) -> None:
    if dtype is dtypes.bool_:
        raise NotImplementedError(f'"{function}_cpu" not implemented for \'Bool\'')


def arange_values(start: Any, end: Any = None, step: Any = 1,
                  dtype: DType | None = None) -> tuple[np.ndarray, DType]:
    """``arange``'s values and dtype: int64 when ``start``, ``end`` and ``step`` are all ints,
    the default float otherwise; an integral ``dtype`` truncates the three first, as PyTorch."""
    if end is None:
        bounds = [0, _number(start, "arange", "end", 1), _number(step, "arange", "step", 2)]
    else:
        bounds = [_number(v, "arange", name, position) for position, (v, name) in enumerate(
            ((start, "start"), (end, "end"), (step, "step")), 1)]
    if dtype is None:
        integral = all(isinstance(v, int) for v in bounds)
        dtype = dtypes.int64 if integral else dtypes.DEFAULT_FLOAT
    _refuse_bool(dtype, "arange")
    if bounds[2] == 0:
        raise UsageError("step must be nonzero")
    if not dtype.is_floating_point:
        bounds = [int(v) for v in bounds]
        if bounds[2] == 0:  # a fractional step truncated to 0: Python's error type, as PyTorch's
            raise ValueError("step must be nonzero")
    first, last, stride = bounds
    if not (math.isfinite(first) and math.isfinite(last)):
        raise UsageError(f"unsupported range: {first} -> {last}")
    if (last - first) * stride < 0:
        raise UsageError("upper bound and lower bound inconsistent with step sign")
    # Computed in float64 and rounded once to the dtype, as PyTorch's kernel does.
    count = math.ceil((last - first) / stride)
    values = first + stride * np.arange(count, dtype=np.float64)
    return _cast(values, dtype), dtype


def linspace_values(start: Any, end: Any, steps: Any,
                    dtype: DType | None = None) -> tuple[np.ndarray, DType]:
    """``linspace``'s values: PyTorch's kernel counts the first half from ``start`` and the second
    from ``end``, each a fused multiply-add, so both ends are exact."""
    first, last = _number(start, "linspace", "start", 1), _number(end, "linspace", "end", 2)
    count = _count(steps, "linspace", "steps", 3)
    if count < 0:
        raise UsageError("number of steps must be non-negative")
    dtype = dtype or dtypes.DEFAULT_FLOAT
    _refuse_bool(dtype, "linspace")
    # Integral results step in float64 between truncated bounds; floating ones in their own
    # precision (float32's products are exact in float64, which stands in for the fused
    # multiply-add).
    if dtype.is_floating_point:
        kind = dtype.numpy
    else:
        kind, first, last = np.dtype(np.float64), int(first), int(last)
    a, b = kind.type(first), kind.type(last)
    stride = kind.type((b - a) / kind.type(max(count - 1, 1)))
    index = np.arange(count, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # an infinite bound gives nan, as PyTorch's does
        low = np.float64(a) + np.float64(stride) * index
        high = np.float64(b) - np.float64(stride) * (count - 1 - index)
    values = np.where((index < count // 2) | (count == 1), low, high)
    return _cast(values, dtype), dtype


def full_values(size: Sequence[int], fill_value: Any,
                dtype: DType | None = None) -> tuple[np.ndarray, DType]:
    """``full``'s values; the dtype follows ``fill_value`` (bool, int64, the default float)."""
    if isinstance(size, (int, np.integer)):
        raise TypeError("full(): argument 'size' (position 1) must be tuple of ints, not int")
    shape = sizes((tuple(size),), "full")
    value = _number(fill_value, "full", "fill_value", 2)
    dtype = dtype or data_dtype(value)
    fill = value if dtype.is_floating_point else int(value)
    return np.full(shape, fill, dtype=dtype.numpy), dtype


def eye_values(n: Any, m: Any = None, dtype: DType | None = None) -> tuple[np.ndarray, DType]:
    """``eye``'s values: ones on the diagonal of an n × m matrix."""
    rows = _count(n, "eye", "n", 1)
    cols = rows if m is None else _count(m, "eye", "m", 2)
    for name, count in (("n", rows), ("m", cols)):
        if count < 0:
            raise UsageError(f"{name} must be greater or equal to 0, got {count}")
    dtype = dtype or dtypes.DEFAULT_FLOAT
    return np.eye(rows, cols, dtype=dtype.numpy), dtype


def _cast(values: np.ndarray, dtype: DType) -> np.ndarray:
    if dtype.is_floating_point:
        return values.astype(dtype.numpy)
    return np.trunc(values).astype(dtype.numpy)


class Factories(Generic[T]):
    """torch's creation functions, making tensors with ``make(array, dtype, requires_grad)``."""

    def __init__(self, make: Callable[[np.ndarray, DType, bool], T]) -> None:
        self._make = make

    def zeros(self, *size: Any, dtype: DType | None = None, requires_grad: bool = False) -> T:
        """A tensor of zeros: ``zeros(2, 3)`` or ``zeros((2, 3))``."""
        dtype = dtype or dtypes.DEFAULT_FLOAT
        return self._make(np.zeros(sizes(size, "zeros"), dtype.numpy), dtype, requires_grad)

    def ones(self, *size: Any, dtype: DType | None = None, requires_grad: bool = False) -> T:
        """A tensor of ones: ``ones(2, 3)`` or ``ones((2, 3))``."""
        dtype = dtype or dtypes.DEFAULT_FLOAT
        return self._make(np.ones(sizes(size, "ones"), dtype.numpy), dtype, requires_grad)

    def zeros_like(self, input: Shaped, dtype: DType | None = None,
                   requires_grad: bool = False) -> T:
        """Zeros of ``input``'s shape and (unless given) dtype."""
        return self.zeros(*input.shape, dtype=dtype or input.dtype, requires_grad=requires_grad)

    def ones_like(self, input: Shaped, dtype: DType | None = None,
                  requires_grad: bool = False) -> T:
        """Ones of ``input``'s shape and (unless given) dtype."""
        return self.ones(*input.shape, dtype=dtype or input.dtype, requires_grad=requires_grad)

    def full(self, size: Sequence[int], fill_value: Number, *, dtype: DType | None = None,
             requires_grad: bool = False) -> T:
        """A tensor of ``size`` filled with ``fill_value``."""
        return self._make(*full_values(size, fill_value, dtype), requires_grad)

    def arange(self, start: Number | None = None, end: Number | None = None, step: Number = 1,
               *, dtype: DType | None = None, requires_grad: bool = False) -> T:
        """``start, start + step, ...`` up to ``end`` excluded (``arange(end)`` and
        ``arange(end=end)`` start at 0)."""
        if start is None:  # PyTorch's one-bound overload, its bound given by keyword
            if end is None:
                raise TypeError('arange() missing 1 required positional arguments: "end"')
            start, end = end, None
        return self._make(*arange_values(start, end, step, dtype), requires_grad)

    def linspace(self, start: Number, end: Number, steps: int, *, dtype: DType | None = None,
                 requires_grad: bool = False) -> T:
        """``steps`` values evenly spaced from ``start`` to ``end``, both included."""
        return self._make(*linspace_values(start, end, steps, dtype), requires_grad)

    def eye(self, n: int, m: int | None = None, *, dtype: DType | None = None,
            requires_grad: bool = False) -> T:
        """The n × m identity matrix (m defaults to n)."""
        return self._make(*eye_values(n, m, dtype), requires_grad)


def is_tensor(obj: Any) -> bool:
    return isinstance(obj, Tensor)


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing memory with ``array`` (which keeps its dtype)."""
    if dtypes.from_numpy(array.dtype).numpy != array.dtype:
        raise dtypes.unsupported(array.dtype)
    return Tensor(array)


_factories = Factories(lambda array, dtype, requires_grad: tensor(
    array, dtype=dtype, requires_grad=requires_grad))
zeros, ones = _factories.zeros, _factories.ones
zeros_like, ones_like = _factories.zeros_like, _factories.ones_like
full, arange = _factories.full, _factories.arange
linspace, eye = _factories.linspace, _factories.eye
