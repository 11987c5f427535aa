"""``Tensor``: a NumPy value with PyTorch's autograd semantics.

A tensor is a leaf (made by the user) or the result of an op. Ops run through ``apply``, which
computes the forward with the op table's NumPy function and, in grad mode when an operand requires
grad, records a ``Node`` for backward. ``backward()`` accumulates into the leaves' ``.grad``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from . import dtypes, indexing, shapes
from .backward_graph import Node, backpropagate, legacy_type_name, note_update
from .dtypes import DType, Size
from .errors import DTypeError, ShapeError, UsageError
from .grad_mode import _enabled
from .ops import ALL_DIMS, TABLE, Dims, Op
from .printing import format_tensor
from .quiet import quiet
from .refusals import (
    LEAF_IN_PLACE,
    NON_LEAF_GRAD,
    T_NOT_2D,
    T_ON_0D,
    VIEW_IN_PLACE,
    VIEW_OF_LEAF_IN_PLACE,
    data_dtype,
    python_attrs,
    require_tensor_input,  # noqa: F401  (for the generated functions)
    require_tensors,
    tensor_list,
)
from .reverse import FLOAT_ONLY, NO_GRAD, NO_RETAIN_GRAD, initial_gradient

Array = Any
Operand = Any  # a Tensor or a Python number

_PYTHON_DATA = (list, tuple, int, float, bool)
_ARRAY = np.ndarray  # a module global: one lookup fewer for every tensor made


class Tensor:
    """A tensor with PyTorch's autograd semantics.

    >>> x = tensor(5.0, requires_grad=True)
    >>> y = x ** 2
    >>> y.backward()
    >>> x.grad
    tensor(10.)
    """

    __slots__ = ("__weakref__", "_base", "_data", "_grad", "_node", "_version", "requires_grad")
    __array_priority__ = 1000  # NumPy defers to Tensor's reflected operators

    def __init__(self, data: Array, node: Node | None = None, requires_grad: bool = False) -> None:
        # Wraps an array as it is (the ops' fast path); ``tensor()`` is the way to build one.
        if type(data) is not _ARRAY and type(data) in _PYTHON_DATA:  # ops give arrays: one test
            data = np.array(data, dtype=np.float32)  # ``Tensor([1, 2])`` is float32 in PyTorch
        self._data = data
        self._grad: Tensor | None = None
        self._node = node
        self._version: list[int] | None = None  # created by the first in-place update or detach
        self._base: Tensor | None = None  # the tensor this one is a view of (Op.view)
        self.requires_grad = requires_grad or node is not None

    # --- what it is ------------------------------------------------------------------------

    @property
    def shape(self) -> Size:
        return Size(self._data.shape)

    def size(self, dim: int | None = None) -> Any:
        """The shape, or the length of dimension ``dim``."""
        shape = self.shape
        return shape if dim is None else shape[shapes.normalize_dim(dim, len(shape))]

    def dim(self) -> int:
        return int(self._data.ndim)

    @property
    def ndim(self) -> int:
        return int(self._data.ndim)

    def numel(self) -> int:
        return int(self._data.size)

    def __len__(self) -> int:
        if not self._data.ndim:
            raise TypeError("len() of a 0-d tensor")
        return int(self._data.shape[0])

    @property
    def dtype(self) -> DType:
        return dtypes.from_numpy(self._data.dtype)

    def type(self) -> str:
        """PyTorch's legacy type name, e.g. ``"torch.FloatTensor"``."""
        return legacy_type_name(self._data)

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    @property
    def is_leaf(self) -> bool:
        """Made by the user (or not requiring grad) rather than by an op that records a graph."""
        return self._node is None

    @property
    def grad_fn(self) -> Node | None:
        """The node that made this tensor, or None for a leaf."""
        return self._node

    @property
    def retains_grad(self) -> bool:
        return self._node is not None and self._node.retained is self

    @property
    def grad(self) -> Tensor | None:
        """The accumulated gradient; None (and PyTorch's warning) for a non-leaf not retained."""
        if self._node is not None and self._node.retained is not self:
            warnings.warn(NON_LEAF_GRAD, UserWarning, stacklevel=2)
        return self._grad

    @grad.setter
    def grad(self, value: Tensor | None) -> None:
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"assigned grad expected to be a Tensor or None but got grad of "
                                f"type {type(value).__name__}")
            if value.shape != self.shape:
                raise ShapeError(f"assigned grad has data of a different size: {value.shape} "
                                 f"vs. {self.shape}")
        self._grad = value

    @property
    def T(self) -> Tensor:
        """All dimensions reversed (the transpose of a matrix)."""
        if self.ndim != 2:
            warnings.warn(T_ON_0D if self.ndim == 0 else T_NOT_2D, UserWarning, stacklevel=2)
        return apply(TABLE["permute"], (self,), {"dims": tuple(range(self.ndim))[::-1]})

    # --- values ----------------------------------------------------------------------------

    def item(self) -> Any:
        """The single value as a Python number."""
        if self._data.size != 1:
            raise UsageError(f"a Tensor with {self._data.size} elements cannot be converted "
                             "to Scalar")
        return self._data.item() if self._data.ndim else self._data.reshape(()).item()

    def tolist(self) -> Any:
        return self._data.tolist()

    def numpy(self) -> np.ndarray:
        """The value as a NumPy array sharing memory (refused while it requires grad)."""
        if self.requires_grad:
            raise UsageError("Can't call numpy() on Tensor that requires grad. "
                             "Use tensor.detach().numpy() instead.")
        self._data = np.asarray(self._data)
        return self._data

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        array = self.numpy()
        return array if dtype is None else array.astype(dtype)

    def __float__(self) -> float:
        if self.requires_grad:
            warnings.warn("Converting a tensor with requires_grad=True to a scalar may lead to "
                          "unexpected behavior.\nConsider using tensor.detach() first.",
                          UserWarning, stacklevel=2)
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        if self._data.size != 1:
            raise UsageError("Boolean value of Tensor with more than one value is ambiguous")
        return bool(self.item())

    def __iter__(self) -> Iterator[Tensor]:
        if not self._data.ndim:
            raise TypeError("iteration over a 0-d tensor")
        return (Tensor(row) for row in np.asarray(self._data))

    def __repr__(self) -> str:
        node = self._node
        return format_tensor(np.asarray(self._data), self.dtype,
                             requires_grad=self.requires_grad and node is None,
                             grad_fn=node.name() if node is not None else None)

    __hash__ = object.__hash__  # tensors hash by identity, as in PyTorch

    # --- autograd --------------------------------------------------------------------------

    def backward(self, gradient: Operand | None = None, retain_graph: bool | None = None,
                 create_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into each leaf's ``.grad``.

        ``gradient`` is the vector of the vector-Jacobian product, required unless ``self``
        holds one element.
        """
        if create_graph:
            raise NotImplementedError("create_graph=True (higher-order gradients) is not "
                                      "supported; use differentiate(..., hessian=True)")
        seed = self._seed(gradient)
        if self._node is None:
            _accumulate(self, seed)
            return
        # A kink's VJP (sqrt'(0), 1/0) or a sum of opposite infinities gives inf or nan with no
        # NumPy warning, as in PyTorch.
        with quiet():
            leaf_grads, retained = backpropagate(self._node, seed, bool(retain_graph))
            for leaf, grad in leaf_grads:
                _accumulate(leaf, grad)
            for tensor, grad in retained:
                _accumulate(tensor, grad)

    def _seed(self, gradient: Operand | None) -> Array:
        """The gradient backward starts from, checked as PyTorch checks it."""
        if not self.requires_grad:
            raise UsageError(NO_GRAD)
        return initial_gradient(self._data, value_of(gradient))

    def retain_grad(self) -> None:
        """Keep this non-leaf's gradient in ``.grad`` on backward."""
        if not self.requires_grad:
            raise UsageError(NO_RETAIN_GRAD)
        if self._node is not None:
            self._node.retained = self

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Start or stop recording operations on this leaf."""
        if self._node is not None:
            if not requires_grad:
                raise UsageError(
                    "you can only change requires_grad flags of leaf variables. If you want to "
                    "use a computed variable in a subgraph that doesn't require differentiation "
                    "use var_no_grad = var.detach().")
            return self
        if requires_grad and not self.dtype.is_floating_point:
            raise UsageError("only Tensors of floating point dtype can require gradients")
        self.requires_grad = bool(requires_grad)
        return self

    def detach(self) -> Tensor:
        """A new leaf sharing this tensor's values (and its version counter), out of the graph."""
        if not isinstance(self._data, np.ndarray):
            self._data = np.asarray(self._data)  # shared storage needs an array to share
        if self._version is None:
            self._version = [0]
        result = Tensor(self._data)
        result._version = self._version
        return result

    # --- in-place updates ------------------------------------------------------------------

    def _in_place(self, op: Op, operand: Operand) -> Tensor:
        """``self = op(self, operand)`` keeping this object, as PyTorch's ``add_`` and friends.

        Outside grad mode (the optimizer step ``w -= lr * w.grad``) the values are overwritten
        where they are; in grad mode on a non-leaf the op is recorded and this tensor takes its
        result. Either way the version counter moves, so a graph that saved the old values refuses
        to backpropagate through them, as in PyTorch.
        """
        recording = _enabled.get() and (self.requires_grad or _requires_grad(operand))
        if recording and self._node is None and self.requires_grad:
            raise UsageError(LEAF_IN_PLACE)
        if recording and self._base is not None:
            base = self._base
            if base._node is None and base.requires_grad:
                raise UsageError(VIEW_OF_LEAF_IN_PLACE)
            raise NotImplementedError(VIEW_IN_PLACE)
        if recording:
            # The old value as a tensor of its own: the new node's operand, unaffected by the
            # version bump below (graphs that saved ``self`` itself do see it).
            before = Tensor(self._data, self._node, self.requires_grad)
            result = apply(op, (before, operand))
            if result.shape != self.shape:
                raise ShapeError(f"output with shape {list(self.shape)} doesn't match the "
                                 f"broadcast shape {list(result.shape)}")
            self._data, self._node, self.requires_grad = result._data, result._node, True
            _bump_version(self)
            return self
        return self._overwrite(_forward(op, (self._data, value_of(operand)), _NO_ATTRS))

    def _overwrite(self, value: Array) -> Tensor:
        """Write ``value`` over this tensor's values where they are stored (shared by detach)."""
        if np.shape(value) != self._data.shape:
            raise ShapeError(f"output with shape {list(self.shape)} doesn't match the "
                             f"broadcast shape {list(np.shape(value))}")
        if not np.can_cast(np.result_type(value), self._data.dtype, "same_kind"):
            raise DTypeError(f"result type {dtypes.from_numpy(np.result_type(value))} can't "
                             f"be cast to the desired output type {self.dtype}")
        if isinstance(self._data, np.ndarray) and self._data.flags.writeable:
            np.copyto(self._data, value, casting="unsafe")
        else:
            self._data = np.array(value, dtype=self._data.dtype)
        _bump_version(self)
        return self

    def zero_(self) -> Tensor:
        """Set every value to 0 in place; returns this tensor (``x.grad.zero_()``)."""
        if _enabled.get() and self.requires_grad:
            if self._node is None:
                raise UsageError(LEAF_IN_PLACE)
            return self.mul_(0)
        return self._overwrite(np.zeros_like(self._data))

    # --- operators and methods named after ops ----------------------------------------------

    def __pos__(self) -> Tensor:
        return self

    def view(self, *shape: Any) -> Tensor:
        """``reshape`` that refuses, as PyTorch's does, where it would have to copy."""
        result = self.reshape(*shape)
        if isinstance(self._data, np.ndarray) and result._data.size > 1 and not (
                np.shares_memory(result._data, self._data)):
            raise ShapeError("view size is not compatible with input tensor's size and stride (at "
                             "least one dimension spans across two contiguous subspaces). Use "
                             ".reshape(...) instead.")
        return result

    def __getitem__(self, key: Any) -> Tensor:
        """Basic indexing, as the ops PyTorch decomposes it into (``indexing.steps``)."""
        result = self
        for name, attrs in indexing.steps(key, self._data.shape):
            result = _apply_unary(TABLE[name], result, attrs)
        return result

    def __setitem__(self, key: Any, value: Any) -> None:
        raise NotImplementedError(indexing.ASSIGNMENT)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        """Dimensions ``start_dim`` to ``end_dim`` merged into one (op ``flatten``); this tensor
        itself where that merges nothing, as PyTorch returns it."""
        if (type(start_dim) is int and type(end_dim) is int  # else the call says what is wrong
                and shapes.flattens_nothing(tuple(self.shape), start_dim, end_dim)):
            return self
        return _call("flatten", (self,), {"start_dim": start_dim, "end_dim": end_dim})
    # --- generated: op-methods (scripts/generate_surface.py writes them from the op table) ---
    def add(self, other: Operand) -> Tensor:
        """Elementwise add (op ``add``; backward node ``AddBackward0``)."""
        return _binary("add", self, other)

    def __add__(self, other: Operand) -> Tensor:
        return _binary("add", self, other)

    def __radd__(self, other: Operand) -> Tensor:
        return _binary("add", other, self)

    def add_(self, other: Operand) -> Tensor:
        return self._in_place(TABLE["add"], other)

    __iadd__ = add_

    def sub(self, other: Operand) -> Tensor:
        """Elementwise sub (op ``sub``; backward node ``SubBackward0``)."""
        return _binary("sub", self, other)

    def __sub__(self, other: Operand) -> Tensor:
        return _binary("sub", self, other)

    def __rsub__(self, other: Operand) -> Tensor:
        return _binary("sub", other, self)

    def sub_(self, other: Operand) -> Tensor:
        return self._in_place(TABLE["sub"], other)

    __isub__ = sub_

    def mul(self, other: Operand) -> Tensor:
        """Elementwise mul (op ``mul``; backward node ``MulBackward0``)."""
        return _binary("mul", self, other)

    def __mul__(self, other: Operand) -> Tensor:
        return _binary("mul", self, other)

    def __rmul__(self, other: Operand) -> Tensor:
        return _binary("mul", other, self)

    def mul_(self, other: Operand) -> Tensor:
        return self._in_place(TABLE["mul"], other)

    __imul__ = mul_

    def div(self, other: Operand) -> Tensor:
        """Elementwise div (op ``div``; backward node ``DivBackward0``)."""
        return _binary("div", self, other)

    def __truediv__(self, other: Operand) -> Tensor:
        return _binary("div", self, other)

    def __rtruediv__(self, other: Operand) -> Tensor:
        return _binary("div", other, self)

    def div_(self, other: Operand) -> Tensor:
        return self._in_place(TABLE["div"], other)

    __itruediv__ = div_

    def neg(self) -> Tensor:
        """Elementwise neg (op ``neg``; backward node ``NegBackward0``)."""
        return _apply_unary(TABLE["neg"], self, _NO_ATTRS)

    def __neg__(self) -> Tensor:
        return _apply_unary(TABLE["neg"], self, _NO_ATTRS)

    def pow(self, exponent: Operand) -> Tensor:
        """Elementwise pow (op ``pow``; backward node ``PowBackward1``)."""
        return _binary("pow", self, exponent)

    def __pow__(self, exponent: Operand) -> Tensor:
        return _binary("pow", self, exponent)

    def __rpow__(self, exponent: Operand) -> Tensor:
        return _binary("pow", exponent, self)

    def maximum(self, other: Tensor) -> Tensor:
        """Elementwise maximum (op ``maximum``; backward node ``MaximumBackward0``)."""
        require_tensors("maximum", {"other": other}, Tensor)
        return _binary("maximum", self, other)

    def minimum(self, other: Tensor) -> Tensor:
        """Elementwise minimum (op ``minimum``; backward node ``MinimumBackward0``)."""
        require_tensors("minimum", {"other": other}, Tensor)
        return _binary("minimum", self, other)

    def atan2(self, other: Tensor) -> Tensor:
        """Elementwise atan2 (op ``atan2``; backward node ``Atan2Backward0``)."""
        require_tensors("atan2", {"other": other}, Tensor)
        return _binary("atan2", self, other)

    def gt(self, other: Operand) -> Tensor:
        """Elementwise ``input > other`` (greater than): a bool tensor without grad."""
        return _binary("gt", self, other)

    def __gt__(self, other: Operand) -> Tensor:
        return _compare("gt", self, other)

    def lt(self, other: Operand) -> Tensor:
        """Elementwise ``input < other`` (less than): a bool tensor without grad."""
        return _binary("lt", self, other)

    def __lt__(self, other: Operand) -> Tensor:
        return _compare("lt", self, other)

    def ge(self, other: Operand) -> Tensor:
        """Elementwise ``input >= other`` (greater than or equal): a bool tensor without grad."""
        return _binary("ge", self, other)

    def __ge__(self, other: Operand) -> Tensor:
        return _compare("ge", self, other)

    def le(self, other: Operand) -> Tensor:
        """Elementwise ``input <= other`` (less than or equal): a bool tensor without grad."""
        return _binary("le", self, other)

    def __le__(self, other: Operand) -> Tensor:
        return _compare("le", self, other)

    def eq(self, other: Operand) -> Tensor:
        """Elementwise ``input == other`` (equal): a bool tensor without grad."""
        return _binary("eq", self, other)

    def __eq__(self, other: Operand) -> Tensor:  # type: ignore[override]
        return _compare("eq", self, other)

    def ne(self, other: Operand) -> Tensor:
        """Elementwise ``input != other`` (not equal): a bool tensor without grad."""
        return _binary("ne", self, other)

    def __ne__(self, other: Operand) -> Tensor:  # type: ignore[override]
        return _compare("ne", self, other)

    def where(self, condition: Operand, other: Operand) -> Tensor:
        """``input`` where ``condition`` holds, else ``other`` (``condition`` a bool tensor)."""
        return _call("where", (condition, self, other), {})

    def exp(self) -> Tensor:
        """Elementwise exp (op ``exp``; backward node ``ExpBackward0``)."""
        return _apply_unary(TABLE["exp"], self, _NO_ATTRS)

    def log(self) -> Tensor:
        """Elementwise log (op ``log``; backward node ``LogBackward0``)."""
        return _apply_unary(TABLE["log"], self, _NO_ATTRS)

    def sin(self) -> Tensor:
        """Elementwise sin (op ``sin``; backward node ``SinBackward0``)."""
        return _apply_unary(TABLE["sin"], self, _NO_ATTRS)

    def cos(self) -> Tensor:
        """Elementwise cos (op ``cos``; backward node ``CosBackward0``)."""
        return _apply_unary(TABLE["cos"], self, _NO_ATTRS)

    def tan(self) -> Tensor:
        """Elementwise tan (op ``tan``; backward node ``TanBackward0``)."""
        return _apply_unary(TABLE["tan"], self, _NO_ATTRS)

    def tanh(self) -> Tensor:
        """Elementwise tanh (op ``tanh``; backward node ``TanhBackward0``)."""
        return _apply_unary(TABLE["tanh"], self, _NO_ATTRS)

    def sigmoid(self) -> Tensor:
        """Elementwise sigmoid (op ``sigmoid``; backward node ``SigmoidBackward0``)."""
        return _apply_unary(TABLE["sigmoid"], self, _NO_ATTRS)

    def relu(self) -> Tensor:
        """Elementwise relu (op ``relu``; backward node ``ReluBackward0``)."""
        return _apply_unary(TABLE["relu"], self, _NO_ATTRS)

    def abs(self) -> Tensor:
        """Elementwise abs (op ``abs``; backward node ``AbsBackward0``)."""
        return _apply_unary(TABLE["abs"], self, _NO_ATTRS)

    def sqrt(self) -> Tensor:
        """Elementwise sqrt (op ``sqrt``; backward node ``SqrtBackward0``)."""
        return _apply_unary(TABLE["sqrt"], self, _NO_ATTRS)

    def square(self) -> Tensor:
        """Elementwise square (op ``square``; backward node ``PowBackward0``)."""
        return _apply_unary(TABLE["square"], self, _NO_ATTRS)

    def log1p(self) -> Tensor:
        """Elementwise log1p (op ``log1p``; backward node ``Log1PBackward0``)."""
        return _apply_unary(TABLE["log1p"], self, _NO_ATTRS)

    def expm1(self) -> Tensor:
        """Elementwise expm1 (op ``expm1``; backward node ``Expm1Backward0``)."""
        return _apply_unary(TABLE["expm1"], self, _NO_ATTRS)

    def log2(self) -> Tensor:
        """Elementwise log2 (op ``log2``; backward node ``Log2Backward0``)."""
        return _apply_unary(TABLE["log2"], self, _NO_ATTRS)

    def log10(self) -> Tensor:
        """Elementwise log10 (op ``log10``; backward node ``Log10Backward0``)."""
        return _apply_unary(TABLE["log10"], self, _NO_ATTRS)

    def rsqrt(self) -> Tensor:
        """Elementwise rsqrt (op ``rsqrt``; backward node ``RsqrtBackward0``)."""
        return _apply_unary(TABLE["rsqrt"], self, _NO_ATTRS)

    def reciprocal(self) -> Tensor:
        """Elementwise reciprocal (op ``reciprocal``; backward node ``ReciprocalBackward0``)."""
        return _apply_unary(TABLE["reciprocal"], self, _NO_ATTRS)

    def sinh(self) -> Tensor:
        """Elementwise sinh (op ``sinh``; backward node ``SinhBackward0``)."""
        return _apply_unary(TABLE["sinh"], self, _NO_ATTRS)

    def cosh(self) -> Tensor:
        """Elementwise cosh (op ``cosh``; backward node ``CoshBackward0``)."""
        return _apply_unary(TABLE["cosh"], self, _NO_ATTRS)

    def asin(self) -> Tensor:
        """Elementwise asin (op ``asin``; backward node ``AsinBackward0``)."""
        return _apply_unary(TABLE["asin"], self, _NO_ATTRS)

    def acos(self) -> Tensor:
        """Elementwise acos (op ``acos``; backward node ``AcosBackward0``)."""
        return _apply_unary(TABLE["acos"], self, _NO_ATTRS)

    def atan(self) -> Tensor:
        """Elementwise atan (op ``atan``; backward node ``AtanBackward0``)."""
        return _apply_unary(TABLE["atan"], self, _NO_ATTRS)

    def asinh(self) -> Tensor:
        """Elementwise asinh (op ``asinh``; backward node ``AsinhBackward0``)."""
        return _apply_unary(TABLE["asinh"], self, _NO_ATTRS)

    def atanh(self) -> Tensor:
        """Elementwise atanh (op ``atanh``; backward node ``AtanhBackward0``)."""
        return _apply_unary(TABLE["atanh"], self, _NO_ATTRS)

    def erf(self) -> Tensor:
        """Elementwise erf (op ``erf``; backward node ``ErfBackward0``)."""
        return _apply_unary(TABLE["erf"], self, _NO_ATTRS)

    def sign(self) -> Tensor:
        """Elementwise sign (op ``sign``; backward node ``SignBackward0``)."""
        return _apply_unary(TABLE["sign"], self, _NO_ATTRS)

    def clamp(self, min: float | None = None, max: float | None = None) -> Tensor:
        """Limit values to ``[min, max]``; the gradient passes where ``min <= x <= max``."""
        return _call("clamp", (self,), {"min": min, "max": max})

    def sum(self, dim: Dims = ALL_DIMS, keepdim: bool = False) -> Tensor:
        """The sum of all elements, or over the dimensions ``dim``."""
        return _call("sum", (self,), {"dim": dim, "keepdim": keepdim})

    def mean(self, dim: Dims = ALL_DIMS, keepdim: bool = False) -> Tensor:
        """The mean of all elements, or over the dimensions ``dim``."""
        return _call("mean", (self,), {"dim": dim, "keepdim": keepdim})

    def prod(self, dim: int = ALL_DIMS, keepdim: bool = False) -> Tensor:
        """The product of all elements, or along the dimension ``dim``."""
        return _call("prod", (self,), {"dim": dim, "keepdim": keepdim})

    def amax(self, dim: Dims = ALL_DIMS, keepdim: bool = False) -> Tensor:
        """The maximum of all elements, or over the dimensions ``dim``."""
        return _call("amax", (self,), {"dim": dim, "keepdim": keepdim})

    def amin(self, dim: Dims = ALL_DIMS, keepdim: bool = False) -> Tensor:
        """The minimum of all elements, or over the dimensions ``dim``."""
        return _call("amin", (self,), {"dim": dim, "keepdim": keepdim})

    def max(self) -> Tensor:
        """The maximum of all elements; tied maxima share the gradient evenly."""
        return _apply_unary(TABLE["max"], self, _NO_ATTRS)

    def min(self) -> Tensor:
        """The minimum of all elements; tied minima share the gradient evenly."""
        return _apply_unary(TABLE["min"], self, _NO_ATTRS)

    def logsumexp(self, dim: Dims, keepdim: bool = False) -> Tensor:
        """log(sum(exp(x))) over the dimensions ``dim``, computed without overflow."""
        return _call("logsumexp", (self,), {"dim": dim, "keepdim": keepdim})

    def softmax(self, dim: int) -> Tensor:
        """exp(x) normalized to sum to 1 along ``dim``."""
        return _call("softmax", (self,), {"dim": dim})

    def log_softmax(self, dim: int) -> Tensor:
        """log(softmax(x)) along ``dim``, computed without overflow."""
        return _call("log_softmax", (self,), {"dim": dim})

    def var(
        self,
        dim: Dims = ALL_DIMS,
        unbiased: bool = True,
        keepdim: bool = False,
        correction: float | None = None,
    ) -> Tensor:
        """The variance over ``dim``, divided by n - ``correction`` (default 1)."""
        return _call(
            "var",
            (self,),
            {"dim": dim, "unbiased": unbiased, "keepdim": keepdim, "correction": correction},
        )

    def std(
        self,
        dim: Dims = ALL_DIMS,
        unbiased: bool = True,
        keepdim: bool = False,
        correction: float | None = None,
    ) -> Tensor:
        """The standard deviation over ``dim``, with var's ``correction``."""
        return _call(
            "std",
            (self,),
            {"dim": dim, "unbiased": unbiased, "keepdim": keepdim, "correction": correction},
        )

    def norm(
        self,
        p: float | str | None = None,
        dim: Dims = ALL_DIMS,
        keepdim: bool = False,
    ) -> Tensor:
        """The 2-norm of all elements, or over ``dim``; its gradient is 0 at 0."""
        return _call("norm", (self,), {"p": p, "dim": dim, "keepdim": keepdim})

    def matmul(self, other: Tensor) -> Tensor:
        """The matrix product (1-D operands promoted, batch dimensions broadcast)."""
        require_tensors("matmul", {"other": other}, Tensor)
        return _binary("matmul", self, other)

    def __matmul__(self, other: Operand) -> Tensor:
        if isinstance(other, (int, float, np.number)):
            return NotImplemented
        return _binary("matmul", self, other)

    def __rmatmul__(self, other: Operand) -> Tensor:
        if isinstance(other, (int, float, np.number)):
            return NotImplemented
        return _binary("matmul", other, self)

    def reshape(self, *shape: int | Sequence[int]) -> Tensor:
        """The same values in a new shape (one size may be -1: inferred)."""
        if not shape:
            raise TypeError('reshape() missing 1 required positional arguments: "shape"')
        return _call("reshape", (self,), {"shape": shape})

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        """Dimensions ``dim0`` and ``dim1`` swapped."""
        return _call("transpose", (self,), {"dim0": dim0, "dim1": dim1})

    def t(self) -> Tensor:
        """A matrix transposed; a vector or a number as it is (at most two dimensions)."""
        return _apply_unary(TABLE["t"], self, _NO_ATTRS)

    def permute(self, *dims: int | Sequence[int]) -> Tensor:
        """The dimensions reordered: dimension ``i`` of the result is ``dims[i]`` of the input."""
        if not dims:
            raise TypeError('permute() missing 1 required positional arguments: "dims"')
        return _call("permute", (self,), {"dims": dims})

    def squeeze(self, dim: int | Sequence[int] = ALL_DIMS) -> Tensor:
        """The dimensions of size 1 removed: all of them, or those among ``dim``."""
        return _call("squeeze", (self,), {"dim": dim})

    def unsqueeze(self, dim: int) -> Tensor:
        """A dimension of size 1 inserted at ``dim``."""
        return _call("unsqueeze", (self,), {"dim": dim})

    def select(self, dim: int, index: int) -> Tensor:
        """Element ``index`` along dimension ``dim``, that dimension removed."""
        return _call("select", (self,), {"dim": dim, "index": index})
    # --- end generated: op-methods ---


def _bump_version(tensor: Tensor) -> None:
    if tensor._version is None:
        tensor._version = [1]
    else:
        tensor._version[0] += 1
    note_update()


def _requires_grad(operand: Operand) -> bool:
    return isinstance(operand, Tensor) and operand.requires_grad


def value_of(operand: Operand) -> Array:
    """An operand's value: a Tensor's array, a Python number as it is."""
    return operand._data if isinstance(operand, Tensor) else operand


def _accumulate(tensor: Tensor, grad: Array) -> None:
    """Add ``grad`` into ``tensor.grad``, in place when there is one (PyTorch's AccumulateGrad)."""
    if tensor._grad is None:
        dtype = tensor._data.dtype
        tensor._grad = Tensor(grad.copy() if type(grad) is np.ndarray and grad.dtype == dtype
                              else np.array(grad, dtype=dtype))
        return
    target = tensor._grad
    if isinstance(target._data, np.ndarray) and target._data.flags.writeable:
        np.add(target._data, grad, out=target._data, casting="unsafe")
    else:
        target._data = np.array(target._data + grad, dtype=target._data.dtype)
    _bump_version(target)


# --- applying ops ------------------------------------------------------------------------------

def _as_operand(value: Any) -> Operand:
    """A Tensor stays; Python and NumPy numbers become Python numbers; arrays become Tensors."""
    if type(value) in (float, int, bool) or isinstance(value, Tensor):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, list, tuple)):
        return tensor(value)
    raise TypeError(f"unsupported operand type: {type(value).__name__}")


