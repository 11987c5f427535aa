"""crossgrad's engine: a reverse-mode autograd on NumPy with PyTorch's semantics.

The names mirror ``torch``, so one program runs on PyTorch, on this engine in-process, and on the
service through the SDK::

    import crossgrad.engine as torch
    x = torch.tensor(5.0, requires_grad=True)
    y = x ** 2
    y.backward()
    x.grad            # tensor(10.)

``differentiate(formula_or_graph, values)`` derives a gradient twice — numerically and in closed
form — and checks that the two agree.

Pure computation: NumPy, SymPy and SymEngine; no I/O and no mutable globals but the read-only op
table, and for the closed forms' derivation a pool of worker processes under a deadline
(``budget.py``) with the caches of what they derived.
"""

from . import autograd, formula, graph, ops
from .check import CheckMode, CheckReport
from .differentiation import Result, differentiate
from .dtypes import DType, Size, float32, float64, int64
from .dtypes import DType as dtype
from .dtypes import bool_ as bool
from .errors import (
    CheckFailed,
    CrossgradError,
    DimensionError,
    DTypeError,
    InvalidArgument,
    ShapeError,
    UsageError,
)
from .functional import (
    abs,
    add,
    clamp,
    cos,
    detach,
    div,
    exp,
    from_numpy,
    is_tensor,
    log,
    matmul,
    mean,
    mul,
    neg,
    ones,
    ones_like,
    permute,
    pow,
    relu,
    reshape,
    sigmoid,
    sin,
    sqrt,
    sub,
    sum,
    tan,
    tanh,
    transpose,
    zeros,
    zeros_like,
)
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .tensor import Tensor, tensor

double = float64
float = float32
long = int64

__all__ = [
    "CheckFailed",
    "CheckMode",
    "CheckReport",
    "CrossgradError",
    "DType",
    "DTypeError",
    "DimensionError",
    "InvalidArgument",
    "Result",
    "ShapeError",
    "Size",
    "Tensor",
    "UsageError",
    "abs",
    "add",
    "autograd",
    "bool",
    "clamp",
    "cos",
    "detach",
    "differentiate",
    "div",
    "double",
    "dtype",
    "enable_grad",
    "exp",
    "float",
    "float32",
    "float64",
    "formula",
    "from_numpy",
    "graph",
    "int64",
    "is_grad_enabled",
    "is_tensor",
    "log",
    "long",
    "matmul",
    "mean",
    "mul",
    "neg",
    "no_grad",
    "ones",
    "ones_like",
    "ops",
    "permute",
    "pow",
    "relu",
    "reshape",
    "set_grad_enabled",
    "sigmoid",
    "sin",
    "sqrt",
    "sub",
    "sum",
    "tan",
    "tanh",
    "tensor",
    "transpose",
    "zeros",
    "zeros_like",
]
