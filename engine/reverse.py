"""Reverse-mode accumulation: the one copy both engines run.

The eager engine (``backward_graph.backpropagate``, over the ``Node`` objects that ops record) and
the executor (``executor.Executor``, over a validated graph planned once) differ in how they find
an op's saved values and where they keep gradients, not in what backward does:

- ``schedule``: the order ops send their gradients, PyTorch's (by sequence number);
- ``send``: the step along one edge, from an op to one operand: the VJP, its result summed back
  over broadcast dimensions and cast to the operand's dtype, added into what the operand has
  received so far;
- ``initial_gradient``: the seed, checked as ``Tensor.backward`` checks its ``gradient``.

Gradients are summed in the order they arrive, so sharing the order and the step is what keeps
the two engines' float results equal to the bit.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from typing import Any, TypeVar

import numpy as np

from .dtypes import Size
from .errors import ShapeError, UsageError
from .ops import Vjp

Array = Any
K = TypeVar("K")

NO_GRAD = "element 0 of tensors does not require grad and does not have a grad_fn"
NO_RETAIN_GRAD = "can't retain_grad on Tensor that has requires_grad=False"
FLOAT_ONLY = "Only Tensors of floating point and complex dtype can require gradients"

# The sequence number of a recorded op (``schedule``), as PyTorch numbers its nodes.
next_sequence = itertools.count().__next__


def schedule(root: K, targets: Callable[[K], Iterable[object]], kind: type[K],
             sequence: Callable[[K], int]) -> list[K]:
    """The ops below ``root`` in the order backward runs their VJPs: PyTorch's, the op recorded
    last first.

    ``targets(op)``: where its gradients go, per operand; those of type ``kind`` are ops, anything
    else (a leaf, None) ends a path. ``sequence(op)`` numbers the ops in the order they were
    recorded. Of the ops ready, PyTorch's engine runs the one of the highest number; as every
    consumer of an op was recorded after it, the highest-numbered op not yet run is always ready,
    so that order is the ops by number, highest first. It is the order in which an operand's
    gradients are summed, so it decides the last bit of a gradient. Iterative: a 100,000-op
    chain is fine.
    """
    found = {root}
    stack = [root]
    while stack:
        for target in targets(stack.pop()):
            if type(target) is kind and target not in found:
                found.add(target)
                stack.append(target)
    return sorted(found, key=sequence, reverse=True)


def send(grads: MutableMapping[Any, Array], target: Any, vjp: Vjp, g: Array, out: Array,
         inputs: Sequence[Array], x: Array, attrs: dict[str, Any]) -> None:
    """One edge of backward: ``g``, the gradient of an op's result ``out``, sent through ``vjp``
    to its operand ``x`` (one of its ``inputs``): summed back over the dimensions ``x`` was
    broadcast along, cast to its dtype, and added into ``grads[target]`` (set by the first
    contribution, summed with the later ones)."""
    gi = vjp(g, out, *inputs, **attrs) if attrs else vjp(g, out, *inputs)
    if gi.shape != x.shape:
        gi = unbroadcast(gi, x.shape)
    if gi.dtype is not x.dtype and gi.dtype != x.dtype:  # NumPy's dtypes are mostly shared
        gi = gi.astype(x.dtype)
    if target in grads:
        grads[target] = grads[target] + gi
    else:
        grads[target] = gi


def unbroadcast(grad: Array, shape: tuple[int, ...]) -> Array:
    """Sum a gradient over the dimensions its operand was broadcast along."""
    extra = grad.ndim - len(shape)
    if extra:  # np.add.reduce is what ndarray.sum calls, without its Python wrapper
        grad = np.add.reduce(grad, axis=tuple(range(extra)))
    if 1 not in shape:
        return grad
    axes = tuple([i for i, size in enumerate(shape) if size == 1 and grad.shape[i] != 1])
    return np.add.reduce(grad, axis=axes, keepdims=True) if axes else grad


_ONES = {np.dtype(t): t(1) for t in (np.float32, np.float64)}


def initial_gradient(out: Array, gradient: Array | None) -> Array:
    """The gradient a backward from ``out`` starts from (``gradient``, or 1 for one element),
    checked as PyTorch checks it."""
    if gradient is None:
        if out.size != 1:
            raise UsageError("grad can be implicitly created only for scalar outputs")
        if out.ndim:
            return np.ones(out.shape, out.dtype)
        one = _ONES.get(out.dtype)  # a NumPy scalar cannot change: one per dtype serves all
        return out.dtype.type(1) if one is None else one
    seed = np.asarray(gradient)
    if seed.shape != out.shape:
        raise ShapeError(f"Mismatch in shape: grad_output[0] has a shape of "
                         f"{Size(seed.shape)} and output[0] has a shape of {Size(out.shape)}.")
    return np.asarray(seed, dtype=out.dtype)