def _binary(name: str, a: Operand, b: Operand) -> Tensor:
    if type(a) is not Tensor:
        a = _as_operand(a)
    if type(b) is not Tensor:
        b = _as_operand(b)
    return _apply_binary(TABLE[name], a, b)


def _compare(name: str, a: Tensor, b: Any) -> Any:
    """A comparison operator: NotImplemented for an operand that is neither a tensor nor a number,
    so that Python falls back to identity (``x == None`` is False), as PyTorch's operators do."""
    if type(b) is not Tensor and not isinstance(b, (int, float, np.number, np.bool_)):
        return NotImplemented
    return _binary(name, a, b)


def _call(name: str, operands: tuple[Operand, ...], args: dict[str, Any]) -> Tensor:
    """Op ``name`` called from Python with its attributes' arguments by name (``args``, which
    becomes the attributes): what PyTorch refuses of the call, then each argument turned into
    the attribute's value by its kind."""
    op = TABLE[name]
    if len(operands) > 1 or type(operands[0]) is not Tensor:  # one tensor: the common case
        operands = tuple([o if type(o) is Tensor else _as_operand(o) for o in operands])
    if not args:  # no attributes (where): nothing to check or convert
        return apply(op, operands)
    data = operands[0]._data
    attrs = python_attrs(op, dtypes.from_numpy(data.dtype), args, data.shape)
    if len(operands) == 1:
        return _apply_unary(op, operands[0], attrs)
    return apply(op, operands, attrs)


