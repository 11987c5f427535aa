"""The graph IR: what a client sends, checked before anything runs.

A graph is a list of nodes, each an id and one of: a ``Leaf`` (a name bound to a value at
evaluation), a ``Constant`` (an inline array) or an ``Operation`` (a wire op name from the op
table, input ids and attributes), plus the id of the output. ``validate`` checks it against the
op table and the declared leaves without running anything and returns a ``ValidGraph`` (the
topological order, each node's shape and dtype, a structural key); ``check_values`` checks leaf
values against it. ``executor.py`` runs a ``ValidGraph``.

0-d constants are *weak* scalars, as Python numbers are in PyTorch: ``x ** 2`` keeps ``x``'s
dtype. They are run as Python numbers, and an op whose operands are all weak scalars is computed
as Python would compute it (``x * (1 / 3)`` divides in double precision) and gives a weak scalar
again.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from . import dtypes
from .dtypes import DType
from .errors import CrossgradError, InvalidArgument, LimitExceeded, short_name
from .ops import ATTR_KINDS, MAX_NDIM, TABLE, IllTyped, Op, is_int

Shape = tuple[int, ...]

MAX_NAME_CHARS = 256  # node ids and leaf names: errors quote them, and a status must stay small
_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class Limits:
    """Size limits checked before anything runs; the server sets them from its configuration."""

    max_nodes: int = 100_000
    max_elements: int = 1_000_000  # per tensor
    max_total_elements: int = 20_000_000  # summed over every node: bounds evaluation memory
    max_formula_chars: int = 10_000
    max_depth: int = 100  # nesting of a formula
    # Terms of a chain of left-associative operators (x + x - x ...) along one path of a formula:
    # Python's ast builds such a chain as deep as it is long, and stops near 3,000 levels.
    max_chain: int = 2_000
    max_int_literal: int = 10**15  # |n| of an integer in a formula, written or folded
    max_exponent: float = 1000  # |n| of a constant exponent in a formula, written or folded


DEFAULT_LIMITS = Limits()


# --- nodes ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Leaf:
    """A node bound at evaluation to the value of the leaf called ``name``."""

    id: str
    name: str


@dataclass(frozen=True, eq=False)
class Constant:
    """A node holding an inline value (stored as a read-only copy)."""

    id: str
    value: np.ndarray

    def __post_init__(self) -> None:
        try:
            value = np.array(self.value)
        except (TypeError, ValueError) as error:
            raise InvalidArgument(f"node {self.id!r}: constant is not an array: {error}",
                                  node=self.id) from None
        value.flags.writeable = False
        object.__setattr__(self, "value", value)

    def __eq__(self, other: object) -> bool:
        # By value: NumPy's == is elementwise, so the generated __eq__ would not give a bool.
        return (isinstance(other, Constant) and self.id == other.id
                and self.value.dtype == other.value.dtype
                and np.array_equal(self.value, other.value))

    def __hash__(self) -> int:
        return hash((self.id, self.value.shape, self.value.dtype.str))


@dataclass(frozen=True)
class Operation:
    """A node applying the table's op ``op`` to the nodes ``inputs`` with attributes ``attrs``."""

    id: str
    op: str
    inputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "attrs", MappingProxyType(dict(self.attrs)))


Node = Leaf | Constant | Operation


@dataclass(frozen=True)
class Graph:
    """Nodes in any order (they must form a DAG) and the id of the output node."""

    nodes: tuple[Node, ...]
    output: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))


# --- validation ----------------------------------------------------------------------------------

class NodeType(NamedTuple):
    """What validation knows of a node's value before it exists.

    ``weak`` marks a weak scalar (a 0-d constant, or an op on weak scalars only): it takes part
    in type promotion as a Python number, and ``dtype`` says which (float64: float, int64: int).
    """

    shape: Shape
    dtype: DType
    weak: bool = False


