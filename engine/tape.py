"""A graph's forward and reverse sweeps planned once and replayed on arrays: the engine for a
graph that runs again and again (a training loop sending the same graph to the server).

The eager engine (``tensor.py``, ``backward_graph.py``) builds a Tensor per node and a backward node
per op on every run, as PyTorch does. Everything that work decides depends only on the graph's
structure and on which leaves require grad: which nodes need a gradient, the dtype each op
computes in, the order of the reverse sweep and where each gradient goes. A ``Tape`` decides it
once, from the same op table (its forwards and VJPs) and the validator's types, and computes the
values of the nodes that depend on no leaf once too. Replaying it runs the table's forwards and
VJPs on arrays in the order ``reverse.schedule`` gives both, so its results are the eager
engine's bit for bit (``tests/engine/test_tape.py`` compares the two on random graphs).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np

from .errors import CrossgradError, InvalidArgument, UsageError
from .graph import Leaf, Operation, ValidGraph, ancestors, blame, forward
from .ops import TABLE, Op
from .reverse import (
    FLOAT_ONLY,
    NO_GRAD,
    NO_RETAIN_GRAD,
    initial_gradient,
    schedule,
    unbroadcast,
)
from .tensor import value_of

Array = Any


@dataclass(frozen=True)
class Sweep:
    """A replay's results: the output's value, each leaf's gradient (leaves the output does not
    reach get none) and the gradients of the retained non-leaf nodes the output reaches, by id.

    The gradients are new arrays; the value may share memory with a leaf's array (when the
    output is a leaf, or a reshape or transpose of one), as the leaves' arrays are not copied.
    """

    value: np.ndarray
    grads: dict[str, np.ndarray]
    retained: dict[str, np.ndarray]


@dataclass(frozen=True)
class _Op:
    """One op of the forward sweep: ``slot = op.forward(*env[inputs], **attrs)``."""

    node: Operation
    op: Op
    slot: int
    inputs: tuple[int, ...]
    attrs: Mapping[str, Any]
    # Per input: the dtype PyTorch computes in where NumPy would pick another, else None.
    casts: tuple[np.dtype[Any] | None, ...] | None


class _Forward(NamedTuple):
    """One op as the forward loop runs it."""

    call: Callable[..., Any]  # the op's forward with its attributes bound
    inputs: Callable[[list[Any]], Sequence[Any]]  # its operands, from the values
    slot: int  # where its result goes
    casts: tuple[np.dtype[Any] | None, ...] | None


class _Backward(NamedTuple):
    """One edge of the reverse sweep as the backward loop runs it."""

    vjp: Callable[..., Any]  # with the op's attributes bound
    step: int  # the op's forward step (its saved operands)
    slot: int  # the op's result
    position: int  # the operand this edge's gradient is for
    source: int  # the gradient read: the op's result's
    target: int  # the gradient written: the operand's
    first: bool  # set (the target's first contribution) rather than added


class Tape:
    """The sweeps of ``valid`` with the leaves ``requires_grad`` tracked, retaining the
    gradients of the nodes ``retain`` (``Tensor.retain_grad``).

    ``tape(values, seed)`` runs it: ``values`` are the leaves' arrays, already of their declared
    shapes and dtypes (``graph.check_values`` makes them so); ``seed`` is backward's
    ``gradient``. Errors are the eager engine's: a failing op names its node, an output that does
    not require grad is refused as ``Tensor.backward`` refuses it.
    """

    def __init__(self, valid: ValidGraph, requires_grad: Collection[str],
                 retain: Sequence[str] = ()) -> None:
        for node_id in retain:
            if node_id not in valid.types:
                raise InvalidArgument(f"retain: node {node_id!r} is not in the graph",
                                      node=node_id)
        if any(not dtype.is_floating_point for name, (_, dtype) in valid.leaves.items()
               if name in requires_grad):
            raise UsageError(FLOAT_ONLY)
        needed = ancestors(valid, [*retain, valid.output])
        order = [node for node in valid.order if node.id in needed]
        slot = {node.id: i for i, node in enumerate(order)}
        self._env, failure = _static_values(valid, order)  # None where a value depends on a leaf
        # What keeping the tape costs: a small graph of constants can compute large values.
        self.static_nbytes = sum(v.nbytes for v in self._env if isinstance(v, np.ndarray))
        self._leaves = [(slot[n.id], n.name) for n in order if type(n) is Leaf]
        self._leaf_dtypes = {name: dtype.numpy for name, (_, dtype) in valid.leaves.items()}
        self._output = slot[valid.output]

        # The forward sweep, and which values need a gradient, decided as the eager engine
        # decides it op by op: an op's result does when an input with a VJP does.
        tracked = [type(n) is Leaf and n.name in requires_grad for n in order]
        self._steps: list[_Op] = []
        step_of: dict[int, int] = {}
        edges: dict[int, list[tuple[int, int]]] = {}  # tracked op -> (position, input) to reach
        for node in order:
            at = slot[node.id]
            if failure is not None and node.id == failure.node:
                # It fails on every call: as its own step, after the ops before it, as eagerly.
                assert type(node) is Operation
                self._steps.append(_Op(node, TABLE[node.op], at, (), {}, None))
                break
            if type(node) is not Operation or self._env[at] is not None:
                continue
            op = TABLE[node.op]
            inputs = tuple(slot[i] for i in node.inputs)
            step_of[at] = len(self._steps)
            self._steps.append(_Op(node, op, at, inputs, dict(node.attrs),
                                   self._casts(valid, op, node, inputs)))
            reached = [(p, j) for p, (j, vjp) in enumerate(zip(inputs, op.vjps, strict=True))
                       if tracked[j] and vjp is not None]
            if reached:
                tracked[at] = True
                edges[at] = reached
        self._tracked_output = tracked[self._output]
        self._untracked_retain = next(
            (i for i in retain if type(order[slot[i]]) is not Leaf and not tracked[slot[i]]),
            None)

        # The reverse sweep: one gradient per tracked op and per leaf name (two leaf nodes of
        # one name are one tensor), each edge set into or added to its target's.
        gradient: dict[int | str, int] = {}

        def index(i: int) -> int:
            node = order[i]
            return gradient.setdefault(node.name if type(node) is Leaf else i, len(gradient))

        self._root = index(self._output) if self._tracked_output else -1
        self._backward_code: list[_Backward] = []
        for i, position, j in _schedule(self._output, edges) if self._output in edges else ():
            step = self._steps[step_of[i]]
            vjp = step.op.vjps[position]
            assert vjp is not None
            count = len(gradient)
            target = index(j)
            self._backward_code.append(_Backward(_bound(vjp, step.attrs), step_of[i], i,
                                                 position, index(i), target,
                                                 first=len(gradient) > count))
        self._forward_code = [_Forward(_bound(step.op.forward, step.attrs),
                                       _getter(step.inputs), step.slot, step.casts)
                              for step in self._steps]
        if failure is not None:
            self._forward_code[-1] = _Forward(functools.partial(_fail, failure),
                                              _getter(()), self._steps[-1].slot, None)
        self._gradients = len(gradient)
        self._leaf_grads = [(name, gradient[name]) for name in valid.leaves if name in gradient]
        self._retained = [(i, gradient[slot[i]], valid.types[i].dtype.numpy)
                          for i in dict.fromkeys(retain)
                          if type(order[slot[i]]) is not Leaf and slot[i] in gradient]

    def _casts(self, valid: ValidGraph, op: Op, node: Operation, inputs: tuple[int, ...],
               ) -> tuple[np.dtype[Any] | None, ...] | None:
        """Per input, the dtype the eager engine casts it to (``tensor._promoted``), if any: the
        op's result dtype, to which the validator promoted the inputs. Once one input is cast,
        every tensor input is, as eagerly (a NumPy scalar becomes a 0-d array)."""
        result = valid.types[node.id]
        types = [valid.types[i] for i in node.inputs]
        if all(t.weak or t.dtype is result.dtype for t in types):
            return None
        return tuple(None if t.weak else result.dtype.numpy for t in types)

    def __call__(self, values: Mapping[str, np.ndarray], seed: Array | None = None) -> Sweep:
        env = self._env.copy()
        for at, name in self._leaves:
            env[at] = values[name]
        saved: list[Sequence[Array]] = []  # each op's inputs, as its VJPs read them
        with np.errstate(all="ignore"):
            try:
                for forward_op, inputs, slot, casts in self._forward_code:
                    xs = inputs(env)
                    if casts is not None:
                        xs = tuple(x if dtype is None else np.asarray(x, dtype=dtype)
                                   for x, dtype in zip(xs, casts, strict=True))
                    env[slot] = forward_op(*xs)
                    saved.append(xs)
            except Exception as error:
                reported = blame(self._steps[len(saved)].node, error)  # the op that failed
                if reported is error:
                    raise
                raise reported from error
            out = env[self._output]
            if not self._tracked_output:
                raise UsageError(NO_GRAD)
            if self._untracked_retain is not None:
                raise UsageError(f"node {self._untracked_retain!r}: {NO_RETAIN_GRAD}")
            grads: list[Array] = [None] * self._gradients
            grads[self._root] = initial_gradient(out, seed)
            for vjp, step, slot, position, source, target, first in self._backward_code:
                xs = saved[step]
                x = xs[position]
                gi = vjp(grads[source], env[slot], *xs)
                if gi.shape != x.shape:
                    gi = unbroadcast(gi, x.shape)
                if gi.dtype != x.dtype:
                    gi = gi.astype(x.dtype)
                grads[target] = gi if first else grads[target] + gi
        # New arrays, in the leaves' (and retained nodes') dtypes, as AccumulateGrad makes them.
        return Sweep(
            np.asarray(out),
            {name: np.array(grads[g], dtype=self._leaf_dtypes[name])
             for name, g in self._leaf_grads},
            {node_id: np.array(grads[g], dtype=dtype) for node_id, g, dtype in self._retained})


def _bound(function: Callable[..., Any], attrs: Mapping[str, Any]) -> Callable[..., Any]:
    return functools.partial(function, **attrs) if attrs else function


def _getter(slots: Sequence[int]) -> Callable[[list[Any]], Sequence[Any]]:
    """The values at ``slots`` as a sequence (a list slice for fewer than two)."""
    if len(slots) > 1:
        return itemgetter(*slots)
    return itemgetter(slice(slots[0], slots[0] + 1) if slots else slice(0, 0))


def _fail(error: CrossgradError) -> None:
    raise copy.copy(error)  # a copy per call: threads share the tape


def _static_values(valid: ValidGraph, order: Sequence[Any],
                   ) -> tuple[list[Any], CrossgradError | None]:
    """Per node of ``order``, its value if it depends on no leaf (constants, and ops on them
    only: computed once here, by the eager engine), else None; and the error of the first such
    node that fails, if one does (its value, and those after it, stay None)."""
    static: set[str] = set()
    for node in order:
        if type(node) is Operation:
            if all(i in static for i in node.inputs):
                static.add(node.id)
        elif type(node) is not Leaf:
            static.add(node.id)
    known: dict[str, Any] = {}
    failure = None
    if static:
        try:
            with np.errstate(all="ignore"):
                forward(valid, {}, [node.id for node in order if node.id in static], known)
        except CrossgradError as error:
            if error.node is None:
                raise
            failure = error
    return [value_of(known[node.id]) if node.id in known else None for node in order], failure


def _schedule(root: int, edges: Mapping[int, list[tuple[int, int]]],
              ) -> list[tuple[int, int, int]]:
    """The edges (op, input position, input) of the reverse sweep from ``root``, in the order
    ``reverse.schedule`` runs the ops. ``edges[i]``: op ``i``'s (position, input) pairs that need
    a gradient; an input not in ``edges`` is a leaf."""
    order = schedule(root, lambda i: [j for _, j in edges[i] if j in edges], int)
    return [(i, position, j) for i in order for position, j in edges[i]]