def _call_variadic(name: str, operands: Sequence[Tensor], args: dict[str, Any]) -> Tensor:
    """Variadic op ``name`` called from Python with its operands as one sequence
    (``cat([a, b], dim=1)``)."""
    return _call(name, tensor_list(TABLE[name], operands, Tensor), args)


def _promoted(op: Op, args: tuple[Operand, ...], attrs: Mapping[str, Any] | None = None,
              ) -> tuple[Array, ...]:
    """The operands' values in the dtype PyTorch computes ``op`` in, where NumPy would pick another.

    NumPy 2 (NEP 50) agrees with PyTorch when every tensor operand has the same floating dtype:
    Python numbers are weak there as in PyTorch. Otherwise PyTorch's rules pick the type.
    """
    tensors = [a._data.dtype for a in args if type(a) is Tensor]
    if tensors[0].kind == "f" and all(d == tensors[0] for d in tensors) and not (
            op.conditioned or any(type(a) is bool for a in args)):  # some ops refuse a bool
        return tuple(value_of(a) for a in args)
    target = op.computed_dtype(
        [(dtypes.from_numpy(a._data.dtype), a._data.ndim) if type(a) is Tensor else a
         for a in args], attrs).numpy
    # Python numbers stay Python numbers: NumPy treats them as weak, as PyTorch does.
    return tuple(np.asarray(a._data, dtype=target) if type(a) is Tensor else a for a in args)


