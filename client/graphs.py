"""Lazy values: the wire graph that computes tensors, and what is kept or read on the server.

A lazy tensor is the expression that computes it over leaves the server keeps. ``build`` writes
the graph of some tensors; ``read_values`` fetches their values; ``before_change`` keeps, before a
leaf or grad changes in place, the lazy tensors still readable that read it, so each keeps the
value PyTorch's eager tensor would have; ``keep`` queues that.

Tensors are told from Python numbers by type (an operand is one or the other), so this module
needs no ``Tensor`` at run time and ``tensor.py`` builds on it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from crossgrad.v1 import crossgrad_pb2 as pb

from . import wire
from .session import Session, Storage

if TYPE_CHECKING:
    from .tensor import Tensor

NUMBERS = (int, float, bool)  # what an operand is when it is not a tensor


def non_finite_number(value: Any) -> bool:
    """A Python number the wire cannot carry as a constant (NaN, ±inf)."""
    return type(value) is float and not math.isfinite(value)


def stale(t: Tensor) -> bool:
    """Whether a leaf ``t``'s expression reads changed in place since ``t`` was recorded."""
    stamp = t._stamp
    return any(s.changed_at > stamp for s in t._deps)


def before_change(session: Session, storage: Storage, owner: Tensor | None = None) -> None:
    """Before ``storage`` changes in place: keep every lazy tensor still alive whose value reads
    it, so it keeps the value it had (PyTorch computed it eagerly); then mark the change.
    ``owner``: the op result whose value ``storage`` keeps, which lazy tensors recorded before
    it was kept read through its expression."""
    if owner is not None:
        # Recorded before ``storage`` kept the owner's value, they read it all the same.
        for t in list(session.lazy.values()):
            if storage not in t._deps and _reads(t, owner):
                t._deps = t._deps | {storage}
    waiting = [t for t in list(session.lazy.values())
               if t._value is None and t._storage is None and storage in t._deps
               and not stale(t)]
    waiting = _held(waiting)
    if waiting:
        keep(session, waiting)
    session.clock += 1
    storage.changed_at = session.clock


def _reads(t: Tensor, target: Tensor) -> bool:
    """Whether ``t``'s expression reads ``target``'s value (other than through a kept value)."""
    stack, seen = [t], set()
    while stack:
        u = stack.pop()
        if u is target and u is not t:
            return True
        if u._expr is None or id(u) in seen or (u is not t and u._storage is not None):
            continue
        seen.add(id(u))
        stack.extend(a for a in u._expr.args if type(a) not in NUMBERS)
    return False


# References to a tensor in ``_held``'s loop: the list, the loop variable, getrefcount's argument.
_HELD_BASE = 3
# From 3.14 the interpreter may borrow references it used to count, so a count proves nothing.
_COUNTS_REFERENCES = sys.version_info < (3, 14)


def _held(tensors: list[Tensor]) -> list[Tensor]:
    """Of ``tensors``, those something other than the graphs of other tensors refers to (a
    variable, a container): only they can be read later. A tensor only other lazy tensors
    hold is read only through them, and they are kept themselves. Without exact reference
    counts (CPython from 3.14), all of them."""
    if not _COUNTS_REFERENCES:
        return tensors
    return [t for t in tensors if sys.getrefcount(t) - _HELD_BASE > t._uses]


def keep(session: Session, tensors: Sequence[Tensor]) -> None:
    """Keep the values of ``tensors`` on the server as new leaves (a ``Keep`` step, queued)."""
    graph, ids = build(session, tensors)
    kept = []
    for t in tensors:
        if t._storage is not None and t._expr is None:
            continue
        storage = session.storage(np.empty(0), name=None)
        storage.initial = None
        kept.append(pb.KeptNode(node=ids[id(t)], leaf=storage.name))
        t._storage = storage
        t._value_at = storage.changed_at
        session.lazy.pop(t._serial, None)
        session.will_create(storage)
    if kept:
        session.queue(pb.Step(keep=pb.Keep(graph=graph, nodes=kept)), "keeping values")


