"""The op table: every operation crossgrad knows, declared once.

Each row carries what every part of crossgrad needs of an op, so adding an op is adding a row:

- ``name``: the wire name (ops travel as strings, as in ONNX);
- ``attrs``: the attributes it takes, with their kinds and defaults;
- ``forward``: the NumPy forward, ``forward(*inputs, **attrs) -> array`` (arithmetic uses Python's
  operators, which NumPy serves several times faster than the ufunc calls on scalars);
- ``vjps``: one hand-written vector-Jacobian product per input,
  ``vjp(g, out, *inputs, **attrs) -> array`` (``g`` the upstream gradient, ``out`` the forward
  result), ``None`` where the input is not differentiable. This is the numeric engine's derivative.
  A rule returns its gradient in the shape of the broadcast result; the engine sums it back to
  the input's shape (rules never un-broadcast);
- ``sympy``: the forward over NumPy object arrays of SymPy expressions. Forward only: SymPy derives
  the closed form itself, so the two derivations stay independent. At kinks it is written to
  agree with PyTorch (``Piecewise``, not SymPy's ``Max``/``Heaviside``, which give 1/2 at 0);
- ``grad_fn``: the PyTorch 2.13 ``grad_fn`` name, or a function of the call that picks it
  (``1 - x`` is ``RsubBackward1``, ``2 / x`` is ``MulBackward0``, matmul depends on the ranks);
- ``shape``: the shape rule (``shapes.py``), ``kink``: the convention at non-differentiable
  points, ``domain``: per input, the range the tests draw values from;
- ``saves``: whether backward needs saved values, so a second backward without ``retain_graph``
  fails exactly where PyTorch's does (``x + 1`` can be backpropagated twice, ``x * 2`` cannot).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import sympy

from . import shapes

Array = Any  # np.ndarray, a NumPy scalar, or a Python number for a constant operand
Vjp = Callable[..., Array]


class Call(Protocol):
    """What PyTorch's name for a backward node can depend on (a backward node provides it)."""

    @property
    def values(self) -> Sequence[Array]: ...  # the operands' values; numbers stay numbers

    @property
    def out(self) -> Array: ...

    @property
    def attrs(self) -> Mapping[str, Any]: ...

    @property
    def targets(self) -> Sequence[Any]: ...  # per operand, None where it needs no gradient


@dataclass(frozen=True)
class Attr:
    """An op attribute: ``kind`` is one of "number?", "dims?", "dims", "int", "bool"."""

    kind: str
    default: Any = None
    required: bool = False


@dataclass(frozen=True)
class Op:
    """One row of the table."""

    name: str
    forward: Callable[..., Array]
    vjps: tuple[Vjp | None, ...]
    sympy: Callable[..., Any]
    grad_fn: str | Callable[[Call], str] | None
    shape: Callable[..., shapes.Shape]
    domain: tuple[tuple[float, float], ...]
    attrs: Mapping[str, Attr] = field(default_factory=dict)
    kink: str = ""
    saves: bool = True
    # Integer inputs give a floating result (sin of an int64 tensor is float32, as in PyTorch).
    floating: bool = False
    # Backward reads the forward's result, so an in-place change of the result is refused.
    saves_output: bool = False
    # Attributes that take part in type promotion as Python numbers do (clamp's bounds: an
    # int64 tensor clamped to 0.5 is float32, as in PyTorch).
    promoting: tuple[str, ...] = ()

    @property
    def arity(self) -> int:
        return len(self.vjps)

    def number_types(self, attrs: Mapping[str, Any]) -> list[type]:
        """The types of the promoting attributes given in ``attrs``."""
        return [type(attrs[name]) for name in self.promoting if attrs.get(name) is not None]

    def grad_fn_name(self, call: Call) -> str:
        """PyTorch's name for the backward node of this call."""
        if callable(self.grad_fn):
            return self.grad_fn(call)
        return self.grad_fn or ""


def _is_number(value: Array) -> bool:
    """Whether an operand is a Python number (PyTorch's "wrapped scalar") rather than a tensor."""
    return isinstance(value, (int, float))