_NO_ATTRS: dict[str, Any] = {}  # shared by every call without attributes; never written


def apply(op: Op, args: tuple[Operand, ...], attrs: dict[str, Any] = _NO_ATTRS) -> Tensor:
    """Run ``op`` forward on tensors and Python numbers; in grad mode, record it for backward."""
    if len(args) == 1:
        return _apply_unary(op, args[0], attrs)
    if len(args) == 2 and not attrs:
        return _apply_binary(op, args[0], args[1])
    inputs = _promoted(op, args, attrs)
    return record(op, args, inputs, attrs, _forward(op, inputs, attrs))


def record(op: Op, args: tuple[Operand, ...], inputs: tuple[Array, ...], attrs: dict[str, Any],
           out: Array) -> Tensor:
    """``out``, computed by ``op`` from ``args`` (whose values, promoted, are ``inputs``), as a
    tensor; in grad mode, when an operand requires grad, with the node that backward runs."""
    if not _enabled.get():
        return Tensor(out)
    targets = tuple([(a._node or a) if type(a) is Tensor and a.requires_grad and vjp else None
                     for a, vjp in zip(args, op.vjps_for(len(args)), strict=True)])
    if all([t is None for t in targets]):
        return Tensor(out)
    modified = any([type(a) is Tensor and a._version and a._version[0] for a in args])
    return _result(out, Node(op, args, inputs, attrs, out, targets,
                             _versions(args) if modified else None))


