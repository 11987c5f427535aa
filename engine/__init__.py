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
from .differentiation import differentiate
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
from .factories import (
    arange,
    eye,
    from_numpy,
    full,
    is_tensor,
    linspace,
    ones,
    ones_like,
    zeros,
    zeros_like,
)

# --- generated: op-functions (scripts/generate_surface.py writes them from the op table) ---
from .functional import (
    abs,
    acos,
    add,
    amax,
    amin,
    asin,
    asinh,
    atan,
    atan2,
    atanh,
    cat,
    clamp,
    cos,
    cosh,
    detach,
    div,
    eq,
    erf,
    exp,
    expm1,
    flatten,
    ge,
    gt,
    le,
    log,
    log1p,
    log2,
    log10,
    log_softmax,
    logsumexp,
    lt,
    matmul,
    max,
    maximum,
    mean,
    min,
    minimum,
    mul,
    ne,
    neg,
    norm,
    permute,
    pow,
    prod,
    reciprocal,
    relu,
    reshape,
    rsqrt,
    select,
    sigmoid,
    sign,
    sin,
    sinh,
    softmax,
    sqrt,
    square,
    squeeze,
    stack,
    std,
    sub,
    sum,
    t,
    tan,
    tanh,
    transpose,
    unsqueeze,
    var,
    where,
)

# --- end generated: op-functions ---
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .gradient_check import Result
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
    "arange",
    "autograd",
    "bool",
    "differentiate",
    "double",
    "dtype",
    "enable_grad",
    "eye",
    "float",
    "float32",
    "float64",
    "formula",
    "from_numpy",
    "full",
    "graph",
    "int64",
    "is_grad_enabled",
    "is_tensor",
    "linspace",
    "long",
    "no_grad",
    "ones",
    "ones_like",
    "ops",
    "set_grad_enabled",
    "tensor",
    "zeros",
    "zeros_like",
]

# --- generated: op-exports (scripts/generate_surface.py writes them from the op table) ---
__all__ += [
    "abs",
    "acos",
    "add",
    "amax",
    "amin",
    "asin",
    "asinh",
    "atan",
    "atan2",
    "atanh",
    "cat",
    "clamp",
    "cos",
    "cosh",
    "detach",
    "div",
    "eq",
    "erf",
    "exp",
    "expm1",
    "flatten",
    "ge",
    "gt",
    "le",
    "log",
    "log1p",
    "log2",
    "log10",
    "log_softmax",
    "logsumexp",
    "lt",
    "matmul",
    "max",
    "maximum",
    "mean",
    "min",
    "minimum",
    "mul",
    "ne",
    "neg",
    "norm",
    "permute",
    "pow",
    "prod",
    "reciprocal",
    "relu",
    "reshape",
    "rsqrt",
    "select",
    "sigmoid",
    "sign",
    "sin",
    "sinh",
    "softmax",
    "sqrt",
    "square",
    "squeeze",
    "stack",
    "std",
    "sub",
    "sum",
    "t",
    "tan",
    "tanh",
    "transpose",
    "unsqueeze",
    "var",
    "where",
]
# --- end generated: op-exports ---
