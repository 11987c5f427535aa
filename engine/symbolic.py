"""Symbolic derivation: the gradient of a graph in closed form, by computer algebra.

Every leaf element, constant element and seed element becomes a symbol, so one derivation serves
every call with the same structure (the values are bound at evaluation). The route is symbolic
reverse mode, which keeps the cost linear in the graph where differentiating the whole expression
repeats work per leaf element:

- each op's *local* derivatives come from differentiating the table's SymPy forward, never from a
  hand-written rule: elementwise ops once per op and attributes, with ``sympy.diff`` on scalar
  symbols; reductions, matmul and views with SymEngine's ``diff`` of the forward applied to arrays
  of placeholder symbols (SymEngine agrees with SymPy on the table's forms: see the tests);
- an op the table also writes as a few other rows (``Op.composed``: softmax is
  exp(x - logsumexp(x))) enters the plan as those rows, whose partials stay linear in its size;
- the values are the table's forwards over NumPy object arrays of SymEngine expressions;
- the chain rule composes them from the output back to the leaves.

SymPy stays the reference (it derives the local forms, and ``display`` renders closed forms
with it); SymEngine carries the composition and compilation, orders of magnitude faster. The walk
is iterative; expression depth is bounded by the caller (``Caps``), as SymEngine's own visitors
recurse.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import numpy as np
import symengine as se
import sympy
from symengine.lib.symengine_wrapper import sympy2symengine

from .graph import Constant, Leaf, ValidGraph, normalize_attrs
from .ops import TABLE, Step

Shape = tuple[int, ...]
Expr = Any  # a SymEngine expression
Objects = np.ndarray  # an object array of SymEngine expressions


# --- the plan: what derivation needs of a graph, picklable for a worker process ----------------

@dataclass(frozen=True)
class PlanNode:
    """One node the output depends on: ``kind`` is "leaf", "const" or "op"."""

    kind: str
    shape: Shape
    name: str = ""  # the leaf's name
    op: str = ""
    inputs: tuple[int, ...] = ()  # positions in ``Plan.nodes``
    attrs: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Plan:
    """A graph's structure, without values: the nodes the output depends on, in a topological
    order, every leaf the graph uses (name, shape), and what to differentiate.

    Built from a ``ValidGraph`` with ``Plan.of``; equal plans share one derivation.
    """

    nodes: tuple[PlanNode, ...]
    output: int
    leaves: tuple[tuple[str, Shape], ...]
    wrt: tuple[str, ...]
    hessian: bool = False

    def __hash__(self) -> int:
        return self._hash

    @functools.cached_property
    def _hash(self) -> int:  # plans key caches on every call: hash the nested tuples once
        return hash((self.nodes, self.output, self.leaves, self.wrt, self.hessian))

    def __getstate__(self) -> dict[str, Any]:
        # Not the cached properties: string hashes differ from one process to the next.
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)

    @staticmethod
    def of(valid: ValidGraph, wrt: Sequence[str], hessian: bool = False) -> Plan:
        needed = valid.needed
        position: dict[str, int] = {}
        nodes: list[PlanNode] = []
        for node in valid.order:
            if node.id not in needed:
                continue
            position[node.id] = len(nodes)
            shape = tuple(valid.types[node.id].shape)
            if isinstance(node, Leaf):
                nodes.append(PlanNode("leaf", shape, name=node.name))
            elif isinstance(node, Constant):
                nodes.append(PlanNode("const", shape))
            elif (composed := TABLE[node.op].composed) is None:
                nodes.append(PlanNode("op", shape, op=node.op,
                                      inputs=tuple(position[i] for i in node.inputs),
                                      attrs=tuple(sorted(node.attrs.items()))))
            else:
                _append_steps(nodes, composed(**node.attrs), [position[i] for i in node.inputs])
                position[node.id] = len(nodes) - 1
        leaves = tuple((name, tuple(shape)) for name, (shape, _) in valid.leaves.items())
        return Plan(tuple(nodes), position[valid.output], leaves, tuple(wrt), hessian)

    @functools.cached_property
    def symbol_count(self) -> int:
        """Scalar symbols: leaf, constant and seed elements."""
        total = sum(_numel(shape) for _, shape in self.leaves)
        total += sum(_numel(n.shape) for n in self.nodes if n.kind == "const")
        return total + _numel(self.nodes[self.output].shape)

    @functools.cached_property
    def element_count(self) -> int:
        """Scalar expressions the derivation builds: one per element of each op's result."""
        return sum(_numel(n.shape) for n in self.nodes if n.kind == "op")

    @functools.cached_property
    def depth(self) -> int:
        """The longest path from a leaf to the output: the nesting depth of the expressions."""
        depth = [0] * len(self.nodes)
        for k, node in enumerate(self.nodes):
            if node.inputs:
                depth[k] = 1 + max(depth[i] for i in node.inputs)
        return depth[self.output]

    def live(self) -> list[bool]:
        """Per node, whether it depends on a leaf in ``wrt`` through no op that stops the
        gradient (``detach``): the nodes a gradient flows through."""
        wrt = set(self.wrt)
        live = [False] * len(self.nodes)
        for k, node in enumerate(self.nodes):
            if node.kind == "leaf":
                live[k] = node.name in wrt
            elif node.kind == "op" and not TABLE[node.op].stops_gradient:
                live[k] = any(live[i] for i in node.inputs)
        return live

    @functools.cached_property
    def seeded(self) -> bool:
        """Whether the output is not a single element, so the gradient needs a seed."""
        return _numel(self.nodes[self.output].shape) != 1


