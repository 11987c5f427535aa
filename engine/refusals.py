"""What PyTorch refuses of a tensor program, in its words: the messages and checks the eager
engine and the SDK (``crossgrad.client``) both raise with, kept once."""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import dtypes
from .backward_graph import legacy_type_name
from .dtypes import DType
from .errors import DTypeError, UsageError, refusal
from .ops import ALL_DIMS, ATTR_KINDS, IllTyped, Op

NON_LEAF_GRAD = (
    "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed. Its .grad "
    "attribute won't be populated during autograd.backward(). If you indeed want the .grad field "
    "to be populated for a non-leaf Tensor, use .retain_grad() on the non-leaf Tensor. If you "
    "access the non-leaf Tensor by mistake, make sure you access the leaf Tensor instead. See "
    "github.com/pytorch/pytorch/pull/30531 for more information.")
LEAF_IN_PLACE = "a leaf Variable that requires grad is being used in an in-place operation."
VIEW_OF_LEAF_IN_PLACE = ("a view of a leaf Variable that requires grad is being used in an "
                         "in-place operation.")
# PyTorch rewrites a view's base through its graph (CopySlices); crossgrad refuses rather than
# give the base stale values.
VIEW_IN_PLACE = ("an in-place operation on a view (x[0], x.T, x.reshape(...)) while recording a "
                 "graph is not supported: the base would not see it. Compute the new tensor out "
                 "of place (torch.where, torch.cat)")
T_ON_0D = "Tensor.T is deprecated on 0-D tensors. This function is the identity in these cases."
T_NOT_2D = (
    "The use of `x.T` on tensors of dimension other than 2 to reverse their shape is deprecated "
    "and it will throw an error in a future release. Consider `x.mT` to transpose batches of "
    "matrices or `x.permute(*torch.arange(x.ndim - 1, -1, -1))` to reverse the dimensions of a "
    "tensor.")


def check_call(op: Op, dtype: DType, args: Mapping[str, Any],
               shape: tuple[int, ...] = ()) -> None:
    """What PyTorch refuses of a Python call of ``op`` on a first operand of ``dtype`` and
    ``shape`` that a graph accepts: ``mean`` of an int64 tensor, ``clamp`` without bounds."""
    if op.refuses_integers and not dtype.is_floating_point:
        dim = args.get("dim")
        last = not shape or not isinstance(dim, int) or dim % len(shape) == len(shape) - 1
        message = op.refuses_integers.format(
            type=legacy_type_name(np.empty(0, dtype.numpy))[6:-6],
            lastdim="_lastdim" if last else "")
        raise refusal(message)
    if op.needs_one_of and all(args[attr] is None for attr in op.needs_one_of):
        raise UsageError(f"torch.{op.name}: At least one of "
                         f"{' or '.join(repr(attr) for attr in op.needs_one_of)} must not be None")


def python_attrs(op: Op, dtype: DType, args: dict[str, Any],
                 shape: tuple[int, ...] = ()) -> dict[str, Any]:
    """A Python call's attribute arguments (``args``, by name) as ``op``'s attributes: what
    PyTorch refuses of the call on a first operand of ``dtype`` and ``shape``, then each argument
    turned into its attribute's value by the attribute's kind, then PyTorch's warning for the
    call, if any (``var`` of one element)."""
    if op.bool_overload:
        first = next(iter(op.attrs))
        if isinstance(args[first], (bool, np.bool_)):
            args[op.bool_overload], args[first] = args[first], ALL_DIMS
    if op.refuses_integers or op.needs_one_of:
        check_call(op, dtype, args, shape)
    for attr, convert in op.python_forms:
        try:
            args[attr] = convert(args[attr])
        except IllTyped:  # PyTorch's argument parser refuses it before the op runs
            expected = ATTR_KINDS[op.attrs[attr].kind].python.removesuffix(" | None")
            raise TypeError(f"{op.name}(): argument '{attr}' must be "
                            f"{_PYTORCH_TYPES.get(expected, expected)}, not "
                            f"{type(args[attr]).__name__}") from None
    if op.warns is not None and (message := op.warns(shape, args)):
        warnings.warn(message, UserWarning, stacklevel=_caller_level())
    return args


# PyTorch's argument parser's names for the attribute kinds' Python types, where they differ.
_PYTORCH_TYPES = {"Dims": "tuple of ints"}


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside crossgrad: the user's line, whether it
    called the method or the module function (which calls the method)."""
    frame: types.FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("crossgrad."):
        frame, level = frame.f_back, level + 1
    return level


def require_tensors(op: str, operands: Mapping[str, Any], tensor_type: type) -> None:
    """PyTorch's refusal of an operand that is not a tensor, for an op whose Python signature
    takes tensors only (``maximum(input, other)``); ``operands`` by name, in the order of their
    positions in the call (a method's ``self`` is not one)."""
    for position, (name, value) in enumerate(operands.items(), start=1):
        if not isinstance(value, tensor_type):
            raise TypeError(f"{op}(): argument '{name}' (position {position}) must be Tensor, "
                            f"not {_type_name(value)}")


def require_tensor_input(op: str, input: Any, other: Any, tensor_type: type) -> None:
    """PyTorch's refusal of a number as the ``input`` of a function whose signatures take one as
    ``other`` only (``torch.gt(2, x)``): no overload matches."""
    if isinstance(input, tensor_type):
        return
    got = ", ".join("Tensor" if isinstance(value, tensor_type) else _type_name(value)
                    for value in (input, other))
    raise TypeError(f"{op}() received an invalid combination of arguments - got ({got}), but "
                    "expected one of:\n * (Tensor input, Tensor other, *, Tensor out = None)\n"
                    " * (Tensor input, Number other, *, Tensor out = None)\n")


def _type_name(value: Any) -> str:
    """The type of ``value`` as PyTorch names it: with its module unless a builtin."""
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else (
        f"{kind.__module__}.{kind.__qualname__}")


def tensor_list(op: Op, operands: Any, tensor_type: type) -> tuple[Any, ...]:
    """The operands of a variadic op as a Python call gives them, one sequence of tensors
    (``cat([a, b])``), checked as PyTorch checks them: a tensor or a number in place of the
    sequence, or an element that is not a tensor, is a TypeError; no tensors at all, the op's
    own error (its shape rule's)."""
    if isinstance(operands, tensor_type) or not isinstance(operands, (list, tuple)):
        raise TypeError(f"{op.name}(): argument '{op.operands[0]}' (position 1) must be tuple of "
                        f"Tensors, not {type(operands).__name__}")
    for position, operand in enumerate(operands):
        if not isinstance(operand, tensor_type):
            raise TypeError(f"expected Tensor as element {position} in argument 0, but got "
                            f"{type(operand).__name__}")
    if not operands:
        op.shape()
    return tuple(operands)


def data_dtype(data: Any) -> DType:
    """The dtype ``torch.tensor(data)`` gives: an array's own, float32 for Python floats, int64
    for ints, bool for bools; PyTorch's error for data that is not numbers."""
    if isinstance(data, (np.ndarray, np.generic)):
        return dtypes.from_numpy(data.dtype)
    try:
        probe = np.asarray(data)
    except ValueError as error:
        raise DTypeError(f"could not build a tensor from the given data: {error}") from None
    if probe.dtype.kind not in "fiub":
        raise DTypeError(f"new(): invalid data type '{type(data).__name__}'")
    return dtypes.DEFAULT_FLOAT if probe.dtype.kind == "f" else dtypes.from_numpy(probe.dtype)
