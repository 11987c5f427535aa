"""The executor for validated graphs: a graph's forward and reverse sweeps planned once, then run
on arrays as often as wanted.

What the eager engine decides op by op as it records a graph depends only on the graph's
structure and on which leaves require grad: which nodes need a gradient, the dtype each op
computes in, the order of the reverse sweep and where each gradient goes. An ``Executor`` decides
it once, from the op table and the validator's types, and computes the values that depend on no
leaf once too. Running it calls the table's forwards, then ``reverse.send`` in
``reverse.schedule``'s order as the eager engine's backward does, so its results are the eager
engine's to the bit (``tests/engine/test_executor.py`` compares the two on random graphs).

0-d constants, and ops on them alone, are weak scalars (see ``graph.py``): Python numbers,
computed as Python computes them.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np

from . import dtypes
from .errors import CrossgradError, InvalidArgument, UsageError
from .graph import (
    Constant,
    Leaf,
    Node,
    NodeType,
    Operation,
    ValidGraph,
    ancestors,
    computed_dtype,
)
from .ops import TABLE, Op, Vjp
from .quiet import quiet
from .reverse import FLOAT_ONLY, NO_GRAD, NO_RETAIN_GRAD, initial_gradient, schedule, send

Array = Any
Number = int | float | bool
Casts = tuple[np.dtype[Any] | None, ...] | None  # per operand, the dtype to compute in if another

_INT64 = (-(2**63), 2**63 - 1)
_NO_ATTRS: dict[str, Any] = {}  # shared by every op without attributes; never written


class Sweep(NamedTuple):
    """A run's results: the output's value, each leaf's gradient (leaves the output does not
    reach get none) and the gradients of the retained non-leaf nodes the output reaches, by id.

    The gradients are new arrays; the value may share memory with a leaf's array (when the
    output is a leaf, or a reshape or transpose of one), as the leaves' arrays are not copied.
    """

    value: np.ndarray
    grads: dict[str, np.ndarray]
    retained: dict[str, np.ndarray]


class Forward(NamedTuple):
    """A forward sweep's results: each node's value by slot, and the operands of each step (op
    that depends on a leaf) as its VJPs read them."""

    values: list[Any]
    operands: list[Sequence[Any]]


# One op of the forward sweep, ``values[slot] = call(*operands(values))``: (call, operands, slot,
# casts), ``call`` being the op's forward with its attributes bound. Plain tuples: an executor is
# planned for each one-off evaluation too, so planning must cost little.
_Step = tuple[Callable[..., Any], Callable[[list[Any]], Sequence[Any]], int, Casts]
# One edge of the reverse sweep, sending the gradient of ``values[slot]`` through ``vjp`` to the
# operand at ``position`` of the forward step ``step``: (step, slot, vjp, position, target,
# attrs), ``target`` the operand's slot, or its name for a leaf.
_Edge = tuple[int, int, Vjp, int, int | str, dict[str, Any]]


class Executor:
    """The sweeps of ``valid`` with the leaves ``requires_grad`` tracked, for the values of
    ``nodes`` (default: the output), retaining the gradients of the nodes ``retain``
    (``Tensor.retain_grad``).

    ``executor(values, seed)`` runs both sweeps: ``values`` are the leaves' arrays, already of
    their declared shapes and dtypes (``graph.check_values`` makes them so); ``seed`` is
    backward's ``gradient``. Errors are the eager engine's: a failing op names its node, an
    output that does not require grad is refused as ``Tensor.backward`` refuses it. An executor
    is not changed by running it: threads may share one.
    """

    def __init__(self, valid: ValidGraph, requires_grad: Collection[str] = (),
                 retain: Sequence[str] = (), nodes: Sequence[str] | None = None) -> None:
        for node_id in retain:
            _check_node(valid, node_id, "retain: ")
        roots = tuple(nodes) if nodes else (valid.output,)
        for node_id in roots:
            _check_node(valid, node_id)
        if requires_grad and any(not dtype.is_floating_point for name, (_, dtype)
                                 in valid.leaves.items() if name in requires_grad):
            raise UsageError(FLOAT_ONLY)
        needed = (valid.needed if roots == (valid.output,) and not retain
                  else ancestors(valid, [*retain, *roots]))
        self.order = (valid.order if len(needed) == len(valid.order) else
                      tuple([node for node in valid.order if node.id in needed]))
        self._slot = {node.id: i for i, node in enumerate(self.order)}
        self._plan_forward(valid, requires_grad)
        self._plan_reverse(valid, retain)

    def _plan_forward(self, valid: ValidGraph, requires_grad: Collection[str]) -> None:
        """The steps; the values that depend on no leaf, computed now; which nodes need a
        gradient, and where each op's operands send theirs."""
        slot, order = self._slot, self.order
        types = [valid.types[node.id] for node in order]
        values: list[Any] = [None] * len(order)  # None: computed on each run
        tracked = [False] * len(order)
        # Where each node's gradient is kept: by slot, by name for a leaf (two leaf nodes of one
        # name are one tensor).
        key: list[int | str] = list(range(len(order)))
        self._leaves: list[tuple[int, str]] = []
        self._steps: list[_Step] = []
        self._step_nodes: list[Operation] = []
        self._step_of: dict[int, int] = {}
        # Of each tracked op: where its operands' gradients go, and its edges in the reverse sweep
        self._targets: dict[int, tuple[int | str | None, ...]] = {}
        self._edges: dict[int, list[_Edge]] = {}
        for i, node in enumerate(order):
            if type(node) is Leaf:
                self._leaves.append((i, node.name))
                tracked[i] = node.name in requires_grad
                key[i] = node.name
                continue
            if type(node) is Constant:
                values[i] = _constant(node, types[i])
                continue
            assert isinstance(node, Operation)
            inputs = [slot[j] for j in node.inputs]
            casts = _casts(node, [types[j] for j in inputs])
            if all([values[j] is not None for j in inputs]):
                try:  # it depends on no leaf: computed once, here
                    with quiet():
                        values[i] = compute(node, [values[j] for j in inputs], types[i], casts)
                    continue
                except CrossgradError as error:
                    # It fails on every run: as a step of its own, after the steps before it.
                    self._add_step(node, (functools.partial(_fail, error), _getter(()), i, None))
                    break
            op = TABLE[node.op]
            attrs = dict(node.attrs) if node.attrs else _NO_ATTRS
            call = functools.partial(op.forward, **attrs) if attrs else op.forward
            self._add_step(node, (call, _getter(inputs), i, casts))
            if requires_grad and any([tracked[j] for j in inputs]):
                edges = [(len(self._steps) - 1, i, vjp, position, key[j], attrs)
                         for position, (j, vjp) in enumerate(zip(inputs, op.vjps_for(len(inputs)),
                                                                 strict=True))
                         if tracked[j] and vjp is not None]
                if edges:
                    tracked[i] = True
                    self._edges[i] = edges
                    self._targets[i] = tuple([edge[4] for edge in edges])
        self._values, self._tracked, self._key = values, tracked, key

    def _add_step(self, node: Operation, step: _Step) -> None:
        self._step_of[step[2]] = len(self._steps)
        self._steps.append(step)
        self._step_nodes.append(node)

    def _plan_reverse(self, valid: ValidGraph, retain: Sequence[str]) -> None:
        """The edges of the reverse sweep in the order they run, and the gradients kept."""
        out = self._output = self._slot.get(valid.output)
        self._differentiates = out is not None and self._tracked[out]
        self._untracked_retain = next(
            (i for i in retain
             if type(self.order[self._slot[i]]) is not Leaf and not self._tracked[self._slot[i]]),
            None) if retain else None
        self._reverse: list[_Edge] = []
        self._root = None if out is None else self._key[out]
        if out in self._targets:
            order = schedule(out, self._targets.__getitem__, int, _recorded_at)
            self._reverse = [edge for i in order for edge in self._edges[i]]
        self._leaf_dtypes = [(name, dtype.numpy) for name, (_, dtype) in valid.leaves.items()]
        self._retained = [(i, self._slot[i], valid.types[i].dtype.numpy)
                          for i in dict.fromkeys(retain)
                          if type(self.order[self._slot[i]]) is not Leaf]

    @property
    def static_nbytes(self) -> int:
        """What keeping the executor costs in values computed when planned (a small graph of
        constants can compute large values)."""
        return sum(v.nbytes for v in self._values if isinstance(v, np.ndarray))

    @property
    def differentiates(self) -> bool:
        """Whether the output depends on a tracked leaf (else ``backward`` refuses, as
        ``Tensor.backward`` does)."""
        return self._differentiates

    def __call__(self, values: Mapping[str, np.ndarray], seed: Array | None = None) -> Sweep:
        """Both sweeps (see ``forward`` and ``backward``)."""
        with quiet():
            return self._backward(self._forward(values), seed)

    def forward(self, values: Mapping[str, np.ndarray]) -> Forward:
        """The forward sweep at the leaves' arrays ``values``."""
        with quiet():
            return Forward(*self._forward(values))

    def backward(self, forward: Forward, seed: Array | None = None) -> Sweep:
        """The reverse sweep after ``forward`` from the output, seeded with ``seed`` (backward's
        ``gradient``; None for an output of one element)."""
        with quiet():
            return self._backward(forward, seed)

    def value(self, forward: Forward, node_id: str) -> Any:
        """A node's value after ``forward``: an array, or a Python number for a weak scalar."""
        return forward.values[self._slot[node_id]]

    def trace(self, forward: Forward) -> Iterator[tuple[Node, Any, Sequence[Any] | None]]:
        """Each node run, in order, with its value after ``forward`` and, for an op run on each
        run, its operands as its forward took them (promoted); None for the others."""
        step_of, operands = self._step_of, forward.operands
        for i, node in enumerate(self.order):
            step = step_of.get(i)
            yield node, forward.values[i], None if step is None else operands[step]

    def _forward(self, values: Mapping[str, np.ndarray],
                 ) -> tuple[list[Any], list[Sequence[Any]]]:
        env = self._values.copy()
        for at, name in self._leaves:
            env[at] = values[name]
        operands: list[Sequence[Any]] = []
        try:
            for call, inputs, slot, casts in self._steps:
                xs = inputs(env)
                if casts is not None:
                    xs = _cast(xs, casts)
                env[slot] = call(*xs)
                operands.append(xs)
        except Exception as error:
            reported = blame(self._step_nodes[len(operands)], error)  # the step that failed
            if reported is error:
                raise
            raise reported from error
        return env, operands

    def _backward(self, forward: tuple[list[Any], list[Sequence[Any]]], seed: Array | None,
                  ) -> Sweep:
        if not self._differentiates:
            raise UsageError(NO_GRAD)
        if self._untracked_retain is not None:
            raise UsageError(f"node {self._untracked_retain!r}: {NO_RETAIN_GRAD}")
        env, operands = forward
        assert self._output is not None and self._root is not None
        out = env[self._output]
        grads: dict[int | str, Array] = {self._root: initial_gradient(out, seed)}
        for step, slot, vjp, position, target, attrs in self._reverse:
            inputs = operands[step]
            send(grads, target, vjp, grads[slot], env[slot], inputs, inputs[position], attrs)
        # New arrays, in the leaves' (and retained nodes') dtypes, as AccumulateGrad makes them.
        return Sweep(
            np.asarray(out),
            {name: np.array(grads[name], dtype=dtype)
             for name, dtype in self._leaf_dtypes if name in grads},
            {node_id: np.array(grads[slot], dtype=dtype)
             for node_id, slot, dtype in self._retained if slot in grads})


