"""crossgrad's Python SDK: ``torch``'s names over the service.

::

    import crossgrad.client as torch
    x = torch.tensor(5.0, requires_grad=True)
    y = x ** 2
    y.backward()          # one call: the service derives the gradient twice and checks it
    x.grad                # tensor(10.)
    x.grad.closed_form    # '2*x_…' : the closed form the check compared against
    torch.last_check()    # CheckReport(method=SYMBOLIC, status=AGREE, ...)

Tensors live on the service; their shapes, dtypes and autograd state are known here, and values
come over the wire only when read. Where it connects: ``connect(target)``, else
``$CROSSGRAD_ADDRESS``, else an embedded server started in this process.
"""

from crossgrad.engine.check import CheckReport
from crossgrad.engine.dtypes import DType, Size, float32, float64, int64
from crossgrad.engine.dtypes import DType as dtype
from crossgrad.engine.dtypes import bool_ as bool
from crossgrad.engine.errors import CrossgradError, UsageError
from crossgrad.engine.grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled

from . import autograd
from .context import connect, current
from .errors import ServiceError, ServiceUnavailable, SessionGone
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
from .session import LastBackward, Session
from .tensor import Tensor, tensor

double = float64
float = float32
long = int64


def last_check() -> CheckReport | None:
    """The check report of the current session's last ``backward()``: how the numeric gradient
    compared with the closed form (None before any backward)."""
    last = current().last_backward
    return None if last is None else last.check


def last_backward() -> LastBackward | None:
    """The current session's last ``backward()`` as the service reported it: its check, and the
    closed form of each leaf's gradient."""
    return current().last_backward


grad = autograd.grad
hessian = autograd.hessian

__all__ = [
    "CheckReport",
    "CrossgradError",
    "DType",
    "LastBackward",
    "ServiceError",
    "ServiceUnavailable",
    "Session",
    "SessionGone",
    "Size",
    "Tensor",
    "UsageError",
    "arange",
    "autograd",
    "bool",
    "connect",
    "double",
    "dtype",
    "enable_grad",
    "eye",
    "float",
    "float32",
    "float64",
    "from_numpy",
    "full",
    "grad",
    "hessian",
    "int64",
    "is_grad_enabled",
    "is_tensor",
    "last_backward",
    "last_check",
    "linspace",
    "long",
    "no_grad",
    "ones",
    "ones_like",
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