def _elementwise(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Lift a scalar SymPy function to object arrays of expressions."""
    return np.frompyfunc(fn, 1, 1)


def _positive_part(x: Any) -> Any:
    # relu with PyTorch's relu'(0) = 0: the x > 0 branch is open at 0.
    return sympy.Piecewise((x, x > 0), (0, True))


def _abs(x: Any) -> Any:
    # |x| with abs'(0) = 0: a branch of its own at 0 (SymEngine cannot differentiate Abs).
    return sympy.Piecewise((x, x > 0), (-x, x < 0), (0, True))


def _clamp_symbolic(x: Any, min: float | None = None, max: float | None = None) -> Any:
    # The gradient passes where min <= x <= max, bounds included, as in PyTorch.
    if min is not None and max is not None and min > max:
        return sympy.Float(max)  # PyTorch's clamp gives max everywhere then
    branches = []
    if min is not None:
        branches.append((sympy.Float(min), x < min))
    if max is not None:
        branches.append((sympy.Float(max), x > max))
    return sympy.Piecewise(*branches, (x, True)) if branches else x


def _sigmoid(x: Array) -> Array:
    # 1 / (1 + e^-x) without overflow for large |x|.
    return np.exp(-np.logaddexp(0, -x))


def _sum_back(g: Array, x: Array, dim: Sequence[int] | None, keepdim: bool) -> Array:
    """Spread a reduced gradient back over the input's shape."""
    shape = np.shape(x)
    if dim is None:
        return np.full(shape, g)  # a total: cheaper than broadcast_to on small tensors
    if not keepdim:
        g = np.expand_dims(g, shapes.normalize_dims(dim, len(shape)))
    return np.broadcast_to(g, shape)


def _reduced_count(x: Array, dim: Sequence[int] | None) -> int:
    if dim is None:
        return int(np.size(x))
    shape = np.shape(x)
    return int(np.prod([shape[d] for d in shapes.normalize_dims(dim, len(shape))]))


def _axis(x: Array, dim: Sequence[int] | None) -> tuple[int, ...]:
    return shapes.normalize_dims(dim, np.ndim(x))


# np.add.reduce rather than np.sum/np.mean: the same pairwise summation without their Python-level
# argument handling, which dominates on small tensors.
def _sum(x: Array, dim: Sequence[int] | None = None, keepdim: bool = False) -> Array:
    axis = None if dim is None else _axis(x, dim)
    return np.add.reduce(x, axis=axis, keepdims=keepdim)  # type: ignore[call-overload]


def _mean(x: Array, dim: Sequence[int] | None = None, keepdim: bool = False) -> Array:
    return _sum(x, dim, keepdim) / _reduced_count(x, dim)


def _mean_symbolic(x: Any, dim: Sequence[int] | None = None, keepdim: bool = False) -> Any:
    # An exact count: SymPy and SymEngine divide by it as a rational, NumPy (evaluating the form
    # on numbers) as a float.
    return _sum(x, dim, keepdim) / _reduced_count(x, dim)


# matmul: 1-D operands are promoted to matrices (a row on the left, a column on the right), so
# d(a @ b)/da = g @ b^T and d(a @ b)/db = a^T @ g on the promoted shapes, then demoted again.
def _matmul_vjp_a(g: Array, out: Array, a: Array, b: Array) -> Array:
    if np.ndim(b) == 1:
        return np.multiply.outer(g, b) if np.ndim(a) > 1 else g * b
    if np.ndim(a) == 1:
        return np.matmul(b, np.expand_dims(g, -1))[..., 0]
    return np.matmul(g, np.swapaxes(b, -1, -2))


def _matmul_vjp_b(g: Array, out: Array, a: Array, b: Array) -> Array:
    if np.ndim(a) == 1:
        return np.multiply.outer(a, g) if np.ndim(b) == 1 else (
            np.expand_dims(a, -1) * np.expand_dims(g, -2))
    if np.ndim(b) == 1:
        return np.matmul(np.expand_dims(g, -2), a)[..., 0, :]
    return np.matmul(np.swapaxes(a, -1, -2), g)


def _matmul_grad_fn(call: Call) -> str:
    # PyTorch dispatches matmul by the operands' ranks to different kernels, each with its own
    # backward node; batched products end in a view or a copy of the folded result.
    a, b = (np.shape(x) for x in call.values)
    if len(a) <= 2 and len(b) <= 2:
        return {(1, 1): "DotBackward0", (2, 1): "MvBackward0",
                (1, 2): "SqueezeBackward4", (2, 2): "MmBackward0"}[len(a), len(b)]
    if len(b) <= 2 or len(a) == 1:
        return "UnsafeViewBackward0"
    folds_transposed = len(a) == 2 or (len(a) == len(b) == 3 and a[0] == 1 and b[0] != 1)
    if folds_transposed and call.targets[0] is not None:
        # PyTorch computes (b^T @ a^T)^T, copied unless the transpose is contiguous already.
        return "TransposeBackward0" if a[-2] == 1 or b[-1] == 1 else "CloneBackward0"
    return "UnsafeViewBackward0"


def _reshape_grad_fn(call: Call) -> str:
    # A view when the input is contiguous, an aliasing view when NumPy could still avoid a copy.
    x = call.values[0]
    if not isinstance(x, np.ndarray) or x.flags.c_contiguous:
        return "ViewBackward0"
    return "ReshapeAliasBackward0" if np.shares_memory(x, call.out) else "UnsafeViewBackward0"


def _by_dim(unreduced: str, reduced: str) -> Callable[..., str]:
    # ``x.sum()`` and ``x.sum(dim=None)`` are different overloads in PyTorch; the latter
    # arrives here as ``dim=()``.
    return lambda call: unreduced if call.attrs.get("dim") is None else reduced


def _transpose(x: Array, dim0: int, dim1: int) -> Array:
    if np.ndim(x):
        return np.swapaxes(x, dim0, dim1)
    shapes.transpose((), dim0, dim1)  # a 0-d tensor takes dims 0 and -1 only, as in PyTorch
    return x


def _inverse_permutation(dims: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argsort([d % len(dims) for d in dims]))


def _pow_base_vjp(g: Array, out: Array, x: Array, y: Array) -> Array:
    # d/dx x**y = y * x**(y-1); PyTorch gives 0 where y == 0 (even at x == 0).
    if _is_number(y):
        return g * 0 if y == 0 else g * (y * np.power(x, y - 1))
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 ** negative where y == 0 is masked
        return np.where(y == 0, 0.0, g * y * np.power(x, y - 1))


def _pow_exponent_vjp(g: Array, out: Array, x: Array, y: Array) -> Array:
    # d/dy x**y = x**y * log(x); PyTorch gives 0 where x == 0 and y >= 0.
    with np.errstate(divide="ignore", invalid="ignore"):
        grad = g * out * np.log(x)
    return np.where((x == 0) & (y >= 0), 0.0, grad)


_REAL = ((-3.0, 3.0),)
_POSITIVE = ((0.1, 3.0),)
_REDUCTION_ATTRS = {"dim": Attr("dims?"), "keepdim": Attr("bool", False)}

OPS: tuple[Op, ...] = (
    Op("add", operator.add, (lambda g, out, a, b: g, lambda g, out, a, b: g),
       lambda a, b: a + b, "AddBackward0", shapes.broadcast, _REAL * 2, saves=False),
    Op("sub", operator.sub, (lambda g, out, a, b: g, lambda g, out, a, b: -g),
       lambda a, b: a - b,
       lambda call: "RsubBackward1" if _is_number(call.values[0]) else "SubBackward0",
       shapes.broadcast, _REAL * 2, saves=False),
    # d(ab) = b da + a db
    Op("mul", operator.mul, (lambda g, out, a, b: g * b, lambda g, out, a, b: g * a),
       lambda a, b: a * b, "MulBackward0", shapes.broadcast, _REAL * 2),
    # d(a/b) = da / b - a db / b^2; PyTorch computes number / x as x.reciprocal() * number
    Op("div", operator.truediv,
       (lambda g, out, a, b: g / b, lambda g, out, a, b: -g * a / (b * b)),
       lambda a, b: a / b,
       lambda call: "MulBackward0" if _is_number(call.values[0]) else "DivBackward0",
       shapes.broadcast, ((-3.0, 3.0), (0.5, 3.0)), floating=True),
    Op("neg", operator.neg, (lambda g, out, x: -g,), lambda x: -x, "NegBackward0",
       shapes.broadcast, _REAL, saves=False),
    Op("pow", operator.pow, (_pow_base_vjp, _pow_exponent_vjp), lambda a, b: a ** b,
       lambda call: ("PowBackward0" if _is_number(call.values[1]) else
                     "PowBackward2" if _is_number(call.values[0]) else "PowBackward1"),
       shapes.broadcast, ((0.2, 3.0), (-2.0, 2.0)),
       kink="numeric: d/dx is 0 where y == 0, d/dy is 0 where x == 0 and y >= 0 (PyTorch's); "
            "the closed form x**y leaves these undefined (nan) at x == 0", saves_output=True),
    Op("exp", np.exp, (lambda g, out, x: g * out,), _elementwise(sympy.exp), "ExpBackward0",
       shapes.broadcast, _REAL, floating=True, saves_output=True),
    Op("log", np.log, (lambda g, out, x: g / x,), _elementwise(sympy.log), "LogBackward0",
       shapes.broadcast, _POSITIVE, floating=True),
    Op("sin", np.sin, (lambda g, out, x: g * np.cos(x),), _elementwise(sympy.sin),
       "SinBackward0", shapes.broadcast, _REAL, floating=True),
    Op("cos", np.cos, (lambda g, out, x: -g * np.sin(x),), _elementwise(sympy.cos),
       "CosBackward0", shapes.broadcast, _REAL, floating=True),
    # tan' = 1 + tan^2
    Op("tan", np.tan, (lambda g, out, x: g * (1 + out * out),), _elementwise(sympy.tan),
       "TanBackward0", shapes.broadcast, ((-1.2, 1.2),), floating=True, saves_output=True),
    # tanh' = 1 - tanh^2
    Op("tanh", np.tanh, (lambda g, out, x: g * (1 - out * out),), _elementwise(sympy.tanh),
       "TanhBackward0", shapes.broadcast, _REAL, floating=True, saves_output=True),
    # sigmoid' = sigmoid (1 - sigmoid)
    Op("sigmoid", _sigmoid, (lambda g, out, x: g * out * (1 - out),),
       _elementwise(lambda x: 1 / (1 + sympy.exp(-x))), "SigmoidBackward0",
       shapes.broadcast, _REAL, floating=True, saves_output=True),
    Op("relu", lambda x: np.maximum(x, 0), (lambda g, out, x: g * (x > 0),),
       _elementwise(_positive_part), "ReluBackward0", shapes.broadcast, _REAL,
       kink="relu'(0) = 0"),
    Op("abs", np.abs, (lambda g, out, x: g * np.sign(x),), _elementwise(_abs), "AbsBackward0",
       shapes.broadcast, _REAL, kink="abs'(0) = 0"),
    # sqrt' = 1 / (2 sqrt)
    Op("sqrt", np.sqrt, (lambda g, out, x: g / (2 * out),), _elementwise(sympy.sqrt),
       "SqrtBackward0", shapes.broadcast, _POSITIVE, floating=True, saves_output=True,
       kink="sqrt'(0) = inf"),
    Op("clamp", lambda x, min=None, max=None: np.clip(x, min, max),
       (lambda g, out, x, min=None, max=None: g * (
           (True if min is None else x >= min) & (True if max is None else x <= max)),),
       lambda x, min=None, max=None: _elementwise(
           lambda e: _clamp_symbolic(e, min, max))(x),
       "ClampBackward1", shapes.same, _REAL,
       attrs={"min": Attr("number?"), "max": Attr("number?")}, promoting=("min", "max"),
       kink="the gradient passes where min <= x <= max, bounds included"),
    Op("sum", _sum, (lambda g, out, x, dim=None, keepdim=False: _sum_back(g, x, dim, keepdim),),
       _sum, _by_dim("SumBackward0", "SumBackward1"), shapes.reduce, _REAL,
       attrs=_REDUCTION_ATTRS, saves=False),
    Op("mean", _mean,
       (lambda g, out, x, dim=None, keepdim=False: _sum_back(
           g / _reduced_count(x, dim), x, dim, keepdim),),
       _mean_symbolic, _by_dim("MeanBackward0", "MeanBackward1"), shapes.reduce, _REAL,
       attrs=_REDUCTION_ATTRS, saves=False, floating=True),
    Op("matmul", np.matmul, (_matmul_vjp_a, _matmul_vjp_b), np.matmul, _matmul_grad_fn,
       shapes.matmul, _REAL * 2),
    # The shape rule runs on every call: NumPy would read any negative size as "infer".
    Op("reshape", lambda x, shape: np.reshape(x, shapes.reshape(np.shape(x), shape)),
       (lambda g, out, x, shape: np.reshape(g, np.shape(x)),),
       lambda x, shape: np.reshape(x, shapes.reshape(np.shape(x), shape)), _reshape_grad_fn,
       shapes.reshape, _REAL,
       attrs={"shape": Attr("dims", required=True)}, saves=False),
    Op("transpose", _transpose, (lambda g, out, x, dim0, dim1: _transpose(g, dim0, dim1),),
       _transpose, "TransposeBackward0",
       shapes.transpose, _REAL, attrs={"dim0": Attr("int", required=True),
                                       "dim1": Attr("int", required=True)}, saves=False),
    Op("permute", lambda x, dims: np.transpose(x, dims),
       (lambda g, out, x, dims: np.transpose(g, _inverse_permutation(dims)),),
       lambda x, dims: np.transpose(x, dims), "PermuteBackward0", shapes.permute, _REAL,
       attrs={"dims": Attr("dims", required=True)}, saves=False),
    # Stops the gradient: the value passes, nothing flows back; the symbolic side treats the
    # result as a constant.
    Op("detach", lambda x: x, (None,), lambda x: x, None, shapes.broadcast, _REAL, saves=False),
)

TABLE: Mapping[str, Op] = {op.name: op for op in OPS}


def get(name: str) -> Op:
    """The row for wire name ``name``; ``KeyError`` names the known ops."""
    try:
        return TABLE[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; known ops: {', '.join(sorted(TABLE))}") from None
