"""The backward graph and reverse-mode accumulation over it.

A ``Node`` is what PyTorch calls a ``grad_fn``: one op application, the operands it saved and, per
operand, where its gradient goes — the operand's own ``Node``, the leaf tensor that accumulates it
(PyTorch's ``AccumulateGrad``), or nowhere. Nodes point only at their inputs, never at their
outputs, so a graph holds no reference cycles and is freed by reference counting alone.

Backward is iterative (no recursion, so a 100,000-op chain is fine) and follows PyTorch's
scheduling: count each node's consumers, then process a node once all of them have sent it
their gradient.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import UsageError
from .ops import Op

if TYPE_CHECKING:
    from .tensor import Tensor

Array = Any

SECOND_BACKWARD = (
    "Trying to backward through the graph a second time (or directly access saved tensors after "
    "they have already been freed). Saved intermediate values of the graph are freed when you "
    "call .backward() or autograd.grad(). Specify retain_graph=True if you need to backward "
    "through the graph a second time or if you need to access saved tensors after calling "
    "backward.")


class Node:
    """A backward node: PyTorch's ``grad_fn``.

    ``args`` are the operands as given (Tensors, or Python numbers for constants) and ``values``
    their values; the operands' version counters tell whether an in-place update changed those
    values since. ``targets[i]`` is where the gradient of operand ``i`` goes: a ``Node``, a
    leaf ``Tensor``, or ``None`` when operand ``i`` needs no gradient. ``args`` becomes ``None``
    when a backward frees the node's saved values.
    """

    __slots__ = ("_name", "args", "attrs", "op", "out", "out_version", "retained", "targets",
                 "values", "versions")

    def __init__(self, op: Op, args: tuple[Any, ...], values: tuple[Array, ...],
                 attrs: dict[str, Any], out: Array, targets: tuple[Any, ...],
                 versions: tuple[int, ...] | None) -> None:
        self.op = op
        self.args: tuple[Any, ...] | None = args
        self.values = values  # the operands' values at the call (what backward reads)
        self.attrs = attrs
        self.out = out
        self.targets = targets
        self.versions = versions  # operand versions at the call, when any had been modified
        self.retained: Tensor | None = None  # the output tensor, after its retain_grad()
        # The output's version counter, for ops whose backward reads the output.
        self.out_version: list[int] | None = None
        self._name: str | None = None

    def name(self) -> str:
        """PyTorch's name for this node, e.g. ``"PowBackward0"``."""
        if self._name is None:
            self._name = self.op.grad_fn_name(self)
        return self._name

    @property
    def next_functions(self) -> tuple[tuple[Any, int], ...]:
        """The nodes gradients flow to next, as PyTorch lists them."""
        return tuple((_next_function(t), 0) for t in self.targets)

    def __repr__(self) -> str:
        return f"<{self.name()} object at {id(self):#x}>"

    def inputs(self) -> tuple[Array, ...]:
        """The operands' values, checked as PyTorch checks saved tensors."""
        args = self.args
        if args is None:
            raise UsageError(SECOND_BACKWARD)
        if self.op.saves:
            for i, arg in enumerate(args):
                version = getattr(arg, "_version", None)
                if version is not None:
                    expected = self.versions[i] if self.versions else 0
                    if version[0] != expected:
                        node = arg.grad_fn
                        raise UsageError(_modified_message(
                            arg._data, node.name() if node else None, version[0], expected))
        if self.out_version is not None and self.out_version[0]:
            raise UsageError(_modified_message(self.out, self.name(), self.out_version[0], 0))
        return self.values

    def free(self) -> None:
        """Drop the saved values after a backward without ``retain_graph``, as PyTorch does.

        Ops whose backward needs only shapes keep their operands, so, as in PyTorch, they can be
        backpropagated again.
        """
        if callable(self.op.grad_fn) and self._name is None:
            self.name()  # some names depend on the operands
        self.args = None
        self.values = ()
        self.out = None


class AccumulateGrad:
    """The sink that adds a gradient into a leaf's ``.grad`` (for ``next_functions``)."""

    __slots__ = ("variable",)

    def __init__(self, variable: Tensor) -> None:
        self.variable = variable

    def name(self) -> str:
        return "torch::autograd::AccumulateGrad"

    def __repr__(self) -> str:
        return f"<AccumulateGrad object at {id(self):#x}>"


