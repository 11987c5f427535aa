"""The torch-like module functions: ``sin(x)``, ``clamp(x, min, max)``, ``sum(x, dim)``, ...

Each is a thin call into the op table through ``apply``; the unary elementwise ones are generated
from the table, so a new unary op row needs nothing here.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import dtypes
from .dtypes import DType
from .ops import TABLE
from .tensor import (
    ALL_DIMS,
    Dims,
    Operand,
    Tensor,
    _as_operand,
    _binary,
    _reduce,
    apply,
    tensor,
)


def _unary(name: str) -> Callable[[Tensor], Tensor]:
    op = TABLE[name]

    def fn(input: Tensor) -> Tensor:
        return apply(op, (_as_operand(input),))

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"Elementwise {name} (op ``{name}``; backward node ``{op.grad_fn}``)."
    return fn


exp = _unary("exp")
log = _unary("log")
sin = _unary("sin")
cos = _unary("cos")
tan = _unary("tan")
tanh = _unary("tanh")
sigmoid = _unary("sigmoid")
relu = _unary("relu")
abs = _unary("abs")
sqrt = _unary("sqrt")
neg = _unary("neg")


def add(input: Operand, other: Operand) -> Tensor:
    return _binary("add", input, other)


def sub(input: Operand, other: Operand) -> Tensor:
    return _binary("sub", input, other)


def mul(input: Operand, other: Operand) -> Tensor:
    return _binary("mul", input, other)


def div(input: Operand, other: Operand) -> Tensor:
    return _binary("div", input, other)


def pow(input: Operand, exponent: Operand) -> Tensor:
    return _binary("pow", input, exponent)


def matmul(input: Operand, other: Operand) -> Tensor:
    return _binary("matmul", input, other)


def clamp(input: Tensor, min: float | None = None, max: float | None = None) -> Tensor:
    """Limit values to ``[min, max]``; the gradient passes where ``min <= x <= max``."""
    return input.clamp(min, max)


def sum(input: Tensor, dim: Dims = ALL_DIMS, keepdim: bool = False) -> Tensor:
    return _reduce("sum", input, dim, keepdim)


def mean(input: Tensor, dim: Dims = ALL_DIMS, keepdim: bool = False) -> Tensor:
    return _reduce("mean", input, dim, keepdim)


def reshape(input: Tensor, shape: Sequence[int]) -> Tensor:
    return input.reshape(tuple(shape))


def transpose(input: Tensor, dim0: int, dim1: int) -> Tensor:
    return input.transpose(dim0, dim1)


def permute(input: Tensor, dims: Sequence[int]) -> Tensor:
    return input.permute(tuple(dims))


def detach(input: Tensor) -> Tensor:
    return input.detach()


def is_tensor(obj: Any) -> bool:
    return isinstance(obj, Tensor)


def zeros(*size: Any, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    return tensor(np.zeros(_size(size)), dtype=dtype or dtypes.DEFAULT_FLOAT,
                  requires_grad=requires_grad)


def ones(*size: Any, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    return tensor(np.ones(_size(size)), dtype=dtype or dtypes.DEFAULT_FLOAT,
                  requires_grad=requires_grad)


def zeros_like(input: Tensor, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    return zeros(*input.shape, dtype=dtype or input.dtype, requires_grad=requires_grad)


def ones_like(input: Tensor, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    return ones(*input.shape, dtype=dtype or input.dtype, requires_grad=requires_grad)


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing memory with ``array`` (which keeps its dtype)."""
    if dtypes.from_numpy(array.dtype).numpy != array.dtype:
        raise TypeError(f"can't convert np.ndarray of type {array.dtype}. The only supported "
                        "types are: float64, float32, int64 and bool.")
    return Tensor(array)


def _size(size: tuple[Any, ...]) -> tuple[int, ...]:
    if len(size) == 1 and not isinstance(size[0], int):
        return tuple(builtins.int(d) for d in size[0])
    return tuple(builtins.int(d) for d in size)
