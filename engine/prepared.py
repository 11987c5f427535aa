"""A validated graph prepared to be run call after call: the engine's one path for a session's
backward (the server's Backward) and for ``differentiate()``, and the forward of Evaluate.

What depends only on the graph and on what is asked of it is built on first use and kept: the
executors (by the leaves that require grad and the nodes retained, or by the nodes evaluated) and
the gradient checks (by the leaves differentiated, and whether a Hessian is asked). A call pays
for running them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from .cache import Cache
from .check import CheckMode
from .evaluation import outputs, run
from .executor import Executor
from .gradient_check import GradientCheck, Result
from .graph import ValidGraph
from .solver import Symbolic
from .tensor import Tensor

_PER_GRAPH = 16  # executors and checks kept per prepared graph


class Prepared:
    """``valid`` with its executors and gradient checks. ``kept_executor_bytes``: an executor
    holding more than this in values computed from constants alone is built for its call and not
    kept (a small graph can broadcast its constants to megabytes)."""

    def __init__(self, valid: ValidGraph, symbolic: Symbolic,
                 kept_executor_bytes: int | None = None) -> None:
        self.valid = valid
        self.symbolic = symbolic
        self._kept_executor_bytes = kept_executor_bytes
        self._executors = Cache(_PER_GRAPH)
        self._checks = Cache(_PER_GRAPH)

    def backward(self, values: Mapping[str, np.ndarray], requires_grad: Sequence[str], *,
                 seed: npt.ArrayLike | None = None, retain: Sequence[str] = (),
                 mode: CheckMode = CheckMode.STRICT, deadline: float | None = None) -> Result:
        """A session's ``backward()`` from the output, at the leaves' checked arrays ``values``:
        the gradients of the leaves in ``requires_grad`` and of the ``retain``ed nodes, checked
        against the closed form. As in PyTorch, an output that requires no grad is refused, and
        a non-scalar one needs ``seed``."""
        sweep = self.executor(tuple(requires_grad), tuple(retain))(values, seed)
        result = self.check(tuple(requires_grad))(values, sweep.value, sweep.grads, mode=mode,
                                                  seed=seed, deadline=deadline)
        return replace(result, retained=sweep.retained) if sweep.retained else result

    def differentiate(self, arrays: Mapping[str, np.ndarray], wrt: Sequence[str], *,
                      seed: np.ndarray | None = None, mode: CheckMode = CheckMode.STRICT,
                      hessian: bool = False, deadline: float | None = None) -> Result:
        """``differentiate()``'s value, gradients and check at checked ``arrays`` (see
        ``evaluation.inputs``): an output that depends on none of ``wrt`` just has no
        gradients."""
        value, gradients, _ = outputs(self.executor(tuple(wrt), ()), self.valid, arrays, seed)
        return self.check(tuple(wrt), hessian)(arrays, value, gradients, mode=mode, seed=seed,
                                               deadline=deadline)

    def run(self, values: Mapping[str, np.ndarray], requires_grad: Collection[str],
            nodes: Sequence[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """``evaluation.run`` at the leaves' checked arrays: the nodes' values as the eager
        engine's tensors (a session's Evaluate)."""
        executor = self._executor(("nodes", tuple(nodes)),
                                  lambda: Executor(self.valid, nodes=nodes))
        return run(self.valid, values, requires_grad, nodes, checked=True, executor=executor)

    def values(self, values: Mapping[str, np.ndarray], nodes: Sequence[str]) -> list[np.ndarray]:
        """The arrays of ``nodes`` at the leaves' checked arrays, without autograd (an in-place
        update's new value, or values kept as they are)."""
        executor = self._executor(("nodes", tuple(nodes)),
                                  lambda: Executor(self.valid, nodes=nodes))
        forward = executor.forward(values)
        types = self.valid.types
        return [np.asarray(executor.value(forward, node), dtype=types[node].dtype.numpy)
                for node in nodes]

    def executor(self, requires_grad: tuple[str, ...], retain: tuple[str, ...]) -> Executor:
        return self._executor((requires_grad, retain),
                              lambda: Executor(self.valid, requires_grad, retain))

    def _executor(self, key: Hashable, plan: Callable[[], Executor]) -> Executor:
        executor: Executor | None = self._executors.get(key)
        if executor is None:
            executor = plan()
            limit = self._kept_executor_bytes
            if limit is None or executor.static_nbytes <= limit:
                self._executors.put(key, executor)
        return executor

    def check(self, wrt: tuple[str, ...], hessian: bool = False) -> GradientCheck:
        return self._checks.get_or_put(
            (wrt, hessian), lambda: GradientCheck(self.valid, wrt, self.symbolic, hessian))