def compute(node: Operation, args: Sequence[Any], result: NodeType, casts: Casts) -> Any:
    """One op on its operands' values, its errors naming the node (see ``blame``)."""
    op = TABLE[node.op]
    try:
        if result.weak:
            return _weak(op, args, node.attrs, result)
        return op.forward(*(args if casts is None else _cast(args, casts)), **node.attrs)
    except Exception as error:
        reported = blame(node, error)
        if reported is error:
            raise
        raise reported from error


def blame(node: Operation, error: Exception) -> Exception:
    """``error``, raised while running ``node``, as the error to report: crossgrad's own errors
    get the node's id; NumPy's and Python's refusals of values (int ** negative int, 1 / 0, ...)
    become ``InvalidArgument`` naming it; anything else is a bug and stays as it is."""
    if isinstance(error, CrossgradError):
        if error.node is None:
            error.node = node.id
        return error
    if isinstance(error, (ArithmeticError, ValueError, TypeError)):
        return InvalidArgument(f"node {node.id!r} ({node.op}): {error}", node=node.id)
    return error


def _recorded_at(slot: int) -> int:
    """An op's sequence number (``reverse.schedule``): its slot, the graph's order being the order
    its ops were recorded in."""
    return slot


def _check_node(valid: ValidGraph, node_id: str, where: str = "") -> None:
    if node_id not in valid.types:
        raise InvalidArgument(f"{where}node {node_id!r} is not in the graph", node=node_id)