def read_values(session: Session, tensors: Sequence[Tensor]) -> None:
    """Fetch the values of ``tensors`` (and their grad_fn names) in one call."""
    graph, ids = build(session, tensors)
    answers = session.read(graph, [ids[id(t)] for t in tensors])
    for t, answer in zip(tensors, answers, strict=True):
        t._value = wire.array(answer.value)
        if t._storage is not None:
            t._value_at = t._storage.changed_at
        if t._expr is not None and answer.grad_fn and t._expr._name is None and not any(
                non_finite_number(a) for a in t._expr.args):
            t._expr._name = answer.grad_fn
        session.lazy.pop(t._serial, None)


def build(session: Session, roots: Sequence[Tensor], *, backward: bool = False,
          ) -> tuple[pb.Graph, dict[int, str]]:
    """The wire graph that computes ``roots`` (the first is its output), and each tensor's node
    id by ``id()``. Leaves not yet on the server get their create steps queued.

    A tensor with a kept value that its expression no longer computes (a leaf it reads changed
    since, or the kept value itself changed, through ``detach()`` or under no_grad) is read from
    it, except, in a backward's graph, one that requires grad: that one is the kept value plus
    its expression minus the same detached, so its value is the kept one and its gradient flows
    through its expression.
    """
    nodes: list[pb.Node] = []
    ids: dict[int, str] = {}
    # The ops in the order they were recorded, which the server's backward runs from the last
    # (PyTorch's order); each op's operands are listed before it, as they come.
    ordered = _computed_in_recorded_order(roots, backward)
    computed = {id(t) for t in ordered}  # the others read their stored values
    stack: list[tuple[Tensor, bool]] = [(t, False) for t in reversed([*ordered, *roots])]
    while stack:
        t, ready = stack.pop()
        if id(t) in ids:
            continue
        expr = t._expr
        stored = t._storage
        if id(t) in computed:
            assert expr is not None
            if not ready:
                stack.append((t, True))
                stack.extend((a, False) for a in reversed(expr.args)
                             if type(a) not in NUMBERS and id(a) not in ids)
                continue
            node_id = f"n{len(nodes)}"
            inputs = []
            for a in expr.args:
                if type(a) not in NUMBERS:
                    inputs.append(ids[id(a)])
                elif non_finite_number(a):
                    # The server takes finite constants only: the number as a 0-d leaf in the
                    # result's dtype, which the result's promotion then leaves as it is.
                    holder = session.storage(np.asarray(a, t._dtype.numpy))
                    session.ensure_created(holder)
                    inputs.append(f"n{len(nodes)}")
                    nodes.append(pb.Node(id=inputs[-1], leaf=holder.name))
                    node_id = f"n{len(nodes)}"
                else:
                    constant = f"n{len(nodes)}"
                    nodes.append(pb.Node(id=constant, constant=wire.number(a)))
                    inputs.append(constant)
                    node_id = f"n{len(nodes)}"
            attrs = {}
            for name, value in expr.attrs.items():
                encoded = wire.attr(value)
                if encoded is not None:
                    attrs[name] = encoded
            nodes.append(pb.Node(id=node_id, op=pb.Operation(op=expr.op.name, inputs=inputs,
                                                             attrs=attrs)))
            if backward and not t.requires_grad and any(
                    type(a) not in NUMBERS and a.requires_grad for a in expr.args):
                # Recorded under no_grad: no gradient flows through it.
                nodes.append(pb.Node(id=f"n{len(nodes)}", op=pb.Operation(
                    op="detach", inputs=[node_id])))
                node_id = f"n{len(nodes) - 1}"
            if stored is not None and (stored.changed_at != 0 or stale(t)):  # moved
                session.ensure_created(stored)
                node_id = _straight_through(nodes, stored.name, node_id)
            ids[id(t)] = node_id
            continue
        assert stored is not None
        node_id = f"n{len(nodes)}"
        if stored.grad_of is not None:
            nodes.append(pb.Node(id=node_id, grad=stored.name))
        else:
            session.ensure_created(stored)
            nodes.append(pb.Node(id=node_id, leaf=stored.name))
            if stored.requires_grad and not t.requires_grad:
                nodes.append(pb.Node(id=f"n{len(nodes)}", op=pb.Operation(
                    op="detach", inputs=[node_id])))
                node_id = f"n{len(nodes) - 1}"
        ids[id(t)] = node_id
    return pb.Graph(nodes=nodes, output=ids[id(roots[0])]), ids


