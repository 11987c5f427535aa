"""Tensors made from sizes, from other tensors' shapes, or from NumPy arrays, as in ``torch``."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import dtypes
from .dtypes import DType
from .tensor import Tensor, tensor


def is_tensor(obj: Any) -> bool:
    return isinstance(obj, Tensor)


def zeros(*size: Any, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    return tensor(np.zeros(sizes(size)), dtype=dtype or dtypes.DEFAULT_FLOAT,
                  requires_grad=requires_grad)


def ones(*size: Any, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    return tensor(np.ones(sizes(size)), dtype=dtype or dtypes.DEFAULT_FLOAT,
                  requires_grad=requires_grad)


def zeros_like(input: Tensor, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    return zeros(*input.shape, dtype=dtype or input.dtype, requires_grad=requires_grad)


def ones_like(input: Tensor, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    return ones(*input.shape, dtype=dtype or input.dtype, requires_grad=requires_grad)


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing memory with ``array`` (which keeps its dtype)."""
    if dtypes.from_numpy(array.dtype).numpy != array.dtype:
        raise dtypes.unsupported(array.dtype)
    return Tensor(array)


def sizes(size: tuple[Any, ...]) -> tuple[int, ...]:
    """``zeros(2, 3)``'s and ``zeros((2, 3))``'s sizes alike."""
    if len(size) == 1 and not isinstance(size[0], int):
        return tuple(int(d) for d in size[0])
    return tuple(int(d) for d in size)
