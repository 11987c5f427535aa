"""Evaluating a validated graph at given leaf values, through the executor.

``evaluate`` gives the output's value and gradients, checking what it is given (what
``differentiate`` and its finite differences call); ``run`` gives the nodes' values as the eager
engine's tensors, with ``requires_grad`` and ``grad_fn`` as PyTorch would have them.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from .errors import InvalidArgument, UsageError
from .executor import Executor
from .graph import Leaf, Operation, ValidGraph, check_values, checked_array
from .ops import TABLE
from .tensor import Tensor, record, tensor


def evaluate(valid: ValidGraph, values: Mapping[str, npt.ArrayLike],
             wrt: Sequence[str] | None = None, seed: npt.ArrayLike | None = None,
             ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The output's value and the gradients of the output with respect to the leaves ``wrt``.

    ``values`` binds each leaf name to its value (shape as declared, castable to its dtype,
    finite). ``wrt`` defaults to every leaf of floating dtype. A non-scalar output needs ``seed``,
    the vector of the vector-Jacobian product. As in PyTorch, a leaf the output does not depend on
    (or only through ``detach``) gets no gradient: it is absent from the result.
    """
    arrays, wanted, seed = inputs(valid, values, wrt, seed)
    value, grads, _ = outputs(Executor(valid, wanted), valid, arrays, seed)
    return value, grads


def inputs(valid: ValidGraph, values: Mapping[str, npt.ArrayLike],
           wrt: Sequence[str] | None = None, seed: npt.ArrayLike | None = None,
           ) -> tuple[dict[str, np.ndarray], tuple[str, ...], np.ndarray | None]:
    """``evaluate``'s arguments checked: the leaves' arrays, the leaves to differentiate (in
    order) and the seed."""
    wanted = _wrt(valid, wrt)
    arrays = check_values(valid, values)
    output = valid.output
    out_type = valid.types[output]
    if seed is not None:
        seed = checked_array(seed, out_type.shape, f"the seed for output {output!r}", output)
    elif math.prod(out_type.shape) != 1 and wanted:
        # PyTorch's error and message, as Backward gives them: one condition, one status.
        raise UsageError(f"grad can be implicitly created only for scalar outputs (the output "
                         f"{output!r} has shape {list(out_type.shape)}: give a seed)",
                         node=output)
    return arrays, wanted, None if seed is None else np.asarray(seed)


def outputs(executor: Executor, valid: ValidGraph, arrays: Mapping[str, np.ndarray],
            seed: Any = None) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The output's value, the leaves' gradients and the retained nodes' gradients of one run of
    ``executor`` (only the forward sweep when the output depends on no leaf it tracks)."""
    if executor.differentiates:
        sweep = executor(arrays, seed)
        return _unshared(sweep.value, arrays), sweep.grads, sweep.retained
    value = executor.value(executor.forward(arrays), valid.output)
    dtype = valid.types[valid.output].dtype.numpy
    return _unshared(np.asarray(value, dtype=dtype), arrays), {}, {}


def _wrt(valid: ValidGraph, wrt: Sequence[str] | None) -> tuple[str, ...]:
    """The leaves to differentiate, in order: ``wrt``, checked, or every floating leaf."""
    if wrt is None:
        return tuple(n for n, (_, d) in valid.leaves.items() if d.is_floating_point)
    if isinstance(wrt, str):
        raise InvalidArgument("wrt must be a sequence of leaf names, not a string")
    for name in wrt:
        if name not in valid.leaves:
            raise InvalidArgument(f"cannot differentiate with respect to {name!r}: the graph "
                                  f"has no such leaf (leaves: {', '.join(sorted(valid.leaves))})")
        if not valid.leaves[name][1].is_floating_point:
            raise InvalidArgument(f"cannot differentiate with respect to {name!r}: only leaves "
                                  "of floating dtype can require gradients")
    return tuple(wrt)


def _unshared(value: np.ndarray, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """``value``, copied if it may share memory with a leaf's array (the output is a leaf, or a
    view of one): the caller's arrays stay the caller's."""
    if any(np.may_share_memory(value, array) for array in arrays.values()):
        return value.copy()
    return value


def run(valid: ValidGraph, values: Mapping[str, npt.ArrayLike],
        requires_grad: Collection[str] = (), nodes: Sequence[str] | None = None, *,
        checked: bool = False, executor: Executor | None = None,
        ) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The forward pass as the eager engine's tensors: leaves (``requires_grad`` for those named)
    by name, and every node the ``nodes`` (default: the output) depend on, by id, weak scalars as
    Python numbers — for a caller that goes on with PyTorch's semantics (``requires_grad``,
    ``grad_fn``, ``backward``). The executor computes the values; in grad mode, the ops that
    depend on a leaf requiring grad are recorded as ``apply`` records them.

    ``checked``: the values are arrays already known to fit the declared leaves (a server's
    stored leaves), so ``check_values`` is skipped. ``executor``: ``Executor(valid, nodes=nodes)``
    planned before (``Prepared.run`` keeps it), else planned here.
    """
    if executor is None:
        executor = Executor(valid, nodes=nodes)  # the tensors track what requires grad
    arrays = cast(Mapping[str, np.ndarray], values) if checked else check_values(valid, values)
    leaves = {name: tensor(arrays[name], requires_grad=name in requires_grad)
              for name in valid.leaves}
    env: dict[str, Any] = {}
    for node, value, operands in executor.trace(executor.forward(arrays)):
        if type(node) is Leaf:
            env[node.id] = leaves[node.name]
        elif type(value) in (int, float, bool):
            env[node.id] = value
        elif operands is None:  # a constant, or an op that depends on no leaf
            env[node.id] = Tensor(value)
        else:
            assert isinstance(node, Operation)
            args = tuple([env[i] for i in node.inputs])
            env[node.id] = record(TABLE[node.op], args, tuple(operands), dict(node.attrs), value)
    return leaves, env