def _constant(node: Constant, t: NodeType) -> Any:
    """A constant's value: a Python number for a weak scalar, else a copy in its dtype."""
    if t.weak:
        return node.value.item()
    return np.array(node.value, dtype=t.dtype.numpy)


def _casts(node: Operation, inputs: Sequence[NodeType]) -> Casts:
    """Per operand, the dtype the op computes in (None for a weak scalar: NumPy takes Python
    numbers as weak, as PyTorch does); None where every operand has it already.

    The validator promoted the operands to that dtype (the result's, but for a comparison). As
    the eager engine does, every tensor operand is cast once one is: a NumPy scalar becomes a 0-d
    array, which the VJPs and grad_fn names tell from a Python number.
    """
    if all(t.weak for t in inputs):
        return None
    target = computed_dtype(TABLE[node.op], inputs, node.attrs)
    for t in inputs:
        if not t.weak and t.dtype is not target:
            return tuple([None if u.weak else target.numpy for u in inputs])
    return None


def _cast(xs: Sequence[Any], casts: tuple[np.dtype[Any] | None, ...]) -> tuple[Any, ...]:
    return tuple(x if dtype is None else np.asarray(x, dtype=dtype)
                 for x, dtype in zip(xs, casts, strict=True))


def _weak(op: Op, args: Sequence[Any], attrs: Mapping[str, Any], result: NodeType) -> Number:
    """An op on Python numbers, computed as Python computes it, giving a Python number."""
    value = op.forward(*args, **attrs)
    if result.dtype.is_floating_point:
        return float(value)
    if result.dtype is dtypes.bool_:
        return bool(value)
    number = int(value)
    if not _INT64[0] <= number <= _INT64[1]:
        # Where PyTorch raises "Overflow when unpacking long"; it also keeps Python's integers
        # from growing without bound along a chain of products.
        raise InvalidArgument(f"integer constant {number} is out of int64 range")
    return number


def _getter(slots: Sequence[int]) -> Callable[[list[Any]], Sequence[Any]]:
    """The values at ``slots`` as a sequence (a list slice for fewer than two)."""
    if len(slots) > 1:
        return itemgetter(*slots)
    return itemgetter(slice(slots[0], slots[0] + 1) if slots else slice(0, 0))


def _fail(error: CrossgradError) -> None:
    raise copy.copy(error)  # a copy per run: threads share the executor