# The two functions below are ``apply`` for one and two operands, written out: every op of a
# user's program passes here, so they avoid generators and build as few objects as they can.

def _apply_unary(op: Op, a: Tensor, attrs: dict[str, Any]) -> Tensor:
    x = a._data
    if x.dtype.kind != "f":
        (x,) = _promoted(op, (a,), attrs)
    try:
        out = op.forward(x, **attrs) if attrs else op.forward(x)
    except ValueError:
        _refused_by_numpy(op, (x,), attrs)
        raise
    if not a.requires_grad or op.vjps[0] is None or not _enabled.get():
        result = Tensor(out)
    else:
        result = _result(out, Node(op, (a,), (x,), attrs, out, (a._node or a,),
                                   (a._version[0],) if a._version and a._version[0] else None))
    if op.view:
        _share_storage(a, result)
    return result


def _share_storage(base: Tensor, view: Tensor) -> None:
    """A view's values are its base's where NumPy made a view too: they then share the version
    counter, so a graph that saved either refuses a change made through the other."""
    data = view._data
    if type(data) is not np.ndarray or data.base is None:  # a number, or an array of its own
        return
    # NumPy points a view at the array that owns the memory: the base's own, or the base.
    if data.base is base._data or data.base is base._data.base or np.may_share_memory(
            data, base._data):
        if base._version is None:
            base._version = [0]
        view._version = base._version
        view._base = base if base._base is None else base._base