@dataclass(frozen=True, eq=False)
class ValidGraph:
    """A graph that passed ``validate``.

    ``order`` lists every node in a topological order, operations with their attributes
    normalized (defaults filled in, dims as tuples, numbers as floats); ``types`` maps each node
    id to its ``NodeType``; ``leaves`` maps each leaf name the graph uses to its (shape, dtype).
    """

    graph: Graph
    order: tuple[Node, ...]
    types: Mapping[str, NodeType]
    leaves: Mapping[str, tuple[Shape, DType]]

    @property
    def output(self) -> str:
        """The id of the output node."""
        return self.graph.output

    @cached_property
    def needed(self) -> frozenset[str]:
        """The ids of the nodes the output depends on."""
        return frozenset(ancestors(self, (self.output,)))

    def structural_key(self) -> str:
        """A stable hash of ops, attributes, edges, shapes and dtypes, and not of values.

        Graphs differing only in constant or leaf values share it, and so do graphs whose node
        ids differ (nodes are numbered by their place in ``order``); leaf names are part of it.
        """
        return self._key

    @cached_property
    def _key(self) -> str:
        index = {node.id: i for i, node in enumerate(self.order)}
        texts: dict[Any, str] = {}  # types and attributes recur: encode each once
        lines = []
        for node in self.order:
            t = self.types[node.id]
            described = texts.get(t)
            if described is None:
                described = texts[t] = json.dumps([list(t.shape), t.dtype.name, t.weak])
            if type(node) is Operation:
                attrs = tuple(node.attrs.items())
                encoded = texts.get(attrs)
                if encoded is None:
                    encoded = texts[attrs] = json.dumps(sorted(attrs), allow_nan=False)
                lines.append(f"op {node.op} {[index[i] for i in node.inputs]} {encoded} "
                             f"{described}")
            elif type(node) is Leaf:
                lines.append(f"leaf {json.dumps(node.name)} {described}")
            else:
                lines.append(f"const {described}")
        lines.append(f"output {index[self.graph.output]}")
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def ancestors(valid: ValidGraph, roots: Sequence[str]) -> set[str]:
    """The ids of ``roots`` and of every node they depend on."""
    needed = set(roots)
    for node in reversed(valid.order):  # reverse topological: consumers come first
        if node.id in needed and type(node) is Operation:
            needed.update(node.inputs)
    return needed


def normalize_attrs(op: Op, attrs: Mapping[str, Any], node: str | None = None) -> dict[str, Any]:
    """``attrs`` checked against the op's attribute kinds, with defaults filled in.

    Raises ``InvalidArgument`` for an unknown, missing or ill-typed attribute.
    """
    where = f"node {node!r}: " if node is not None else ""
    for name in attrs:
        if name not in op.attrs:
            known = ", ".join(op.attrs) or "none"
            raise InvalidArgument(f"{where}{op.name} has no attribute {name!r} "
                                  f"(its attributes: {known})", node=node)
    normalized: dict[str, Any] = {}
    for name, spec in op.attrs.items():
        if name not in attrs:
            if spec.required:
                raise InvalidArgument(f"{where}{op.name} needs the attribute {name!r}",
                                      node=node)
            normalized[name] = spec.default
            continue
        kind = ATTR_KINDS[spec.kind]
        try:
            normalized[name] = kind.normalize(attrs[name])
        except IllTyped:
            raise InvalidArgument(f"{where}attribute {name!r} of {op.name} must be "
                                  f"{kind.text}; got {attrs[name]!r}", node=node) from None
    return normalized


def validate(graph: Graph, leaves: Mapping[str, tuple[Sequence[int], DType]],
             limits: Limits = DEFAULT_LIMITS) -> ValidGraph:
    """Check ``graph`` against the op table and the declared ``leaves`` (name: (shape, dtype)).

    Nothing runs: each problem raises ``InvalidArgument`` (``LimitExceeded`` past a limit), or
    the shape rule's ``ShapeError``/``DimensionError``, with ``node`` naming the node.
    """
    if not isinstance(graph, Graph):
        raise InvalidArgument(f"expected a Graph, got {type(graph).__name__}")
    nodes = graph.nodes
    if len(nodes) > limits.max_nodes:
        raise LimitExceeded(f"the graph has {len(nodes)} nodes; the limit is {limits.max_nodes}")
    inputs = _edges(nodes)
    if not any(node.id == graph.output for node in nodes):
        raise InvalidArgument(f"the output node {graph.output!r} is not in the graph",
                              node=graph.output)
    checker = _Checker(leaves, limits)
    types: list[NodeType] = [_UNKNOWN] * len(nodes)
    order: list[Node] = []
    for k in _topological_order(nodes, inputs):
        node = nodes[k]
        if type(node) is Operation:
            node, types[k] = checker.operation(node, tuple([types[i] for i in inputs[k]]))
        elif type(node) is Leaf:
            types[k] = checker.leaf(node)
        else:
            assert isinstance(node, Constant)
            types[k] = checker.constant(node)
        order.append(node)
    by_id = {node.id: types[k] for k, node in enumerate(nodes)}
    return ValidGraph(graph, tuple(order), MappingProxyType(by_id),
                      MappingProxyType(checker.leaves))


