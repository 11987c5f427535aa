"""Data types, shapes and PyTorch's type-promotion rules.

Names and reprs follow PyTorch (``torch.float32``, ``torch.Size([3])``) so that a program written
for PyTorch prints the same lines on crossgrad.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class DType:
    """A tensor element type: ``float32`` (the default), ``float64``, ``int64`` or ``bool``."""

    __slots__ = ("is_floating_point", "itemsize", "name", "numpy")

    def __init__(self, name: str, numpy_type: type[np.generic], is_floating_point: bool) -> None:
        self.name = name
        self.numpy = np.dtype(numpy_type)
        self.itemsize = self.numpy.itemsize
        self.is_floating_point = is_floating_point

    def __repr__(self) -> str:
        return f"torch.{self.name}"

    def __reduce__(self) -> str:
        # Pickles by reference to the module attribute, so unpickling yields the one instance below.
        return "bool_" if self.name == "bool" else self.name


bool_ = DType("bool", np.bool_, False)
int64 = DType("int64", np.int64, False)
float32 = DType("float32", np.float32, True)
float64 = DType("float64", np.float64, True)

DEFAULT_FLOAT = float32
_BY_NUMPY = {d.numpy: d for d in (bool_, int64, float32, float64)}
_BY_NAME = {d.name: d for d in (bool_, int64, float32, float64)}
# Other NumPy types a user may hand in, and the crossgrad type they become.
_NUMPY_FALLBACK = {"f": float32, "i": int64, "u": int64, "b": bool_}


def from_numpy(numpy_dtype: np.dtype[Any]) -> DType:
    """The DType for a NumPy dtype; float16 widens to float32, other ints become int64."""
    known = _BY_NUMPY.get(numpy_dtype)
    if known is not None:
        return known
    if numpy_dtype.kind == "f" and numpy_dtype.itemsize > 4:
        return float64
    try:
        return _NUMPY_FALLBACK[numpy_dtype.kind]
    except KeyError:
        raise unsupported(numpy_dtype) from None


def unsupported(numpy_dtype: np.dtype[Any]) -> TypeError:
    """PyTorch's error for an array of a dtype with no tensor dtype here."""
    return TypeError(f"can't convert np.ndarray of type {numpy_dtype}. The only supported "
                     "types are: float64, float32, int64 and bool.")


def by_name(name: str) -> DType:
    """The DType named ``name`` ("float32", "float64", "int64", "bool")."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(_BY_NAME)}") from None


# PyTorch promotes by category (bool < integer < floating) and, within the highest category present,
# lets tensors with dimensions decide over 0-d tensors, and 0-d tensors over Python numbers.
# So float32[3] + float64 0-d is float32, while float32 0-d + float64 0-d is float64.
_CATEGORY = {bool_: 0, int64: 1, float32: 2, float64: 2}
_PYTHON_CATEGORY = {bool: 0, int: 1, float: 2}


def promote(dtypes_by_priority: tuple[list[DType], list[DType]], python_types: list[type]) -> DType:
    """Result type of an op whose tensor operands are split into (with dims, 0-d) by priority."""
    dimensioned, zero_dim = dtypes_by_priority
    categories = [_CATEGORY[d] for d in dimensioned + zero_dim]
    categories += [_PYTHON_CATEGORY[t] for t in python_types]
    top = max(categories)
    for group in (dimensioned, zero_dim):
        in_top = [d for d in group if _CATEGORY[d] == top]
        if in_top:
            return float64 if float64 in in_top else in_top[0]
    # Only Python numbers reach the top category: their default type.
    return {0: bool_, 1: int64, 2: DEFAULT_FLOAT}[top]


def result_type(tensors: Sequence[tuple[DType, int]], numbers: Sequence[type],
                floating: bool = False, counting: bool = False) -> DType:
    """PyTorch's result dtype of an op on tensors of these (dtype, ndim) and on Python numbers of
    these types; ``floating``: the op makes floats of integers (``sin``, ``mean``, ``div``);
    ``counting``: the op makes int64 of bools (``sum``, ``prod``)."""
    dtype = promote(([d for d, ndim in tensors if ndim], [d for d, ndim in tensors if not ndim]),
                    list(numbers))
    if floating and not dtype.is_floating_point:
        return DEFAULT_FLOAT
    if counting and dtype is bool_:
        return int64
    return dtype


class Size(tuple[int, ...]):
    """A tensor's shape: a tuple of ints that prints as PyTorch prints it."""

    def __repr__(self) -> str:
        return f"torch.Size({list(self)})"

    def numel(self) -> int:
        """The number of elements a tensor of this shape holds."""
        return int(np.prod(self, dtype=np.int64))