def _next_function(target: Any) -> Any:
    if target is None or isinstance(target, Node):
        return target
    return AccumulateGrad(target)


_TYPE_NAMES = {"float32": "Float", "float64": "Double", "int64": "Long", "bool": "Bool"}


def legacy_type_name(value: Array) -> str:
    """PyTorch's legacy name for a tensor type, e.g. ``"torch.FloatTensor"``."""
    return f"torch.{_TYPE_NAMES[np.dtype(value.dtype).name]}Tensor"


def _modified_message(value: Array, producer: str | None, version: int, expected: int) -> str:
    # PyTorch names the producing node without its "Backward<n>" suffix here.
    produced_by = "" if producer is None else (
        f", which is output 0 of {re.sub(r'Backward[0-9]*$', '', producer)},")
    return ("one of the variables needed for gradient computation has been modified by an inplace "
            f"operation: [{legacy_type_name(value)} {list(np.shape(value))}]{produced_by} is at "
            f"version {version}; expected version {expected} instead. Hint: enable anomaly "
            "detection to find the operation that failed to compute its gradient, with "
            "torch.autograd.set_detect_anomaly(True, check_nan=False).")


def unbroadcast(grad: Array, shape: tuple[int, ...]) -> Array:
    """Sum a gradient over the dimensions its operand was broadcast along."""
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, size in enumerate(shape) if size == 1 and grad.shape[i] != 1)
    return grad.sum(axis=axes, keepdims=True) if axes else grad


def _consumer_counts(root: Node) -> dict[Node, int]:
    """How many edges reach each node of the graph below ``root``."""
    counts: dict[Node, int] = {root: 0}
    stack = [root]
    while stack:
        for target in stack.pop().targets:
            if type(target) is Node:
                if target in counts:
                    counts[target] += 1
                else:
                    counts[target] = 1
                    stack.append(target)
    return counts


def backpropagate(root: Node, grad: Array, retain_graph: bool,
                  ) -> tuple[list[tuple[Tensor, Array]], list[tuple[Tensor, Array]]]:
    """Reverse-mode pass from ``root`` seeded with ``grad``.

    Returns ``(leaf_grads, retained_grads)``: the gradient for each leaf reached and for each
    non-leaf that asked to retain its gradient, each summed over all paths. Nothing is written to
    any tensor here, so a pass that fails leaves every ``.grad`` as it was.
    """
    counts = _consumer_counts(root)
    pending: dict[Node, Array] = {root: grad}
    leaves: dict[int, tuple[Tensor, Array]] = {}
    retained: list[tuple[Tensor, Array]] = []
    ready = [root]
    while ready:
        node = ready.pop()
        g = pending.pop(node)
        if node.retained is not None:
            retained.append((node.retained, g))
        inputs, out, attrs = node.inputs(), node.out, node.attrs
        for vjp, target, x in zip(node.op.vjps, node.targets, inputs):  # noqa: B905
            if target is None:
                continue
            gi = vjp(g, out, *inputs, **attrs)  # type: ignore[misc]
            if gi.shape != x.shape:
                gi = unbroadcast(gi, x.shape)
            if gi.dtype != x.dtype:
                gi = gi.astype(x.dtype)
            if type(target) is Node:
                if target in pending:
                    pending[target] = pending[target] + gi
                else:
                    pending[target] = gi
                remaining = counts[target] - 1
                counts[target] = remaining
                if not remaining:
                    ready.append(target)
            else:
                key = id(target)
                if key in leaves:
                    leaves[key] = (target, leaves[key][1] + gi)
                else:
                    leaves[key] = (target, gi)
    if not retain_graph:
        for node in counts:
            if node.op.saves:
                node.free()
    return list(leaves.values()), retained


def grad(outputs: Tensor, inputs: Tensor | Sequence[Tensor], grad_outputs: Any = None,
         retain_graph: bool | None = None, allow_unused: bool = False,
         ) -> tuple[Tensor | None, ...]:
    """d(outputs)/d(inputs) returned, not accumulated into ``.grad`` (``torch.autograd.grad``).

    >>> (dx,) = grad(x ** 2, x)
    """
    from .tensor import Tensor

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
            with np.errstate(all="ignore"):  # as Tensor.backward
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