_UNKNOWN = NodeType((), dtypes.float32)


def _edges(nodes: Sequence[Node]) -> list[tuple[int, ...]]:
    """Each node's inputs by position; refuses unknown node kinds, bad fields, duplicate ids and
    inputs that are not in the graph."""
    position: dict[str, int] = {}
    for k, node in enumerate(nodes):
        if type(node) not in _NODE_TYPES:
            raise InvalidArgument(f"a graph node must be a Leaf, Constant or Operation, got "
                                  f"{type(node).__name__}")
        if type(node.id) is not str or not node.id:
            raise InvalidArgument(f"a node id must be a non-empty string, got {node.id!r}")
        if len(node.id) > MAX_NAME_CHARS:
            raise InvalidArgument(f"node id {short_name(node.id)} has {len(node.id):,} "
                                  f"characters; a node id has at most {MAX_NAME_CHARS}")
        if position.setdefault(node.id, k) != k:
            raise InvalidArgument(f"node id {node.id!r} is used twice", node=node.id)
    edges: list[tuple[int, ...]] = []
    for node in nodes:
        if type(node) is not Operation:
            edges.append(())
            continue
        try:
            edges.append(tuple([position[i] for i in node.inputs]))
        except (KeyError, TypeError):
            bad = next(i for i in node.inputs if type(i) is not str or i not in position)
            why = "is not in the graph" if type(bad) is str else "is not a node id (a string)"
            raise InvalidArgument(f"node {node.id!r}: input {bad!r} {why}",
                                  node=node.id) from None
    return edges


_NODE_TYPES = frozenset({Leaf, Constant, Operation})


def _topological_order(nodes: Sequence[Node], inputs: Sequence[tuple[int, ...]]) -> list[int]:
    """Kahn's algorithm, taking the earliest declared ready node each time; refuses cycles.

    Iterative, so a 100,000-node chain is fine. The order depends on the declaration order
    alone, so renaming ids keeps it (and the structural key); a graph declared in a topological
    order (as ``formula.parse`` writes them) keeps its order and skips the sort.
    """
    if all(i < k for k, ins in enumerate(inputs) for i in ins):
        return list(range(len(nodes)))
    waiting = [len(ins) for ins in inputs]
    consumers: list[list[int]] = [[] for _ in nodes]
    for k, ins in enumerate(inputs):
        for i in ins:
            consumers[i].append(k)
    ready = [k for k, n in enumerate(waiting) if not n]  # sorted, so already a heap
    order: list[int] = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for consumer in consumers[k]:
            waiting[consumer] -= 1
            if not waiting[consumer]:
                heapq.heappush(ready, consumer)
    if len(order) < len(nodes):
        cycle = [nodes[k].id for k in _find_cycle(waiting, inputs)]
        shown = " -> ".join(repr(i) for i in cycle[:10]) + (" -> ..." if len(cycle) > 10 else "")
        raise InvalidArgument(f"node {cycle[0]!r} is on a cycle: {shown}", node=cycle[0])
    return order


def _find_cycle(waiting: Sequence[int], inputs: Sequence[tuple[int, ...]]) -> list[int]:
    """A cycle among the nodes Kahn's algorithm could not order (those still waiting).

    Each of them has an input among them, so walking inputs from any one must come back to a
    node already walked: that node is on a cycle.
    """
    path: list[int] = []
    seen: dict[int, int] = {}
    current = next(k for k, n in enumerate(waiting) if n)
    while current not in seen:
        seen[current] = len(path)
        path.append(current)
        current = next(i for i in inputs[current] if waiting[i])
    cycle = path[seen[current]:]
    return [*cycle, cycle[0]]


_PYTHON_TYPE = {"float64": float, "int64": int, "bool": bool}
_WEAK_FLOAT = NodeType((), dtypes.float64, weak=True)
_WEAK_INT = NodeType((), dtypes.int64, weak=True)
_WEAK_BOOL = NodeType((), dtypes.bool_, weak=True)