def _apply_binary(op: Op, a: Operand, b: Operand) -> Tensor:
    if type(a) is Tensor:
        x = a._data
        if type(b) is Tensor:
            y = b._data
            fast = x.dtype == y.dtype and x.dtype.kind == "f"
        else:
            y = b
            fast = x.dtype.kind == "f" and type(b) is not bool  # some ops refuse a bool
    else:
        x, y = a, b._data
        fast = y.dtype.kind == "f" and type(a) is not bool
    if not fast:
        x, y = _promoted(op, (a, b))
    try:
        out = op.forward(x, y)
    except ValueError:
        _refused_by_numpy(op, (x, y), _NO_ATTRS)
        raise
    if not _enabled.get() or op.stops_gradient:
        return Tensor(out)
    ta = (a._node or a) if type(a) is Tensor and a.requires_grad else None
    tb = (b._node or b) if type(b) is Tensor and b.requires_grad else None
    if ta is None and tb is None:
        return Tensor(out)
    modified = ((type(a) is Tensor and a._version and a._version[0])
                or (type(b) is Tensor and b._version and b._version[0]))
    return _result(out, Node(op, (a, b), (x, y), _NO_ATTRS, out, (ta, tb),
                             _versions((a, b)) if modified else None))


def _result(out: Array, node: Node) -> Tensor:
    result = Tensor(out, node)
    if node.op.saves_output:
        # Shared with the node: an in-place change of the result makes backward refuse it.
        result._version = node.out_version = [0]
    return result


