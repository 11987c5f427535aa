"""Shape rules: the result shape of each kind of op, or PyTorch's error for operands that don't fit.

The op table names one of these per op. The numeric engine calls them only when NumPy has refused
an operation (so the happy path pays nothing) to raise PyTorch's message; graph validation calls
them up front.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from math import prod

from .errors import DimensionError, InvalidArgument, ShapeError, UsageError

Shape = tuple[int, ...]


def broadcast(*shapes: Shape) -> Shape:
    """NumPy/PyTorch broadcasting: align from the right; sizes must match or be 1."""
    ndim = max((len(s) for s in shapes), default=0)
    result = []
    for axis in range(ndim):
        size = 1
        for position, shape in enumerate(shapes):
            offset = axis - (ndim - len(shape))
            if offset < 0 or shape[offset] == 1:
                continue
            if size not in (1, shape[offset]):
                # PyTorch names the first operand "a" and the second "b".
                other = "a" if position else "b"
                raise ShapeError(
                    f"The size of tensor {other} ({size}) must match the size of tensor "
                    f"{'ab'[position]} ({shape[offset]}) at non-singleton dimension {axis}")
            size = shape[offset]
        result.append(size)
    return tuple(result)


def same(shape: Shape, **attrs: object) -> Shape:
    """An elementwise op of one operand whose attributes do not change its shape (clamp)."""
    return shape


def normalize_dim(dim: int, ndim: int) -> int:
    """A dimension index counted from 0; 0-d tensors accept -1 and 0 as PyTorch does."""
    rank = max(ndim, 1)
    if not -rank <= dim < rank:
        raise DimensionError("Dimension out of range (expected to be in range of "
                             f"[{-rank}, {rank - 1}], but got {dim})")
    return dim % rank


def normalize_dims(dims: Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """The reduced dimensions, sorted; ``None`` or no dims at all means every one of them."""
    if dims is None or len(dims) == 0:
        return tuple(range(ndim))
    normalized = [normalize_dim(d, ndim) for d in dims]
    for d in normalized:
        if normalized.count(d) > 1:
            raise ShapeError(f"dim {d} appears multiple times in the list of dims")
    # A 0-d tensor reduced over dim 0 or -1 stays 0-d.
    return tuple(sorted(d for d in normalized if d < ndim))


def reduce(shape: Shape, dim: Sequence[int] | None, keepdim: bool) -> Shape:
    """Shape after summing or averaging over ``dim``."""
    dims = normalize_dims(dim, len(shape))
    if keepdim:
        return tuple(1 if i in dims else s for i, s in enumerate(shape))
    return tuple(s for i, s in enumerate(shape) if i not in dims)


def extremum(name: str) -> Callable[..., Shape]:
    """The shape rule of ``amax``-like reductions named ``name``: as ``reduce``, refusing, as
    PyTorch does, to reduce no element (a maximum of nothing has no value)."""

    def rule(shape: Shape, dim: Sequence[int] | None = None, keepdim: bool = False) -> Shape:
        result = reduce(shape, dim, keepdim)
        if not dim and prod(shape) == 0:
            raise ShapeError(f"{name}(): Expected reduction dim to be specified for "
                             "input.numel() == 0. Specify the reduction dim with the 'dim' "
                             "argument.")
        for d in normalize_dims(dim, len(shape)):
            if shape[d] == 0:
                raise DimensionError(f"{name}(): Expected reduction dim {d} to have non-zero size.")
        return result

    return rule


def along(shape: Shape, dim: int) -> Shape:
    """An op along one dimension that keeps the shape (``softmax``)."""
    normalize_dim(dim, len(shape))
    return shape


def variance(shape: Shape, dim: Sequence[int] | None, unbiased: bool, keepdim: bool,
             correction: float | None) -> Shape:
    """``var`` and ``std``: as ``reduce``."""
    return reduce(shape, dim, keepdim)


def vector_norm(shape: Shape, p: float | None, dim: Sequence[int] | None,
                keepdim: bool) -> Shape:
    """``norm``: as ``reduce``, for the 2-norm only."""
    two_norm_only(p, dim)
    return reduce(shape, dim, keepdim)


def two_norm_only(p: object, dim: Sequence[int] | None) -> None:
    """Refuse a norm other than the 2-norm (``p`` 2, or None: PyTorch's "fro" of a vector).
    Without ``p``, PyTorch takes more than two dims for a matrix norm's, and refuses them."""
    if p is not None and p != 2:
        raise UsageError(f"norm: only the 2-norm is supported (p=2, or None); got p={p!r}")
    if p is None and dim is not None and len(dim) > 2:
        raise ShapeError("linalg.matrix_norm: dim must be a 2-tuple. Got "
                         f"{' '.join(map(str, dim))}")


def matmul(a: Shape, b: Shape) -> Shape:
    """``a @ b`` with 1-D operands promoted and batch dimensions broadcast."""
    if not a or not b:
        raise ShapeError("both arguments to matmul need to be at least 1D, but they are "
                         f"{len(a)}D and {len(b)}D")
    dims = "x".join
    if len(a) == 1 and len(b) == 1:
        if a != b:
            raise ShapeError(f"inconsistent tensor size, expected tensor [{a[0]}] and src [{b[0]}] "
                             "to have the same number of elements, but got "
                             f"{a[0]} and {b[0]} elements respectively")
        return ()
    if len(a) == 2 and len(b) == 1:
        if a[1] != b[0]:
            raise ShapeError(f"size mismatch, got input ({a[0]}), mat ({dims(map(str, a))}), "
                             f"vec ({b[0]})")
        return (a[0],)
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise ShapeError(f"mat1 and mat2 shapes cannot be multiplied "
                         f"({prod(a2[:-1])}x{a2[-1]} and {dims(map(str, b2[-2:]))})")
    batch = broadcast(a2[:-2], b2[:-2])
    rows = () if len(a) == 1 else (a2[-2],)
    cols = () if len(b) == 1 else (b2[-1],)
    return (*batch, *rows, *cols)


def reshape(input_shape: Shape, shape: Sequence[int]) -> Shape:
    """Target ``shape`` with at most one -1 inferred from the element count."""
    size, target = prod(input_shape), tuple(shape)
    if target and min(target) < -1:
        index = next(i for i, d in enumerate(target) if d < -1)
        raise ShapeError(
            f"invalid shape dimension {target[index]} at index {index} of shape {list(target)}")
    inferred = target.count(-1)
    if inferred > 1:
        raise ShapeError("only one dimension can be inferred")
    known = -prod(target) if inferred else prod(target)  # the -1 is one factor of the product
    if inferred:
        if known == 0 or size % known:
            raise ShapeError(f"shape '{list(target)}' is invalid for input of size {size}")
        at = target.index(-1)
        return (*target[:at], size // known, *target[at + 1:])
    if known != size:
        raise ShapeError(f"shape '{list(target)}' is invalid for input of size {size}")
    return target


def t(shape: Shape) -> Shape:
    """A matrix's shape transposed; a vector's or a number's as it is (PyTorch's ``t()``)."""
    if len(shape) > 2:
        raise ShapeError(f"t() expects a tensor with <= 2 dimensions, but self is {len(shape)}D")
    return tuple(reversed(shape))


def transpose(shape: Shape, dim0: int, dim1: int) -> Shape:
    """Shape with two dimensions swapped."""
    d0, d1 = normalize_dim(dim0, len(shape)), normalize_dim(dim1, len(shape))
    swapped = list(shape)
    if shape:
        swapped[d0], swapped[d1] = shape[d1], shape[d0]
    return tuple(swapped)


def permute(shape: Shape, dims: Sequence[int]) -> Shape:
    """Shape with its dimensions reordered."""
    if len(dims) != len(shape):
        raise ShapeError("permute(sparse_coo): number of dimensions in the tensor input does "
                         "not match the length of the desired ordering of dimensions i.e. "
                         f"input.dim() = {len(shape)} is not equal to len(dims) = {len(dims)}")
    normalized = [normalize_dim(d, len(shape)) for d in dims]
    if len(set(normalized)) != len(normalized):
        raise ShapeError("permute(): duplicate dims are not allowed.")
    return tuple(shape[d] for d in normalized)


def _distinct_dims(dims: Sequence[int], ndim: int) -> tuple[int, ...]:
    """``dims`` counted from 0, each at most once (PyTorch's error otherwise)."""
    normalized = tuple(normalize_dim(d, ndim) for d in dims)
    for d in normalized:
        if normalized.count(d) > 1:
            raise ShapeError(f"dim {d} appears multiple times in the list of dims")
    return normalized


def squeezed_dims(shape: Shape, dim: int | Sequence[int] | None) -> tuple[int, ...]:
    """The dimensions ``squeeze`` removes: those of size 1 among ``dim`` (every one if None)."""
    if dim is None:
        candidates: Sequence[int] = range(len(shape))
    else:
        candidates = _distinct_dims((dim,) if isinstance(dim, int) else dim, len(shape))
    return tuple(d for d in candidates if d < len(shape) and shape[d] == 1)


def squeeze(shape: Shape, dim: int | Sequence[int] | None = None) -> Shape:
    """Shape without the size-1 dimensions among ``dim`` (all of them if None)."""
    removed = squeezed_dims(shape, dim)
    return tuple(s for i, s in enumerate(shape) if i not in removed)


def unsqueeze(shape: Shape, dim: int) -> Shape:
    """Shape with a dimension of size 1 inserted at ``dim`` (counted in the result)."""
    at = normalize_dim(dim, len(shape) + 1)
    return (*shape[:at], 1, *shape[at:])


def flatten(shape: Shape, start_dim: int = 0, end_dim: int = -1) -> Shape:
    """Shape with dimensions ``start_dim`` to ``end_dim`` (inclusive) merged into one."""
    start, end = normalize_dim(start_dim, len(shape)), normalize_dim(end_dim, len(shape))
    if start > end:
        raise ShapeError("flatten() has invalid args: start_dim cannot come after end_dim")
    if not shape:
        return (1,)
    return (*shape[:start], prod(shape[start:end + 1]), *shape[end + 1:])


def flattens_nothing(shape: Shape, start_dim: int, end_dim: int) -> bool:
    """Whether ``flatten`` merges one dimension into itself: PyTorch returns the tensor itself
    then (a 0-d tensor still becomes 1-d)."""
    flatten(shape, start_dim, end_dim)  # PyTorch's errors first
    return bool(shape) and normalize_dim(start_dim, len(shape)) == normalize_dim(end_dim,
                                                                                 len(shape))


def select(shape: Shape, dim: int, index: int) -> Shape:
    """Shape without dimension ``dim``, of which element ``index`` is taken."""
    if not shape:
        raise DimensionError("select() cannot be applied to a 0-dim tensor.")
    d = normalize_dim(dim, len(shape))
    if not -shape[d] <= index < shape[d]:
        raise DimensionError(f"select(): index {index} out of range for tensor of size "
                             f"{list(shape)} at dimension {d}")
    return (*shape[:d], *shape[d + 1:])


def slice_bounds(size: int, start: int | None, end: int | None, step: int) -> tuple[int, int]:
    """A slice's first and past-the-end positions in a dimension of ``size``, as PyTorch's
    ``slice`` reads them: None for either end, negative positions counted from the end, and
    both clamped into the dimension (an empty range where they cross)."""
    if step <= 0:
        raise ShapeError("slice step must be positive")
    first = 0 if start is None else start + size if start < 0 else start
    last = size if end is None else end + size if end < 0 else end
    first = min(max(first, 0), size)
    return first, min(max(last, first), size)


def slice_(shape: Shape, dim: int = 0, start: int | None = None, end: int | None = None,
           step: int = 1) -> Shape:
    """Shape with dimension ``dim`` cut to every ``step``-th position from ``start`` to
    ``end``."""
    if not shape:
        raise DimensionError("slice() cannot be applied to a 0-dim tensor.")
    d = normalize_dim(dim, len(shape))
    first, last = slice_bounds(shape[d], start, end, step)
    return (*shape[:d], -(-(last - first) // step), *shape[d + 1:])


def is_legacy_empty(shape: Shape) -> bool:
    """A 1-d tensor of no elements, which ``cat`` skips whatever the others' shapes (PyTorch's
    legacy behaviour)."""
    return shape == (0,)


def cat(*shapes: Shape, dim: int = 0) -> Shape:
    """Shape of the tensors joined along ``dim``: every other size must match."""
    if not shapes:
        raise InvalidArgument("torch.cat(): expected a non-empty list of Tensors")
    for position, shape in enumerate(shapes):
        if not shape:
            raise ShapeError(f"zero-dimensional tensor (at position {position}) cannot be "
                             "concatenated")
    kept = [(i, s) for i, s in enumerate(shapes) if not is_legacy_empty(s)] or [(0, shapes[0])]
    first = kept[0][1]
    d = normalize_dim(dim, len(first))
    for position, shape in kept[1:]:
        if len(shape) != len(first):
            raise ShapeError(f"Tensors must have same number of dimensions: got {len(first)} "
                             f"and {len(shape)}")
        for axis, (expected, size) in enumerate(zip(first, shape, strict=True)):
            if axis != d and size != expected:
                raise ShapeError(f"Sizes of tensors must match except in dimension {d}. "
                                 f"Expected size {expected} but got size {size} for tensor "
                                 f"number {position} in the list.")
    return (*first[:d], sum(s[d] for _, s in kept), *first[d + 1:])


def stack(*shapes: Shape, dim: int = 0) -> Shape:
    """Shape of the tensors, all of one shape, stacked along a new dimension ``dim``."""
    if not shapes:
        raise ShapeError("stack expects a non-empty TensorList")
    first = shapes[0]
    for position, shape in enumerate(shapes[1:], start=1):
        if shape != first:
            raise ShapeError(f"stack expects each tensor to be equal size, but got "
                             f"{list(first)} at entry 0 and {list(shape)} at entry {position}")
    d = normalize_dim(dim, len(first) + 1)
    return (*first[:d], len(shapes), *first[d:])
