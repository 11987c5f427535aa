"""What may be done to a leaf tensor, and PyTorch's words for refusing it.

A leaf's ``requires_grad`` follows ``Tensor.requires_grad_``: only a floating point leaf may
require gradients. The server's leaves (values kept between calls) follow the same rule with the
same message.
"""

from __future__ import annotations

from .dtypes import DType
from .errors import UsageError

# What PyTorch 2.13 raises for ``requires_grad_(True)`` on an integer or bool tensor.
REQUIRES_GRAD_FLOAT_ONLY = "only Tensors of floating point dtype can require gradients"


def check_requires_grad(dtype: DType, requires_grad: bool) -> None:
    """Refuse ``requires_grad`` for a leaf of ``dtype`` unless it is floating point."""
    if requires_grad and not dtype.is_floating_point:
        raise UsageError(REQUIRES_GRAD_FLOAT_ONLY)
