"""torch's creation functions for the SDK's tensors: the engine's rules (``engine/factories.py``)
bound to the SDK's ``tensor``."""

from __future__ import annotations

from typing import Any

import numpy as np
from crossgrad.engine import dtypes
from crossgrad.engine.factories import Factories

from .tensor import Tensor, tensor


def is_tensor(obj: Any) -> bool:
    return isinstance(obj, Tensor)


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor holding a copy of ``array`` (its dtype kept; the server holds the value, so it
    does not share the array's memory as ``torch.from_numpy`` does)."""
    if dtypes.from_numpy(array.dtype).numpy != array.dtype:
        raise dtypes.unsupported(array.dtype)
    return tensor(array)


_factories = Factories(lambda array, dtype, requires_grad: tensor(
    array, dtype=dtype, requires_grad=requires_grad))
zeros, ones = _factories.zeros, _factories.ones
zeros_like, ones_like = _factories.zeros_like, _factories.ones_like
full, arange = _factories.full, _factories.arange
linspace, eye = _factories.linspace, _factories.eye