def _forward(op: Op, inputs: tuple[Array, ...], attrs: dict[str, Any]) -> Array:
    try:
        return op.forward(*inputs, **attrs)
    except ValueError:
        _refused_by_numpy(op, inputs, attrs)
        raise


def _refused_by_numpy(op: Op, inputs: tuple[Array, ...], attrs: dict[str, Any]) -> None:
    """PyTorch's error for inputs NumPy refused, from the op's shape rule (which raises it)."""
    op.shape(*[np.shape(x) for x in inputs], **attrs)


def _versions(args: tuple[Operand, ...]) -> tuple[int, ...]:
    """The operands' version counters now, for the check at backward time."""
    return tuple(a._version[0] if type(a) is Tensor and a._version else 0 for a in args)


# --- construction ------------------------------------------------------------------------------

def tensor(data: Any, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    """A new leaf tensor holding a copy of ``data`` (a number, nested lists, an array, a tensor).

    Python floats become float32 (PyTorch's default), Python ints int64; an array keeps its type.
    """
    if isinstance(data, Tensor):
        data = data._data
    if dtype is None and type(data) is np.ndarray and data.dtype in _FLOATING:
        result = Tensor(data.copy())  # the common case: np.array's conversions have no work
    else:
        target = dtype or data_dtype(data)
        result = Tensor(np.array(data, dtype=target.numpy))
        if requires_grad and not target.is_floating_point:
            raise UsageError(FLOAT_ONLY)
    if requires_grad:
        result.requires_grad = True
    return result


_FLOATING = (np.dtype(np.float32), np.dtype(np.float64))  # arrays tensor() keeps as they are