class _Checker:
    """Shape and dtype of each node, in topological order, within the limits.

    An op's result type depends only on the op, its attributes and its input types, which recur
    (a chain repeats one signature), so results are remembered by signature.
    """

    def __init__(self, declared: Mapping[str, tuple[Sequence[int], DType]],
                 limits: Limits) -> None:
        self.declared = declared
        self.limits = limits
        self.leaves: dict[str, tuple[Shape, DType]] = {}  # the leaves used, checked
        self.total = 0
        self.known: dict[Any, tuple[dict[str, Any], NodeType, int]] = {}

    def sized(self, t: NodeType, node: str) -> int:
        """The element count of a node's value, counted against the limits."""
        numel = math.prod(t.shape)
        limit = self.limits.max_elements
        if numel > limit or any(d > limit for d in t.shape):
            raise LimitExceeded(f"node {node!r}: a tensor of shape {list(t.shape)} is over the "
                                f"limit of {limit} elements", node=node)
        return numel

    def count(self, numel: int, node: str) -> None:
        self.total += numel
        if self.total > self.limits.max_total_elements:
            raise LimitExceeded(f"node {node!r}: the graph's tensors hold more than "
                                f"{self.limits.max_total_elements} elements together", node=node)

    def leaf(self, node: Leaf) -> NodeType:
        if type(node.name) is not str or not node.name:
            raise InvalidArgument(f"node {node.id!r}: a leaf name must be a non-empty string",
                                  node=node.id)
        if len(node.name) > MAX_NAME_CHARS:
            raise InvalidArgument(f"node {node.id!r}: a leaf name has at most {MAX_NAME_CHARS} "
                                  f"characters, not {len(node.name):,}", node=node.id)
        if node.name not in self.leaves:
            self.leaves[node.name] = self._declared(node)
        shape, dtype = self.leaves[node.name]
        t = NodeType(shape, dtype)
        self.count(self.sized(t, node.id), node.id)
        return t

    def _declared(self, node: Leaf) -> tuple[Shape, DType]:
        if node.name not in self.declared:
            known = ", ".join(sorted(self.declared)) or "none"
            raise InvalidArgument(f"node {node.id!r}: unknown leaf {node.name!r} (declared "
                                  f"leaves: {known})", node=node.id)
        declared = self.declared[node.name]
        if (not isinstance(declared, tuple) or len(declared) != 2
                or not isinstance(declared[0], (tuple, list))
                or not isinstance(declared[1], DType) or len(declared[0]) > MAX_NDIM
                or not all(is_int(d) and d >= 0 for d in declared[0])):
            raise InvalidArgument(f"node {node.id!r}: leaf {node.name!r} must be declared as "
                                  f"(shape, dtype) with sizes >= 0; got {declared!r}",
                                  node=node.id)
        return tuple(int(d) for d in declared[0]), declared[1]

    def constant(self, node: Constant) -> NodeType:
        value = node.value
        if value.dtype.kind not in "fiub":
            raise InvalidArgument(f"node {node.id!r}: constants must be numbers or booleans, "
                                  f"got dtype {value.dtype}", node=node.id)
        if value.ndim > MAX_NDIM:
            raise InvalidArgument(f"node {node.id!r}: more than {MAX_NDIM} dimensions",
                                  node=node.id)
        t = NodeType(value.shape, dtypes.from_numpy(value.dtype))
        self.count(self.sized(t, node.id), node.id)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise InvalidArgument(f"node {node.id!r}: constant is not finite", node=node.id)
        if value.ndim:
            return t
        if value.dtype.kind in "iu" and not _INT64[0] <= int(value) <= _INT64[1]:
            raise InvalidArgument(f"node {node.id!r}: integer constant out of int64 range",
                                  node=node.id)
        return {"f": _WEAK_FLOAT, "b": _WEAK_BOOL}.get(value.dtype.kind, _WEAK_INT)

    def operation(self, node: Operation, inputs: tuple[NodeType, ...],
                  ) -> tuple[Operation, NodeType]:
        """The node with its attributes normalized, and its type."""
        try:
            signature = (node.op, tuple(node.attrs.items()), inputs)
            known = self.known.get(signature)
        except TypeError:  # an unhashable attribute value: ill-typed, reported below
            signature, known = None, None
        if known is None:
            known = self._operation(node, inputs)
            if signature is not None:
                self.known[signature] = known
        attrs, t, numel = known
        self.count(numel, node.id)
        if attrs != node.attrs:
            node = Operation(node.id, node.op, node.inputs, attrs)
        return node, t

    def _operation(self, node: Operation, inputs: tuple[NodeType, ...],
                   ) -> tuple[dict[str, Any], NodeType, int]:
        op = TABLE.get(node.op)
        if op is None:
            raise InvalidArgument(f"node {node.id!r}: unknown op {node.op!r}; known ops: "
                                  f"{', '.join(sorted(TABLE))}", node=node.id)
        if not op.takes(len(inputs)):
            raise InvalidArgument(f"node {node.id!r}: {op.name} takes {op.inputs_text} input(s), "
                                  f"got {len(inputs)}", node=node.id)
        attrs = normalize_attrs(op, node.attrs, node.id)
        try:
            shape = op.shape(*(t.shape for t in inputs), **attrs)
            dtype = _promote(op, inputs, attrs)
        except CrossgradError as error:
            raise type(error)(f"node {node.id!r} ({op.name}): {error.message}",
                              node=node.id) from None
        if all(t.weak for t in inputs):
            # Python numbers only: Python's arithmetic, and a Python number again.
            if shape:
                raise InvalidArgument(f"node {node.id!r}: {op.name} of scalar constants gives "
                                      f"shape {list(shape)}; it needs a tensor operand",
                                      node=node.id)
            if op.name == "pow":
                # 9**9**9: never compute a power of constants (Python would, exactly).
                raise InvalidArgument(f"node {node.id!r}: a power of constants is not "
                                      "computed; give its value", node=node.id)
            floating = (op.floating or any(t.dtype.is_floating_point for t in inputs)
                        or float in op.number_types(attrs))
            result = _WEAK_BOOL if op.boolean else _WEAK_FLOAT if floating else _WEAK_INT
        else:
            result = NodeType(shape, dtype)
        return attrs, result, self.sized(result, node.id)