def _reads_storage(t: Tensor, backward: bool) -> bool:
    """Whether ``build`` reads ``t`` from its stored value rather than computing its op."""
    stored, expr = t._storage, t._expr
    if stored is None:
        return False
    moved = expr is not None and (stored.changed_at != 0 or stale(t))
    return expr is None or (moved and not (backward and t.requires_grad))


def _computed_in_recorded_order(roots: Sequence[Tensor], backward: bool) -> list[Tensor]:
    """The tensors ``build`` computes by their ops, in the order the ops were recorded."""
    found: dict[int, Tensor] = {}
    stack = list(roots)
    while stack:
        t = stack.pop()
        if id(t) in found or _reads_storage(t, backward):
            continue
        found[id(t)] = t
        assert t._expr is not None
        stack.extend(a for a in t._expr.args if type(a) not in NUMBERS)
    return sorted(found.values(), key=lambda t: t._expr.seq)  # type: ignore[union-attr]


def layout(t: Tensor) -> np.ndarray | None:
    """An array laid out in memory as ``t``'s value is where it is computed, or None when that is
    contiguous (every value computed without reordering dimensions is). The op table's forwards
    over arrays of ones in the leaves' shapes give it: the layout depends on the ops and shapes
    only, and the server computes with the same forwards."""
    found, stack, seen = False, [t], set()
    while stack and not found:
        u = stack.pop()
        if u._expr is None or id(u) in seen:
            continue
        seen.add(id(u))
        found = u._expr.op.strided
        stack.extend(a for a in u._expr.args if type(a) not in NUMBERS)
    if not found:
        return None
    arrays: dict[int, Any] = {}
    with np.errstate(all="ignore"):
        for u in _postorder(t):
            expr = u._expr
            if expr is None:
                arrays[id(u)] = np.ones(u._shape)
            else:
                args = [arrays[id(a)] if type(a) not in NUMBERS else a for a in expr.args]
                arrays[id(u)] = np.asarray(expr.op.forward(*args, **expr.attrs))
    return arrays[id(t)]


def _postorder(root: Tensor) -> list[Tensor]:
    """``root`` and the tensors its expression reads, each after what it reads."""
    order: list[Tensor] = []
    seen: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        u, ready = stack.pop()
        if ready:
            order.append(u)
            continue
        if id(u) in seen:
            continue
        seen.add(id(u))
        stack.append((u, True))
        if u._expr is not None:
            stack.extend((a, False) for a in u._expr.args if type(a) not in NUMBERS)
    return order


def _straight_through(nodes: list[pb.Node], leaf: str, computed: str) -> str:
    """Nodes for ``leaf + (computed - computed.detach())``: the leaf's value, with the gradient
    flowing into ``computed``; the id of the last."""
    first = len(nodes)
    nodes += [pb.Node(id=f"n{first}", leaf=leaf),
              pb.Node(id=f"n{first + 1}", op=pb.Operation(op="detach", inputs=[computed])),
              pb.Node(id=f"n{first + 2}", op=pb.Operation(op="sub", inputs=[
                  computed, f"n{first + 1}"])),
              pb.Node(id=f"n{first + 3}", op=pb.Operation(op="add", inputs=[
                  f"n{first}", f"n{first + 2}"]))]
    return f"n{first + 3}"
