"""Tensors made from sizes, from other tensors' shapes, or from NumPy arrays, as in ``torch``."""

from __future__ import annotations

from typing import Any

import numpy as np
from crossgrad.engine import dtypes
from crossgrad.engine.dtypes import DType
from crossgrad.engine.factories import sizes

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
    """A tensor holding a copy of ``array`` (its dtype kept; the server holds the value, so it
    does not share the array's memory as ``torch.from_numpy`` does)."""
    if dtypes.from_numpy(array.dtype).numpy != array.dtype:
        raise dtypes.unsupported(array.dtype)
    return tensor(array)
