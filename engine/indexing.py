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
    # Each index is checked before any op runs, as Python unpacks slices; a slice is kept as its
    # bounds (a tuple), so that each index is classified once.
    indices: list[Any] = []
    consuming = 0  # the indices that take a dimension: integers and slices
    for index in key:
        if type(index) is slice:
            indices.append(_bounds(index))
            consuming += 1
        elif index is None or index is Ellipsis:
            indices.append(index)
        elif is_int(index):
            indices.append(index)
            consuming += 1
        else:
            raise _invalid(index)
    # PyTorch takes any number of ellipses, each standing for the dimensions no index takes
    # (NumPy refuses a second); without a shape, where they are counted from the end, only one.
    if shape is None and indices.count(Ellipsis) > 1:
        raise InvalidArgument("an index can only have a single ellipsis ('...')")
    if shape is not None and consuming > len(shape):
        raise DimensionError(f"too many indices for tensor of dimension {len(shape)}")
    taken = consuming  # by all the indices
    current = None if shape is None else list(shape)
    found: list[Step] = []
    dim = 0
    after_ellipsis = False
    for position, index in enumerate(indices):
        if index is Ellipsis:
            after_ellipsis = True
            if current is not None:
                assert shape is not None
                dim += len(shape) - taken
            continue
        if index is not None:
            consuming -= 1  # now: the indices after this one that take a dimension
        # Without a shape, the dimensions after the ellipsis are counted from the end: those
        # the indices after this one take are the last ones.
        at = dim if current is not None or not after_ellipsis else -1 - consuming
        if index is None:
            found.append(("unsqueeze", {"dim": at}))
            if current is not None:
                current.insert(at, 1)
            dim += 1
        elif type(index) is not tuple:
            found.append(_select(at, index, position, current))
            if current is not None:
                del current[at]
        else:
            start, stop, step = index
            # Past the last dimension (after a second ellipsis) PyTorch reads a size of 0, and
            # the slice op, if it is not skipped, refuses the dimension.
            size = None if current is None else current[at] if at < len(current) else 0
            if not _spans(start, stop, step, size):
                found.append(("slice", {"dim": at, "start": start, "end": stop, "step": step}))
                if current is not None and at < len(current):
                    current[at] = len(range(*slice(start, stop, step).indices(current[at])))
            dim += 1
    return found or [("alias", {})]


def _select(dim: int, index: int, position: int, shape: Sequence[int] | None) -> Step:
    """``select`` with indexing's own error for an index out of range (naming the index's
    position in the key, as PyTorch does)."""
    # A dimension past the last (after a second ellipsis) has size 0 for PyTorch's check.
    size = None if shape is None else shape[dim] if dim < len(shape) else 0
    if size is not None and not -size <= index < size:
        raise DimensionError(f"index {index} is out of bounds for dimension {position} with "
                             f"size {size}")
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