def _append_steps(nodes: list[PlanNode], steps: Sequence[Step], inputs: list[int]) -> None:
    """A composed op's steps (``Op.composed``) as plan nodes, the last one its result; ``inputs``
    the op's operands' positions, to which each step's result is added."""
    for step in steps:
        op = TABLE[step.op]
        step_attrs = normalize_attrs(op, step.attrs)
        step_inputs = tuple(inputs[i] for i in step.inputs)
        shape = tuple(op.shape(*(nodes[i].shape for i in step_inputs), **step_attrs))
        inputs.append(len(nodes))
        nodes.append(PlanNode("op", shape, op=step.op, inputs=step_inputs,
                              attrs=tuple(sorted(step_attrs.items()))))


def constants_of(valid: ValidGraph) -> list[np.ndarray]:
    """The values of the plan's constant nodes, in the plan's order: what its constant symbols
    stand for in this graph."""
    needed = valid.needed
    return [node.value for node in valid.order if isinstance(node, Constant)
            and node.id in needed]


def _numel(shape: Shape) -> int:
    return math.prod(shape)


# --- symbols -------------------------------------------------------------------------------------
# Internal names only ("L0_3": element 3 of the first leaf): client leaf names never become symbol
# names, so no two distinct elements can share a symbol. ``display`` renders the real names.

def leaf_symbols(index: int, shape: Shape) -> Objects:
    return _symbols(f"L{index}_", shape)


def constant_symbols(index: int, shape: Shape) -> Objects:
    return _symbols(f"C{index}_", shape)


def _symbols(prefix: str, shape: Shape) -> Objects:
    flat = np.empty(_numel(shape), dtype=object)
    for k in range(flat.size):
        flat[k] = se.Symbol(f"{prefix}{k}")
    return flat.reshape(shape)


def _objects(value: Any, shape: Shape) -> Objects:
    """``value`` (an expression or an object array) as an object array of ``shape``."""
    if isinstance(value, np.ndarray):
        return value.reshape(shape) if value.shape != shape else value
    array = np.empty((), dtype=object)
    array[()] = value
    return array.reshape(shape)


# --- local derivatives ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Elementwise:
    """An elementwise op's forward and partial derivatives on scalar template symbols."""

    symbols: tuple[Expr, ...]
    forward: Expr
    partials: tuple[Expr, ...]


@functools.lru_cache(maxsize=256)
def elementwise_rule(op_name: str, attrs: tuple[tuple[str, Any], ...]) -> _Elementwise:
    """``sympy.diff`` of the op's SymPy forward, per input, once per op and attributes (no
    partials for an op that stops the gradient)."""
    op = TABLE[op_name]
    symbols = sympy.symbols(f"t0:{op.arity}", real=True)
    forward = op.sympy(*symbols, **dict(attrs))
    partials = () if op.stops_gradient else tuple(sympy.diff(forward, s) for s in symbols)
    return _Elementwise(tuple(sympy2symengine(s) for s in symbols), sympy2symengine(forward),
                        tuple(sympy2symengine(p) for p in partials))


@dataclass(frozen=True)
class _Structural:
    """A reduction's, matmul's or view's local Jacobian over placeholder symbols, sparse: per
    result element, (input, flat input element, partial) for the elements it depends on;
    ``where``: each placeholder's (input, flat element)."""

    where: dict[Expr, tuple[int, int]]
    jacobian: tuple[tuple[tuple[int, int, Expr], ...], ...]


