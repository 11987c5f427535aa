"""``torch.autograd``'s functions: gradients returned rather than accumulated into ``.grad``.

The backward graph they run over is ``backward_graph.py``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .backward_graph import backpropagate
from .errors import UsageError
from .quiet import quiet
from .tensor import Tensor

Array = Any


def grad(outputs: Tensor, inputs: Tensor | Sequence[Tensor], grad_outputs: Any = None,
         retain_graph: bool | None = None, allow_unused: bool = False,
         ) -> tuple[Tensor | None, ...]:
    """d(outputs)/d(inputs) returned, not accumulated into ``.grad`` (``torch.autograd.grad``).

    >>> (dx,) = grad(x ** 2, x)
    """
    wanted = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    for t in wanted:
        if not t.requires_grad:
            raise UsageError("One of the differentiated Tensors does not require grad")
    seed = outputs._seed(grad_outputs)
    found: dict[int, Array] = {}
    if outputs.grad_fn is None:
        found[id(outputs)] = seed
    else:
        # Non-leaf inputs are read off their nodes as retained gradients, for this pass only.
        nodes = {id(t): t.grad_fn for t in wanted if t.grad_fn is not None}
        previous = {key: node.retained for key, node in nodes.items()}
        try:
            for t in wanted:
                if t.grad_fn is not None:
                    t.grad_fn.retained = t
            with quiet():  # as Tensor.backward
                leaf_grads, retained = backpropagate(outputs.grad_fn, seed, bool(retain_graph))
        finally:
            for key, node in nodes.items():
                node.retained = previous[key]
        found.update((id(t), g) for t, g in leaf_grads + retained)
    result: list[Tensor | None] = []
    for t in wanted:
        if id(t) not in found and not allow_unused:
            raise UsageError(f"The differentiated Tensor at index {len(result)} appears to not "
                             "have been used in the graph. Set allow_unused=True if this is the "
                             "desired behavior.")
        value = found.get(id(t))
        result.append(None if value is None else Tensor(
            np.array(value, dtype=t._data.dtype)))
    return tuple(result)