def _promote(op: Op, inputs: Sequence[NodeType], attrs: Mapping[str, Any]) -> DType:
    """PyTorch's result dtype, the weak inputs and the op's promoting attributes taking part as
    Python numbers."""
    return op.result_dtype(computed_dtype(op, inputs, attrs))


def computed_dtype(op: Op, inputs: Sequence[NodeType], attrs: Mapping[str, Any]) -> DType:
    """The dtype ``op`` computes in on operands of these types (its result's, but for a
    comparison)."""
    return op.computed_dtype([_PYTHON_TYPE[t.dtype.name] if t.weak else (t.dtype, len(t.shape))
                              for t in inputs], attrs)


# --- leaf values ----------------------------------------------------------------------------------

def check_values(valid: ValidGraph, values: Mapping[str, npt.ArrayLike], *,
                 finite: bool = True) -> dict[str, np.ndarray]:
    """The value of each leaf the graph uses, as an array of its declared dtype.

    Each must be given, have the declared shape, convert to the declared dtype within its kind
    (an int to a float, not a float to an int) and, if ``finite``, be finite; ``InvalidArgument``
    names the leaf node otherwise. Values for names the graph does not use are ignored. (The
    check's own evaluations pass ``finite=False``: a session's leaves may hold NaN, as tensors
    do, and their gradients are still checked as far as they can be.)
    """
    node_of = {node.name: node.id for node in valid.order if isinstance(node, Leaf)}
    arrays = {}
    for name, (shape, dtype) in valid.leaves.items():
        node = node_of[name]
        if name not in values:
            raise InvalidArgument(f"node {node!r}: no value for leaf {name!r}", node=node)
        array = checked_array(values[name], shape, f"the value of leaf {name!r}", node, finite)
        if not np.can_cast(array.dtype, dtype.numpy, "same_kind"):
            raise InvalidArgument(f"node {node!r}: the value of leaf {name!r} has dtype "
                                  f"{array.dtype}, which does not convert to {dtype}", node=node)
        arrays[name] = array.astype(dtype.numpy, copy=False)
    return arrays


def checked_array(value: npt.ArrayLike, shape: Shape, what: str, node: str,
                  finite: bool = True) -> np.ndarray:
    """``value`` as an array of numbers of the given shape (with finite values, if ``finite``)."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise InvalidArgument(f"node {node!r}: {what} is not an array: {error}",
                              node=node) from None
    if array.dtype.kind not in "fiub":
        raise InvalidArgument(f"node {node!r}: {what} must hold numbers, got dtype "
                              f"{array.dtype}", node=node)
    if array.shape != shape:
        raise InvalidArgument(f"node {node!r}: {what} has shape {list(array.shape)}, expected "
                              f"{list(shape)}", node=node)
    if finite and array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidArgument(f"node {node!r}: {what} is not finite", node=node)
    return array
