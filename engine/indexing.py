"""Basic indexing (``x[0]``, ``x[1:3]``, ``x[:, 0]``, ``x[..., -1]``, ``x[None]``) as the chain of
table ops PyTorch decomposes it into: ``select`` per integer, ``slice`` per slice, ``unsqueeze``
per None, ``alias`` where nothing else is left. Run as ops, the chain gives PyTorch's values, its
gradients (each view's VJP puts the gradient back in the positions it viewed) and its grad_fn
names, ``x[1:3, 0]`` being ``SelectBackward0`` over ``SliceBackward0``.

Written once, for the engine's ``Tensor``, the SDK's and the formula parser. The parser knows no
shapes (``shape=None``): dimensions after an ellipsis are then counted from the end, bounds are
left to the rows' own checks, and only a bare ``:`` is known to span its dimension.

Advanced indexing (tensors, lists or bools as indices) and assignment (``x[0] = ...``) are not
supported: they are refused, not approximated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import DimensionError, InvalidArgument
from .ops import is_int as _is_integer

Step = tuple[str, dict[str, Any]]  # an op of the table and its attributes

ADVANCED = ("advanced indexing (a tensor, a list or a bool as an index) is not supported; "
            "index with integers, slices, None and ...")
ASSIGNMENT = "index assignment (x[...] = value) is not supported; tensors are changed by ops"
_ZERO_DIM_INT = ("invalid index of a 0-dim tensor. Use `tensor.item()` in Python or "
                 "`tensor.item<T>()` in C++ to convert a 0-dim tensor to a number")


def steps(key: Any, shape: Sequence[int] | None) -> list[Step]:
    """The ops that compute ``x[key]`` for ``x`` of ``shape`` (None: not known), in order, or
    PyTorch's error for the key."""
    if isinstance(key, tuple):
        return _several(key, shape)
    # One index alone takes PyTorch's shortcuts: a slice is always a slice op (even ``x[:]``),
    # ``x[...]`` an alias.
    if type(key) is slice:  # the common case first: indexing is hot (slice has no subclasses)
        start, stop, step = _bounds(key)
        return [("slice", {"dim": 0, "start": start, "end": stop, "step": step})]
    if key is None:
        return [("unsqueeze", {"dim": 0})]
    if key is Ellipsis:
        return [("alias", {})]
    if is_int(key):
        if shape is not None and not shape:
            raise DimensionError(_ZERO_DIM_INT)
        return [_select(0, key, 0, shape)]
    raise _invalid(key)


def _several(key: tuple[Any, ...], shape: Sequence[int] | None) -> list[Step]:
    for index in key:  # each index is checked before any op runs, as Python unpacks slices
        if isinstance(index, slice):
            _bounds(index)
        elif not (index is None or index is Ellipsis or is_int(index)):
            raise _invalid(index)
    if key.count(Ellipsis) > 1:  # only ints, slices, None and ... are left to compare
        raise InvalidArgument("an index can only have a single ellipsis ('...')")
    consuming = [is_int(index) or isinstance(index, slice) for index in key]
    if shape is not None and sum(consuming) > len(shape):
        raise DimensionError(f"too many indices for tensor of dimension {len(shape)}")
    current = None if shape is None else list(shape)
    found: list[Step] = []
    dim = 0
    after_ellipsis = False
    for position, index in enumerate(key):
        if index is Ellipsis:
            after_ellipsis = True
            if current is not None:
                assert shape is not None
                dim += len(shape) - sum(consuming)
            continue
        # Without a shape, the dimensions after the ellipsis are counted from the end: those
        # the indices after this one take are the last ones.
        at = dim if current is not None or not after_ellipsis else (
            -1 - sum(consuming[position + 1:]))
        if index is None:
            found.append(("unsqueeze", {"dim": at}))
            if current is not None:
                current.insert(at, 1)
            dim += 1
        elif is_int(index):
            found.append(_select(at, index, position, current))
            if current is not None:
                del current[at]
        else:
            start, stop, step = _bounds(index)
            size = None if current is None else current[at]
            if not _spans(start, stop, step, size):
                found.append(("slice", {"dim": at, "start": start, "end": stop, "step": step}))
                if current is not None:
                    current[at] = len(range(*slice(start, stop, step).indices(current[at])))
            dim += 1
    return found or [("alias", {})]


def _select(dim: int, index: int, position: int, shape: Sequence[int] | None) -> Step:
    """``select`` with indexing's own error for an index out of range (naming the index's
    position in the key, as PyTorch does)."""
    if shape is not None and not -shape[dim] <= index < shape[dim]:
        raise DimensionError(f"index {index} is out of bounds for dimension {position} with "
                             f"size {shape[dim]}")
    return ("select", {"dim": dim, "index": int(index)})


def _bounds(index: slice) -> tuple[int | None, int | None, int]:
    """A slice's start, stop and step, checked as Python and PyTorch check them."""
    start, stop, step = index.start, index.stop, index.step
    if step is None and (start is None or type(start) is int) and (
            stop is None or type(stop) is int):
        return start, stop, 1  # the common case: nothing to check or convert
    for bound in (start, stop, step):
        if bound is not None and not is_int(bound):
            raise TypeError("slice indices must be integers or None or have an __index__ "
                            "method")
    step = 1 if step is None else int(step)
    if step == 0:
        raise InvalidArgument("slice step cannot be zero")
    if step < 0:
        raise InvalidArgument("step must be greater than zero")
    start = None if start is None else int(start)
    stop = None if stop is None else int(stop)
    return start, stop, step


def _spans(start: int | None, stop: int | None, step: int, size: int | None) -> bool:
    """Whether a slice takes the whole dimension as it is, which PyTorch then skips."""
    if step != 1 or start not in (None, 0):
        return False
    return stop is None or (size is not None and stop >= size)


def is_int(index: Any) -> bool:
    return type(index) is int or _is_integer(index)  # the common case first: indexing is hot


def _invalid(index: Any) -> Exception:
    if isinstance(index, (bool, list)) or hasattr(index, "dtype"):
        return NotImplementedError(ADVANCED)
    return DimensionError("only integers, slices (`:`), ellipsis (`...`), None and long or byte "
                          f"Variables are valid indices (got {type(index).__name__})")