@functools.lru_cache(maxsize=256)
def structural_rule(op_name: str, attrs: tuple[tuple[str, Any], ...],
                    shapes_in: tuple[Shape, ...], shape_out: Shape) -> _Structural:
    op = TABLE[op_name]
    placeholders = [_symbols(f"P{i}_", shape) for i, shape in enumerate(shapes_in)]
    where = {p: (i, k) for i, array in enumerate(placeholders) for k, p in
             enumerate(array.reshape(-1))}
    result = _objects(op.sympy(*placeholders, **dict(attrs)), shape_out).reshape(-1)
    jacobian = []
    for element in result:
        entries = []
        for symbol in _sorted_symbols(element, where):
            i, k = where[symbol]
            entries.append((i, k, element.diff(symbol)))
        jacobian.append(tuple(entries))
    return _Structural(where, tuple(jacobian))


def _sorted_symbols(element: Expr, among: Mapping[Expr, tuple[int, int]]) -> list[Expr]:
    # A plain number has no symbols: e.g. the sum of no elements is the int 0.
    symbols = getattr(element, "free_symbols", ())
    return sorted((s for s in symbols if s in among), key=among.__getitem__)


# --- derivation ----------------------------------------------------------------------------------

class Held(NamedTuple):
    """A symbol standing for an element of a result whose gradient is stopped: the element's
    value, and the op that stopped it."""

    symbol: Expr
    value: Expr
    op: str


@dataclass
class Derivation:
    """The closed forms of a plan, over its symbols.

    ``inputs``: the symbols in the order an evaluator takes their values (leaf elements by leaf,
    then constant elements by constant node, then seed elements when ``Plan.seeded``).
    ``held``: symbols standing for the results of ops that stop the gradient (``detach``),
    each with its value's expression (over the inputs and earlier held symbols) and the op's name,
    in order. ``value``: the output, flat.
    ``gradients``: per leaf in ``wrt`` that the output depends on, the flat gradient.
    ``hessian``: per pair of such leaves, the flat block (row leaf's shape + column leaf's).
    """

    inputs: list[Expr]
    held: list[Held]
    value: list[Expr]
    gradients: dict[str, list[Expr]]
    hessian: dict[tuple[str, str], list[Expr]] = field(default_factory=dict)
    leaf_symbols: dict[str, Objects] = field(default_factory=dict)
    constant_symbols: list[Objects] = field(default_factory=list)


def derive(plan: Plan) -> Derivation:
    """The value, gradient (and Hessian if the plan asks) of the plan's output, in closed form."""
    leaves = {name: leaf_symbols(k, shape) for k, (name, shape) in enumerate(plan.leaves)}
    constants: list[Objects] = []
    held: list[Held] = []
    values: list[Objects] = []
    for k, node in enumerate(plan.nodes):
        if node.kind == "leaf":
            values.append(leaves[node.name])
        elif node.kind == "const":
            constants.append(constant_symbols(len(constants), node.shape))
            values.append(constants[-1])
        else:
            value = _forward(node, [values[i] for i in node.inputs])
            if TABLE[node.op].stops_gradient:
                # A constant for differentiation, equal to the op's value.
                symbols = _symbols(f"D{k}_", node.shape)
                held.extend(Held(s, e, node.op) for s, e in zip(
                    symbols.reshape(-1), value.reshape(-1), strict=True))
                value = symbols
            values.append(value)
    seed = _symbols("S", plan.nodes[plan.output].shape) if plan.seeded else None
    inputs = [s for name, _ in plan.leaves for s in leaves[name].reshape(-1)]
    inputs += [s for array in constants for s in array.reshape(-1)]
    if seed is not None:
        inputs += list(seed.reshape(-1))
    adjoints = _reverse(plan, values, seed)
    gradients: dict[str, list[Expr]] = {}
    for name in plan.wrt:
        if name in adjoints:
            gradients[name] = list(adjoints[name].reshape(-1))
    derivation = Derivation(inputs, held, list(values[plan.output].reshape(-1)), gradients,
                            leaf_symbols=leaves, constant_symbols=constants)
    if plan.hessian:
        derivation.hessian = _hessian(gradients, leaves)
    return derivation


