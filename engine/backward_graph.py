"""The eager engine's backward graph, and backward over it.

A ``Node`` is what PyTorch calls a ``grad_fn``: one op application, the operands it saved and, per
operand, where its gradient goes — the operand's own ``Node``, the leaf tensor that accumulates it
(PyTorch's ``AccumulateGrad``), or nowhere. Nodes point only at their inputs, never at their
outputs, so a graph holds no reference cycles and is freed by reference counting alone.

Backward runs the steps ``reverse.py`` defines, in its order, which the executor runs too.
"""

from __future__ import annotations

import re
import threading
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import UsageError
from .ops import Op
from .reverse import next_sequence, schedule, send

if TYPE_CHECKING:
    from .tensor import Tensor

Array = Any

SECOND_BACKWARD = (
    "Trying to backward through the graph a second time (or directly access saved tensors after "
    "they have already been freed). Saved intermediate values of the graph are freed when you "
    "call .backward() or autograd.grad(). Specify retain_graph=True if you need to backward "
    "through the graph a second time or if you need to access saved tensors after calling "
    "backward.")


# The sequence number drawn by the last in-place update of any tensor: a node numbered above it
# was recorded after every update so far, so its operands and result are as it saved them and
# backward need not read their version counters.
_last_update = [-1]
_update_lock = threading.Lock()  # keeps _last_update rising when threads update at once


def note_update() -> None:
    """Record that an in-place update changed a tensor's version counter just now."""
    with _update_lock:
        _last_update[0] = next_sequence()


class Node:
    """A backward node: PyTorch's ``grad_fn``.

    ``args`` are the operands as given (Tensors, or Python numbers for constants) and ``values``
    their values; the operands' version counters tell whether an in-place update changed those
    values since. ``targets[i]`` is where the gradient of operand ``i`` goes: a ``Node``, a
    leaf ``Tensor``, or ``None`` when operand ``i`` needs no gradient. ``args`` becomes ``None``
    when a backward frees the node's saved values.
    """

    __slots__ = ("_name", "args", "attrs", "op", "out", "out_version", "retained", "seq",
                 "targets", "values", "versions")

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
        self.seq = next_sequence()  # PyTorch's sequence number: backward's order

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
        if self.op.saves_inputs:
            for i, arg in enumerate(args):
                version = getattr(arg, "_version", None)
                if version is not None and self.op.saves_operand(i):
                    expected = self.versions[i] if self.versions else 0
                    if version[0] != expected:
                        node = arg.grad_fn
                        raise UsageError(modified_message(
                            np.dtype(arg._data.dtype), np.shape(arg._data),
                            node.name() if node else None, version[0], expected,
                            arg._base is not None))
        if self.out_version is not None and self.out_version[0]:
            raise UsageError(modified_message(np.result_type(self.out), np.shape(self.out),
                                              self.name(), self.out_version[0], 0))
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


def _overload(suffix: re.Match[str]) -> str:
    return "" if suffix.group(1) == "0" else suffix.group(1)


def modified_message(dtype: np.dtype[Any], shape: tuple[int, ...], producer: str | None,
                     version: int, expected: int, view: bool = False) -> str:
    """PyTorch's error for a backward through a value of this dtype and shape that an in-place
    operation changed since it was saved (``producer``: the node that made it; ``view``: the value
    is a view, whose node PyTorch remakes as an AsStrided one when its storage changes)."""
    if view and producer is not None:
        producer = "AsStridedBackward0"
    # PyTorch names the producing node without "Backward" and without the overload's number
    # when it is 0: ProdBackward0 is "Prod", ProdBackward1 "Prod1".
    produced_by = "" if producer is None else (
        f", which is output 0 of {re.sub(r'Backward(0|[0-9]*)$', _overload, producer)},")
    return ("one of the variables needed for gradient computation has been modified by an inplace "
            f"operation: [{legacy_type_name(np.empty(0, dtype))} {list(shape)}]{produced_by} is at "
            f"version {version}; expected version {expected} instead. Hint: enable anomaly "
            "detection to find the operation that failed to compute its gradient, with "
            "torch.autograd.set_detect_anomaly(True, check_nan=False).")


_TARGETS = attrgetter("targets")
_SEQUENCE = attrgetter("seq")


def backpropagate(root: Node, grad: Array, retain_graph: bool,
                  ) -> tuple[list[tuple[Tensor, Array]], list[tuple[Tensor, Array]]]:
    """Reverse-mode pass from ``root`` seeded with ``grad``.

    Returns ``(leaf_grads, retained_grads)``: the gradient for each leaf reached and for each
    non-leaf that asked to retain its gradient, each summed over all paths. Nothing is written to
    any tensor here, so a pass that fails leaves every ``.grad`` as it was.
    """
    order = schedule(root, _TARGETS, Node, _SEQUENCE)
    last_update = _last_update[0]
    grads: dict[Any, Array] = {root: grad}  # by Node while pending, by leaf Tensor for good
    retained: list[tuple[Tensor, Array]] = []
    for node in order:
        g = grads.pop(node)
        if node.retained is not None:
            retained.append((node.retained, g))
        # A node recorded after the last in-place update reads its values unchecked: none of
        # them can have changed since.
        inputs = (node.values if node.seq > last_update and node.args is not None
                  else node.inputs())
        op, out, attrs = node.op, node.out, node.attrs
        vjps = op.vjps_for(len(inputs)) if op.variadic else op.vjps
        for vjp, target, x in zip(vjps, node.targets, inputs):  # noqa: B905
            if target is not None and vjp is not None:  # a target only where there is a VJP
                send(grads, target, vjp, g, out, inputs, x, attrs)
    if not retain_graph:
        for node in order:
            if node.op.saves:
                node.free()
    return list(grads.items()), retained
