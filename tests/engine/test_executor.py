"""The executor runs a graph as the eager engine runs it op by op: same values, gradients,
grad_fn names and errors, bit for bit."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import crossgrad.engine as cg
import numpy as np
import pytest
from crossgrad.engine.errors import CrossgradError, InvalidArgument, UsageError
from crossgrad.engine.evaluation import run
from crossgrad.engine.executor import Executor, Sweep, blame
from crossgrad.engine.formula import parse
from crossgrad.engine.graph import (
    Constant,
    Graph,
    Leaf,
    Node,
    NodeType,
    Operation,
    ValidGraph,
    ancestors,
    check_values,
    validate,
)
from crossgrad.engine.ops import TABLE
from crossgrad.engine.tensor import Tensor, apply
from hypothesis import given, settings
from hypothesis import strategies as st

F32, F64, I64 = cg.float32, cg.float64, cg.int64
LEAVES = {"a": ((3,), F32), "b": ((2, 3), F32), "c": ((), F64), "d": ((), F32),
          "k": ((3,), I64)}
CONSTANTS = [np.array(2), np.array(0.5), np.array(-3), np.array(True),
             np.array([0.25, -1.5, 2.0], dtype=np.float32), np.array([[1, 2, 3], [4, 5, 6]]),
             np.array(1.5, dtype=np.float32)]
Tensors = tuple[dict[str, Tensor], dict[str, Any]]  # leaves by name, nodes by id


def eager_run(valid: ValidGraph, values: Mapping[str, np.ndarray], tracking: Sequence[str],
              roots: Sequence[str]) -> Tensors:
    """The graph as a program on the eager engine: each op ``apply``-ed to tensors in order
    (ops on weak scalars alone in Python's arithmetic), its errors naming its node."""
    leaves = {name: cg.tensor(values[name], requires_grad=name in tracking)
              for name in valid.leaves}
    env: dict[str, Any] = {}
    needed = ancestors(valid, roots)
    with np.errstate(all="ignore"):
        for node in valid.order:
            if node.id not in needed:
                continue
            if isinstance(node, Leaf):
                env[node.id] = leaves[node.name]
            elif isinstance(node, Constant):
                env[node.id] = node.value.item() if not node.value.ndim else cg.tensor(node.value)
            else:
                env[node.id] = eager_op(node, [env[i] for i in node.inputs],
                                        valid.types[node.id])
    return leaves, env


def eager_op(node: Operation, args: list[Any], result: NodeType) -> Any:
    op = TABLE[node.op]
    try:
        if not result.weak:
            return apply(op, tuple(args), dict(node.attrs))
        value = op.forward(*args, **node.attrs)
        if result.dtype is cg.bool:
            return bool(value)  # a comparison of Python numbers
        return float(value) if result.dtype.is_floating_point else int(value)
    except (CrossgradError, ArithmeticError, ValueError, TypeError) as error:
        reported = blame(node, error)
        if reported is error:
            raise
        raise reported from error


def backward(valid: ValidGraph, tensors: Tensors, retain: Sequence[str],
             seed: np.ndarray | None) -> Sweep:
    """Tensor.backward from the output, the nodes ``retain`` retaining their gradients."""
    leaves, env = tensors
    out = env[valid.output]
    if not isinstance(out, Tensor) or not out.requires_grad:
        raise UsageError("element 0 of tensors does not require grad and does not have a "
                         "grad_fn")
    kept = [i for i in retain if not isinstance(node_of(valid, i), Leaf)]
    for node_id in kept:
        tensor = env[node_id]
        if not isinstance(tensor, Tensor) or not tensor.requires_grad:
            raise UsageError(f"node {node_id!r}: can't retain_grad on Tensor that has "
                             "requires_grad=False")
        tensor.retain_grad()
    with np.errstate(all="ignore"):
        out.backward(seed)
    grads = {name: t.grad.numpy() for name, t in leaves.items() if t.grad is not None}
    retained = {}
    for node_id in kept:
        grad = env[node_id].grad
        if grad is not None:
            retained[node_id] = grad.numpy()
    return Sweep(out.detach().numpy(), grads, retained)


def eager(valid: ValidGraph, values: Mapping[str, np.ndarray], tracking: Sequence[str],
          retain: Sequence[str], seed: np.ndarray | None) -> Sweep:
    """What the eager engine gives: the graph as its program, retain_grad, backward."""
    return backward(valid, eager_run(valid, values, tracking, [*retain, valid.output]), retain,
                    seed)


def described(tensors: Tensors) -> dict[str, Any]:
    """Each node's value as Evaluate reports it: the value, requires_grad, the grad_fn's name."""
    return {node_id: (t.requires_grad, t.grad_fn and t.grad_fn.name(), t.dtype, t.shape,
                      t.detach().numpy().tobytes()) if isinstance(t, Tensor) else (type(t), repr(t))
            for node_id, t in tensors[1].items()}


def node_of(valid: ValidGraph, node_id: str) -> Node:
    return next(node for node in valid.order if node.id == node_id)


def outcome(compute: Any) -> Any:
    try:
        return compute()
    except CrossgradError as error:
        return type(error), str(error)


def assert_same(got: Any, reference: Any) -> None:
    assert type(got) is type(reference)
    if not isinstance(got, Sweep):
        assert got == reference
        return
    identical(got.value, reference.value)
    assert got.grads.keys() == reference.grads.keys()
    for name in got.grads:
        identical(got.grads[name], reference.grads[name])
    assert got.retained.keys() == reference.retained.keys()
    for name in got.retained:
        identical(got.retained[name], reference.retained[name])


def identical(got: np.ndarray, want: np.ndarray) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert (got.dtype, got.shape) == (want.dtype, want.shape)
    assert np.array_equal(got, want, equal_nan=True), (got, want)


def attrs_for(draw: st.DrawFn, name: str) -> dict[str, Any]:
    number = st.one_of(st.none(), st.floats(-2, 2))
    dims = st.one_of(st.none(), st.integers(-2, 1), st.lists(st.integers(0, 1), min_size=1,
                                                             max_size=2, unique=True))
    choices: dict[str, Callable[[], dict[str, Any]]] = {
        "clamp": lambda: {"min": draw(number), "max": draw(number)},
        "sum": lambda: {"dim": draw(dims), "keepdim": draw(st.booleans())},
        "mean": lambda: {"dim": draw(dims), "keepdim": draw(st.booleans())},
        "reshape": lambda: {"shape": draw(st.sampled_from([[-1], [3, -1], [-1, 1], []]))},
        "transpose": lambda: {"dim0": draw(st.integers(-2, 1)), "dim1": draw(st.integers(-2, 1))},
        "permute": lambda: {"dims": draw(st.sampled_from([[0], [1, 0], [0, 1]]))},
    }
    return choices.get(name, dict)()


@st.composite
def graphs(draw: st.DrawFn) -> tuple[ValidGraph, list[str], list[str]]:
    """A random valid graph over LEAVES and CONSTANTS (every op of the table may appear), the
    leaves that require grad, and nodes to retain."""
    nodes: list[Node] = [Constant(f"const_{i}", CONSTANTS[i]) for i in
                         draw(st.lists(st.integers(0, len(CONSTANTS) - 1), max_size=3,
                                       unique=True))]
    # A name may repeat: two leaf nodes then bind one tensor, whose gradient sums both.
    nodes += [Leaf(f"leaf{i}_{name}", name) for i, name in enumerate(
        draw(st.lists(st.sampled_from(sorted(LEAVES)), min_size=1, max_size=4)))]
    valid = None
    for k in range(draw(st.integers(1, 10))):
        name = draw(st.sampled_from(sorted(TABLE)))
        # Mostly the newest nodes, so the graph grows deep rather than wide.
        recent = st.one_of(st.sampled_from(nodes[-2:]), st.sampled_from(nodes))
        inputs = [draw(recent).id for _ in range(TABLE[name].arity)]
        candidate = Operation(f"n{k}", name, inputs, attrs_for(draw, name))
        try:
            valid = validate(Graph((*nodes, candidate), candidate.id), LEAVES)
        except CrossgradError:
            continue  # shapes or attributes that do not fit: draw another op
        nodes.append(candidate)
    if valid is None:
        valid = validate(Graph(tuple(nodes), nodes[-1].id), LEAVES)
    # Usually leaves the output depends on require grad (else backward is refused: tested too).
    used = ancestors(valid, [valid.output])
    floating = sorted({n.name for n in valid.order if type(n) is Leaf and n.id in used
                       and valid.leaves[n.name][1].is_floating_point})
    # Now and then an int leaf too, which the engine refuses to track.
    others = sorted(n for n, (_, d) in valid.leaves.items()
                    if d.is_floating_point or draw(st.sampled_from([False] * 9 + [True])))
    tracking = draw(st.lists(st.sampled_from(others), unique=True)) if others else []
    if floating and draw(st.sampled_from([True] * 9 + [False])):
        tracking = sorted({*tracking, draw(st.sampled_from(floating))})
    ids = [node.id for node in valid.order]
    operations = [node.id for node in valid.order if type(node) is Operation]
    retain = draw(st.lists(st.sampled_from(operations or ids), max_size=3))
    if draw(st.booleans()):
        retain.append(draw(st.sampled_from(ids)))  # a leaf or constant too, now and then
    return valid, tracking, retain


@st.composite
def values_for(draw: st.DrawFn, valid: ValidGraph) -> dict[str, np.ndarray]:
    values = {}
    for name, (shape, dtype) in valid.leaves.items():
        elements = st.floats(-3, 3, width=32) if dtype.is_floating_point else st.integers(-3, 3)
        size = int(np.prod(shape))
        numbers = draw(st.lists(elements, min_size=size, max_size=size))
        values[name] = np.array(numbers, dtype=dtype.numpy).reshape(shape)
    return check_values(valid, values)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_graphs_run_as_on_the_eager_engine(data: st.DataObject) -> None:
    valid, tracking, retain = data.draw(graphs())
    values = data.draw(values_for(valid))
    out = valid.types[valid.output]
    seed = None
    if out.shape and data.draw(st.sampled_from([True] * 9 + [False])):
        seed = np.asarray(data.draw(st.lists(st.floats(-2, 2), min_size=int(np.prod(out.shape)),
                                             max_size=int(np.prod(out.shape)))),
                          dtype=np.float64).reshape(out.shape)
    roots = [*retain, valid.output]
    try:
        tensors = eager_run(valid, values, tracking, roots)
    except CrossgradError as error:
        reference: Any = type(error), str(error)
        assert outcome(lambda: run(valid, values, tracking, roots, checked=True)) == reference
    else:
        recorded = run(valid, values, tracking, roots, checked=True)
        assert described(recorded) == described(tensors)  # what Evaluate reports
        reference = outcome(lambda: backward(valid, tensors, retain, seed))
        assert_same(outcome(lambda: backward(valid, recorded, retain, seed)), reference)
    assert_same(outcome(lambda: Executor(valid, tracking, retain)(values, seed)), reference)


def compiled(text: str, leaves: Mapping[str, Any], tracking: Sequence[str] = ("x",),
             retain: Sequence[str] = ()) -> tuple[ValidGraph, Executor]:
    valid = validate(parse(text), {n: (np.shape(v), cg.float32) for n, v in leaves.items()})
    return valid, Executor(valid, tracking, retain)


def test_an_executor_is_run_again_with_new_values() -> None:
    valid, executor = compiled("sin(x ** 2)", {"x": 4.0})
    for x in (4.0, -1.5, 0.0):
        values = check_values(valid, {"x": np.float32(x)})
        identical(executor(values).grads["x"],
                  eager(valid, values, ["x"], [], None).grads["x"])


def test_gradients_sum_in_the_eager_order() -> None:
    # x's three contributions are 1, 1e8 and -1e8; in float32 only the order -1e8, 1e8, 1 (the
    # eager engine's: last-in first-out from the root) sums to 1; any order that adds the 1
    # before both big ones gives 0.
    valid, executor = compiled("x * 1 + (x * 100000000 + x * -100000000)", {"x": 0.5})
    values = check_values(valid, {"x": np.float32(0.5)})
    assert eager(valid, values, ["x"], [], None).grads["x"] == 1.0
    assert_same(executor(values), eager(valid, values, ["x"], [], None))


def test_an_output_that_needs_no_grad_is_refused_after_the_forward() -> None:
    valid, executor = compiled("x * 2", {"x": 1.0}, tracking=())
    with pytest.raises(UsageError, match="does not require grad"):
        executor(check_values(valid, {"x": 1.0}))


def test_a_failing_op_names_its_node() -> None:
    valid = validate(Graph((Leaf("k", "k"), Constant("m", np.array(-1)),
                            Operation("p", "pow", ("k", "m"))), "p"), LEAVES)
    with pytest.raises(UsageError, match="Integers to negative integer powers") as raised:
        Executor(valid, [])(check_values(valid, {"k": np.array([1, 2, 3])}))
    assert raised.value.node == "p"


def test_of_two_failing_ops_the_first_in_order_is_named() -> None:
    # p2 depends on no leaf, so the executor computes it when built; it still fails after p1.
    nodes = (Leaf("k", "k"), Constant("ints", np.array([1, 2, 3])), Constant("m", np.array(-1)),
             Operation("p1", "pow", ("k", "m")), Operation("p2", "pow", ("ints", "m")),
             Operation("sum", "add", ("p1", "p2")))
    valid = validate(Graph(nodes, "sum"), LEAVES)
    values = check_values(valid, {"k": np.array([1, 2, 3])})
    for compute in (lambda: eager(valid, values, [], [], None),
                    lambda: Executor(valid, [])(values)):
        with pytest.raises(UsageError) as raised:
            compute()
        assert raised.value.node == "p1"
    executor = Executor(validate(Graph((*nodes[1:3], nodes[4]), "p2"), LEAVES), [])
    for _ in range(2):  # the same error on every call
        with pytest.raises(UsageError, match="negative integer powers") as raised:
            executor({})
        assert raised.value.node == "p2"


def test_retaining_an_unknown_node_is_refused() -> None:
    valid = validate(parse("x * 2"), {"x": ((), F32)})
    with pytest.raises(InvalidArgument, match="'nope' is not in the graph"):
        Executor(valid, ["x"], ["nope"])