def _forward(node: PlanNode, inputs: list[Objects]) -> Objects:
    op = TABLE[node.op]
    if op.elementwise:
        rule = elementwise_rule(node.op, node.attrs)
        operands = np.broadcast_arrays(*inputs) if len(inputs) > 1 else inputs
        out = np.empty(node.shape, dtype=object)
        flat = out.reshape(-1)
        columns = [operand.reshape(-1) for operand in operands]
        for k in range(flat.size):
            flat[k] = rule.forward.subs(dict(zip(rule.symbols, (c[k] for c in columns),
                                                 strict=True)))
        return out
    return _objects(op.sympy(*inputs, **dict(node.attrs)), node.shape)


def _reverse(plan: Plan, values: list[Objects], seed: Objects | None) -> dict[str, Objects]:
    """The chain rule, from the output back: per leaf name in ``wrt``, its adjoint array."""
    live = plan.live()
    if not live[plan.output]:
        return {}
    # Terms of each reached node's adjoint, per flat element; summed once its consumers are done.
    terms: dict[int, list[list[Expr]]] = {}
    start = seed.reshape(-1) if seed is not None else [se.Integer(1)]
    terms[plan.output] = [[s] for s in start]
    adjoints: dict[str, Objects] = {}
    for k in range(len(plan.nodes) - 1, -1, -1):
        if k not in terms:  # not reached: no path to the output, or only through detach
            continue
        node = plan.nodes[k]
        reached = terms.pop(k)
        adjoint = np.empty(len(reached), dtype=object)
        for j, parts in enumerate(reached):
            adjoint[j] = se.Add(*parts) if parts else se.Integer(0)
        if node.kind == "leaf":
            previous = adjoints.get(node.name)
            shaped = adjoint.reshape(node.shape)
            adjoints[node.name] = (shaped if previous is None
                                   else _objects(previous + shaped, node.shape))
            continue
        _propagate(plan, node, adjoint, values, terms, live)
    return adjoints


def _propagate(plan: Plan, node: PlanNode, adjoint: Objects, values: list[Objects],
               terms: dict[int, list[list[Expr]]], live: list[bool]) -> None:
    """Add this node's contribution to the adjoint terms of its live inputs."""
    op = TABLE[node.op]
    shapes_in = [plan.nodes[i].shape for i in node.inputs]
    if op.elementwise:
        rule_e = elementwise_rule(node.op, node.attrs)
        inputs = [values[i] for i in node.inputs]
        operands = np.broadcast_arrays(*inputs) if len(inputs) > 1 else inputs
        columns = [operand.reshape(-1) for operand in operands]
        # Where each result element reads each input from (broadcasting repeats elements).
        sources = [np.broadcast_to(np.arange(_numel(s)).reshape(s), node.shape).reshape(-1)
                   for s in shapes_in]
        for position, input_node in enumerate(node.inputs):
            if not live[input_node]:
                continue
            partial = rule_e.partials[position]
            target = _slots(terms, input_node, plan)
            source = sources[position]
            for k in range(adjoint.size):
                local = partial.subs(dict(zip(rule_e.symbols, (c[k] for c in columns),
                                              strict=True)))
                if local != 0:
                    target[source[k]].append(adjoint[k] * local)
        return
    rule = structural_rule(node.op, node.attrs, tuple(shapes_in), node.shape)
    flat_inputs = [values[i].reshape(-1) for i in node.inputs]
    bound: dict[Expr, Expr] = {}  # placeholder -> input element, filled in when first needed
    for k, entries in enumerate(rule.jacobian):
        for position, element, partial in entries:
            input_node = node.inputs[position]
            if not live[input_node]:
                continue
            if not partial.is_Number:
                if not bound:
                    bound = {p: flat_inputs[i][j] for p, (i, j) in rule.where.items()}
                partial = partial.subs({p: bound[p] for p in partial.free_symbols})
            _slots(terms, input_node, plan)[element].append(adjoint[k] * partial)


def _slots(terms: dict[int, list[list[Expr]]], k: int, plan: Plan) -> list[list[Expr]]:
    """The adjoint terms of node ``k``, created when first reached."""
    slots = terms.get(k)
    if slots is None:
        slots = terms[k] = [[] for _ in range(_numel(plan.nodes[k].shape))]
    return slots


def _hessian(gradients: Mapping[str, list[Expr]], leaves: Mapping[str, Objects],
             ) -> dict[tuple[str, str], list[Expr]]:
    """Second derivatives: SymEngine's ``diff`` of each gradient element."""
    blocks = {}
    for row, gradient in gradients.items():
        for column in gradients:
            symbols = leaves[column].reshape(-1)
            blocks[row, column] = [g.diff(s) for g in gradient for s in symbols]
    return blocks
