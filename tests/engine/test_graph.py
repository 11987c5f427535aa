"""The graph IR: validation (each refusal names its node), types, structural keys, evaluation."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import crossgrad.engine as cg
import numpy as np
import pytest
from crossgrad.engine.errors import (
    CrossgradError,
    DimensionError,
    InvalidArgument,
    LimitExceeded,
    ShapeError,
    UsageError,
)
from crossgrad.engine.evaluation import evaluate
from crossgrad.engine.formula import parse
from crossgrad.engine.graph import (
    DEFAULT_LIMITS,
    Constant,
    Graph,
    Leaf,
    Limits,
    Node,
    NodeType,
    Operation,
    ValidGraph,
    check_values,
    validate,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st

F32, F64, I64 = cg.float32, cg.float64, cg.int64
LEAVES = {"x": ((3,), F32), "s": ((), F32), "d": ((), F64), "k": ((3,), I64)}


def op(node_id: str, name: str, *inputs: str, **attrs: Any) -> Operation:
    return Operation(node_id, name, inputs, attrs)


def check(*nodes: Node, output: str | None = None, limits: Limits = DEFAULT_LIMITS) -> ValidGraph:
    return validate(Graph(nodes, output or nodes[-1].id), LEAVES, limits)


X, S = Leaf("x", "x"), Leaf("s", "s")


# --- refusals ---------------------------------------------------------------------------------

Case = Callable[[], object]
REFUSALS: list[tuple[str, Case, type[CrossgradError], str | None, str]] = [
    # (what, the call, error type, the node it names, a part of the message)
    ("unknown op", lambda: check(X, op("y", "sinn", "x")),
     InvalidArgument, "y", "unknown op 'sinn'; known ops: abs, acos, add"),
    ("too few inputs", lambda: check(X, op("y", "add", "x")),
     InvalidArgument, "y", "add takes 2 input(s), got 1"),
    ("too many inputs", lambda: check(X, op("y", "sin", "x", "x")),
     InvalidArgument, "y", "sin takes 1 input(s), got 2"),
    ("unknown attribute", lambda: check(X, op("y", "sum", "x", axis=0)),
     InvalidArgument, "y", "sum has no attribute 'axis' (its attributes: dim, keepdim)"),
    ("attribute of an op without any", lambda: check(X, op("y", "sin", "x", dim=0)),
     InvalidArgument, "y", "sin has no attribute 'dim' (its attributes: none)"),
    ("missing attribute", lambda: check(X, op("y", "transpose", "x", dim0=0)),
     InvalidArgument, "y", "transpose needs the attribute 'dim1'"),
    ("dims as a string", lambda: check(X, op("y", "sum", "x", dim="0")),
     InvalidArgument, "y", "attribute 'dim' of sum must be an int, a sequence of ints or None"),
    ("bool as a number", lambda: check(X, op("y", "clamp", "x", min=True)),
     InvalidArgument, "y", "attribute 'min' of clamp must be a finite number or None"),
    ("non-finite bound", lambda: check(X, op("y", "clamp", "x", max=float("nan"))),
     InvalidArgument, "y", "must be a finite number"),
    ("int as a bool", lambda: check(X, op("y", "sum", "x", keepdim=1)),
     InvalidArgument, "y", "attribute 'keepdim' of sum must be a bool"),
    ("float as an int", lambda: check(X, op("y", "transpose", "x", dim0=0, dim1=1.0)),
     InvalidArgument, "y", "attribute 'dim1' of transpose must be an int"),
    ("None where required", lambda: check(X, op("y", "reshape", "x", shape=None)),
     InvalidArgument, "y", "attribute 'shape' of reshape must be an int or a sequence of ints"),
    ("dangling input", lambda: check(X, op("y", "mul", "x", "z")),
     InvalidArgument, "y", "input 'z' is not in the graph"),
    ("input id not a string", lambda: check(X, Operation("y", "neg", (0,))),
     InvalidArgument, "y", "input 0 is not a node id"),
    ("duplicate id", lambda: check(X, op("y", "sin", "x"), op("y", "cos", "x")),
     InvalidArgument, "y", "node id 'y' is used twice"),
    ("empty id", lambda: check(X, op("", "sin", "x")),
     InvalidArgument, None, "a node id must be a non-empty string"),
    ("not a node", lambda: check("x", X),
     InvalidArgument, None, "a graph node must be a Leaf, Constant or Operation, got str"),
    ("cycle", lambda: check(X, op("a", "add", "x", "b"), op("b", "sin", "a"), op("c", "neg", "b")),
     InvalidArgument, "a", "node 'a' is on a cycle: 'a' -> 'b' -> 'a'"),
    ("self loop", lambda: check(X, op("a", "mul", "x", "a")),
     InvalidArgument, "a", "node 'a' is on a cycle: 'a' -> 'a'"),
    ("unknown leaf", lambda: check(Leaf("q", "nope")),
     InvalidArgument, "q", "unknown leaf 'nope' (declared leaves: d, k, s, x)"),
    ("leaf declared badly", lambda: validate(Graph((X,), "x"), {"x": ((-1,), F32)}),
     InvalidArgument, "x", "must be declared as (shape, dtype) with sizes >= 0"),
    ("output not found", lambda: check(X, op("y", "sin", "x"), output="z"),
     InvalidArgument, "z", "the output node 'z' is not in the graph"),
    ("broadcast mismatch", lambda: validate(
        Graph((X, Leaf("v", "v"), op("y", "add", "x", "v")), "y"),
        {"x": ((3,), F32), "v": ((4,), F32)}),
     ShapeError, "y", "node 'y' (add): The size of tensor a (3) must match the size of tensor b"),
    ("matmul mismatch", lambda: check(X, S, op("y", "matmul", "x", "s")),
     ShapeError, "y", "both arguments to matmul need to be at least 1D"),
    ("reshape mismatch", lambda: check(X, op("y", "reshape", "x", shape=(2, 2))),
     ShapeError, "y", "shape '[2, 2]' is invalid for input of size 3"),
    ("dim out of range", lambda: check(X, op("y", "sum", "x", dim=1)),
     DimensionError, "y", "Dimension out of range (expected to be in range of [-1, 0], but got 1)"),
    ("non-finite constant", lambda: check(Constant("c", np.array([1.0, np.inf]))),
     InvalidArgument, "c", "constant is not finite"),
    ("string constant", lambda: check(Constant("c", np.array("abc"))),
     InvalidArgument, "c", "constants must be numbers or booleans"),
    ("ragged constant", lambda: Constant("c", [[1.0], [2.0, 3.0]]),
     InvalidArgument, "c", "constant is not an array"),
    ("power of constants", lambda: check(Constant("a", np.array(9)), Constant("b", np.array(9)),
                                         op("p", "pow", "a", "b")),
     InvalidArgument, "p", "a power of constants is not computed"),
    ("reshape of a number", lambda: check(Constant("a", np.array(2.0)),
                                          op("r", "reshape", "a", shape=[1])),
     InvalidArgument, "r", "reshape of scalar constants gives shape [1]; it needs a tensor"),
    ("oversized leaf", lambda: validate(Graph((X,), "x"), {"x": ((2000, 1000), F32)}),
     LimitExceeded, "x", "a tensor of shape [2000, 1000] is over the limit of 1000000 elements"),
    ("oversized result", lambda: validate(
        Graph((Leaf("r", "r"), Leaf("c", "c"), op("y", "mul", "r", "c")), "y"),
        {"r": ((1001, 1), F32), "c": ((1, 1000), F32)}),
     LimitExceeded, "y", "a tensor of shape [1001, 1000] is over the limit"),
    ("oversized constant", lambda: check(Constant("c", np.zeros(11)),
                                         limits=Limits(max_elements=10)),
     LimitExceeded, "c", "over the limit of 10 elements"),
    ("too many nodes", lambda: check(X, op("a", "sin", "x"), op("b", "sin", "a"),
                                     limits=Limits(max_nodes=2)),
     LimitExceeded, None, "the graph has 3 nodes; the limit is 2"),
    ("too many elements in all", lambda: check(X, op("a", "sin", "x"), op("b", "sin", "a"),
                                               limits=Limits(max_total_elements=8)),
     LimitExceeded, "b", "the graph's tensors hold more than 8 elements together"),
]


@pytest.mark.parametrize(("call", "error", "node", "message"), [r[1:] for r in REFUSALS],
                         ids=[r[0] for r in REFUSALS])
def test_validation_refuses_naming_the_node(call: Case, error: type[CrossgradError],
                                            node: str | None, message: str) -> None:
    with pytest.raises(error) as caught:
        call()
    assert caught.value.node == node
    assert message in caught.value.message
    assert caught.value.status in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED")
    assert isinstance(caught.value, InvalidArgument) or error in (ShapeError, DimensionError)


def test_the_first_problem_in_declaration_order_is_reported() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check(X, op("a", "sin", "nowhere"), op("b", "sin", "elsewhere"))
    assert caught.value.node == "a"


# --- types ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("nodes", "expected"), [
    ((X, Constant("two", np.array(2)), op("y", "pow", "x", "two")), ((3,), F32)),
    ((Leaf("k", "k"), Constant("h", np.array(2.5)), op("y", "mul", "k", "h")), ((3,), F32)),
    ((Leaf("k", "k"), op("y", "sin", "k")), ((3,), F32)),  # op.floating
    ((Leaf("k", "k"), op("y", "sum", "k")), ((), I64)),
    ((Leaf("k", "k"), op("y", "mean", "k", dim=0, keepdim=True)), ((1,), F32)),
    ((X, Leaf("d", "d"), op("y", "add", "x", "d")), ((3,), F32)),  # dims over 0-d
    ((S, Leaf("d", "d"), op("y", "add", "s", "d")), ((), F64)),
    ((X, Constant("v", np.array([1.0, 2.0, 3.0])), op("y", "add", "x", "v")), ((3,), F64)),
    ((X, Constant("v", np.array([1, 2, 3])), op("y", "mul", "v", "x")), ((3,), F32)),
    ((X, op("y", "matmul", "x", "x")), ((), F32)),
    ((Constant("a", np.array(1)), Constant("b", np.array(3)), op("y", "div", "a", "b")),
     ((), F64)),  # a Python float: weak
])
def test_shapes_and_dtypes_follow_pytorch(nodes: tuple[Node, ...],
                                          expected: tuple[tuple[int, ...], cg.DType]) -> None:
    valid = check(*nodes)
    assert valid.types["y"][:2] == expected
    values = {"x": [1.0, 2.0, 3.0], "s": 2.0, "d": 0.5, "k": [1, 2, 3]}
    value, _ = evaluate(valid, values, wrt=[])
    assert (value.shape, value.dtype) == (expected[0], expected[1].numpy)


def test_valid_graph_lists_the_leaves_used_and_a_topological_order() -> None:
    valid = check(op("y", "mul", "a", "x"), op("a", "sin", "x"), X, output="y")
    assert [n.id for n in valid.order] == ["x", "a", "y"]
    assert dict(valid.leaves) == {"x": ((3,), F32)}
    assert valid.types["a"] == NodeType((3,), F32)


def test_attributes_are_normalized() -> None:
    valid = check(X, op("y", "sum", "x", dim=0), op("z", "clamp", "y", min=0))
    attrs = {n.id: dict(n.attrs) for n in valid.order if isinstance(n, Operation)}
    assert attrs == {"y": {"dim": (0,), "keepdim": False}, "z": {"min": 0.0, "max": None}}


# Leaves and constants of each dtype the engine promotes between, for random graphs.
ATOMS: list[Node] = [Leaf("a", "a"), Leaf("b", "b"), Leaf("k", "k"), Leaf("j", "j"),
                     Constant("two", np.array(2)), Constant("half", np.array(0.5)),
                     Constant("vec", np.array([1.0, 2.0, 3.0])), Constant("ivec", np.array([1, 2]))]
ATOM_LEAVES = {"a": ((3,), F32), "b": ((), F64), "k": ((3,), I64), "j": ((), I64)}
ATOM_VALUES = {"a": [0.5, 1.5, 2.5], "b": 1.25, "k": [1, 2, 3], "j": 2}
RANDOM_OPS = ["add", "sub", "mul", "div", "pow", "neg", "exp", "sin", "sqrt", "relu", "abs",
              "sum", "mean", "matmul", "detach"]


@st.composite
def random_graphs(draw: st.DrawFn) -> Graph:
    nodes = list(ATOMS)
    for i in range(draw(st.integers(1, 8))):
        name = draw(st.sampled_from(RANDOM_OPS))
        arity = cg.ops.TABLE[name].arity
        inputs = tuple(draw(st.sampled_from([n.id for n in nodes])) for _ in range(arity))
        nodes.append(Operation(f"n{i}", name, inputs))
    return Graph(tuple(nodes), nodes[-1].id)


@settings(max_examples=200, deadline=None)
@given(random_graphs())
def test_inferred_types_are_the_types_the_engine_computes(graph: Graph) -> None:
    try:
        valid = validate(graph, ATOM_LEAVES)
    except CrossgradError:
        assume(False)
    for node in valid.order:
        t = valid.types[node.id]
        if t.weak:
            continue
        one = validate(Graph(graph.nodes, node.id), ATOM_LEAVES)
        try:
            value, _ = evaluate(one, ATOM_VALUES, wrt=[])
        except (InvalidArgument, UsageError):
            # Values the engine refuses (int64 overflow), a call PyTorch refuses (an integer
            # tensor to a negative number's power).
            assume(False)
        assert value.shape == t.shape and value.dtype == t.dtype.numpy, node


# --- a deep graph -----------------------------------------------------------------------------

def chain(n: int) -> tuple[list[Node], str]:
    """x * c * c * ... : n nodes."""
    nodes: list[Node] = [Leaf("x", "x"), Constant("c", np.array(1.0001))]
    previous = "x"
    for i in range(n - 2):
        nodes.append(Operation(f"m{i}", "mul", (previous, "c")))
        previous = f"m{i}"
    return nodes, previous


def test_a_100k_node_chain_validates_and_evaluates_without_recursion() -> None:
    n = 100_000
    assert n > sys.getrecursionlimit()
    nodes, output = chain(n)
    start = time.perf_counter()
    valid = validate(Graph(tuple(nodes), output), {"x": ((), F64)})
    seconds = time.perf_counter() - start
    assert seconds < 2.0  # typically a third of that: linear, no quadratic step
    value, grads = evaluate(valid, {"x": 0.5})
    assert value == pytest.approx(0.5 * 1.0001 ** (n - 2), rel=1e-9)
    assert grads["x"] == pytest.approx(1.0001 ** (n - 2), rel=1e-9)


def test_a_100k_node_chain_declared_backwards_is_sorted() -> None:
    nodes, output = chain(100_000)
    start = time.perf_counter()
    valid = validate(Graph(tuple(reversed(nodes)), output), {"x": ((), F64)})
    assert time.perf_counter() - start < 3.0
    assert valid.order[0].id == "c" and valid.order[-1].id == output


# --- structural keys --------------------------------------------------------------------------

def key(text: str, shape: tuple[int, ...] = (3,), dtype: cg.DType = F32) -> str:
    return validate(parse(text), {"x": (shape, dtype), "y": (shape, dtype)}).structural_key()


def test_structural_key_ignores_values_and_ids() -> None:
    assert key("sin(x**2)") == key("sin(x**3)") == key("  sin(x ** 7)")
    assert key("clamp(x, 0, 1) * 2") == key("clamp(x, 0, 1) * 5")
    a = Graph((X, Constant("c", np.array([1.0, 2.0, 3.0])), op("y", "mul", "x", "c")), "y")
    b = Graph((Leaf("leaf", "x"), Constant("k", np.array([4.0, 5.0, 6.0])),
               op("out", "mul", "leaf", "k")), "out")
    assert validate(a, LEAVES).structural_key() == validate(b, LEAVES).structural_key()


@pytest.mark.parametrize(("a", "b"), [
    ("sin(x**2)", "cos(x**2)"),  # op
    ("sin(x**2)", "sin(x**2.0)"),  # a Python int exponent or a float one
    ("sum(x, dim=0)", "sum(x, dim=0, keepdim=True)"),  # attributes
    ("clamp(x, 0, 1)", "clamp(x, 0, 2)"),
    ("x - y", "y - x"),  # edges
    ("x * x", "x * y"),
    ("sin(x)", "sin(y)"),  # leaf names
])
def test_structural_key_differs_with_structure(a: str, b: str) -> None:
    assert key(a) != key(b)


def test_structural_key_differs_with_shapes_and_dtypes() -> None:
    assert key("sin(x)") != key("sin(x)", shape=(4,))
    assert key("sin(x)") != key("sin(x)", dtype=F64)


# --- evaluation -------------------------------------------------------------------------------

def test_gradients_default_to_the_floating_leaves_the_output_depends_on() -> None:
    text = "sum(x * detach(y)) + sum(k)"
    shapes = {"x": ((3,), F32), "y": ((3,), F32), "k": ((3,), I64)}
    valid = validate(parse(text), shapes)
    value, grads = evaluate(valid, {"x": [1.0, 2.0, 3.0], "y": [4.0, 5.0, 6.0], "k": [1, 2, 3]})
    assert value == pytest.approx(32.0 + 6)
    assert grads.keys() == {"x"}  # y only through detach; k is an integer leaf
    np.testing.assert_array_equal(grads["x"], [4.0, 5.0, 6.0])
    _, grads = evaluate(valid, {"x": [1.0, 2.0, 3.0], "y": [4.0, 5.0, 6.0], "k": [1, 2, 3]},
                        wrt=["y"])
    assert grads == {}


def test_clamp_bounds_promote_as_python_numbers() -> None:
    # PyTorch: an int64 tensor clamped to an int stays int64, to a float bound is float32; a
    # graph's bounds are floats (attributes are normalized), so clamping an int leaf gives float32.
    for bound, dtype in ((0, cg.int64), (0.5, F32)):
        assert cg.clamp(cg.tensor([1, 2, 3]), max=bound).dtype == dtype
    valid = validate(Graph((Leaf("k", "k"), Operation("c", "clamp", ("k",), {"max": 0.5})), "c"),
                     {"k": ((3,), I64)})
    assert valid.types["c"].dtype == F32
    value, _ = evaluate(valid, {"k": [1, 2, 3]})
    assert value.dtype == np.float32
    np.testing.assert_array_equal(value, [0.5, 0.5, 0.5])


def test_non_scalar_outputs_need_a_seed() -> None:
    valid = validate(parse("x * 2"), {"x": ((3,), F32)})
    with pytest.raises(UsageError, match="implicitly created only for scalar outputs") as caught:
        evaluate(valid, {"x": [1.0, 2.0, 3.0]})
    assert caught.value.node == "mul@1"
    value, grads = evaluate(valid, {"x": [1.0, 2.0, 3.0]}, seed=[1.0, 0.0, -1.0])
    np.testing.assert_array_equal(value, [2.0, 4.0, 6.0])
    np.testing.assert_array_equal(grads["x"], [2.0, 0.0, -2.0])
    value, grads = evaluate(valid, {"x": [1.0, 2.0, 3.0]}, wrt=[])  # nothing to differentiate
    assert grads == {}


def test_the_output_may_be_a_leaf_or_a_constant() -> None:
    valid = validate(parse("x"), {"x": ((), F32)})
    assert evaluate(valid, {"x": 3.0}) == (3.0, {"x": 1.0})
    value, grads = evaluate(validate(parse("1 / 4"), {}), {})
    assert value == 0.25 and value.dtype == np.float64 and grads == {}


def test_leaf_values_take_the_declared_dtype() -> None:
    valid = validate(parse("x * k"), {"x": ((2,), F32), "k": ((2,), I64)})
    arrays = check_values(valid, {"x": np.array([1, 2]), "k": [3, 4], "unused": "ignored"})
    assert arrays.keys() == {"x", "k"}
    assert (arrays["x"].dtype, arrays["k"].dtype) == (np.float32, np.int64)
    value, _ = evaluate(valid, {"x": np.array([1, 2]), "k": [3, 4]}, seed=[1, 1])
    assert value.dtype == np.float32


def test_only_what_the_output_depends_on_runs() -> None:
    dead = (Constant("one", np.array(1)), Constant("zero", np.array(0)),
            op("boom", "div", "one", "zero"))
    valid = check(*dead, S, op("y", "sin", "s"))
    assert "boom" in valid.types  # validated all the same
    value, _ = evaluate(valid, {"s": 0.0})
    assert value == 0.0


def test_evaluation_differentiates_even_under_no_grad() -> None:
    valid = validate(parse("x ** 2"), {"x": ((), F32)})
    with cg.no_grad():
        _, grads = evaluate(valid, {"x": 3.0})
    assert grads["x"] == 6.0
    assert cg.is_grad_enabled()


EVALUATION_ERRORS: list[tuple[str, dict[str, Any], dict[str, Any], str | None, str]] = [
    # (formula, values, keyword arguments, the node named, a part of the message)
    ("x * 2", {}, {}, "x", "no value for leaf 'x'"),
    ("x * 2", {"x": [1.0, 2.0]}, {}, "x", "has shape [2], expected [3]"),
    ("x * 2", {"x": [1.0, np.nan, 2.0]}, {}, "x", "the value of leaf 'x' is not finite"),
    ("x * 2", {"x": ["a", "b", "c"]}, {}, "x", "must hold numbers"),
    ("sum(k * 2)", {"k": [1.5, 2.0, 3.0]}, {}, "k", "dtype float64, which does not convert"),
    ("x * 2", {"x": [1.0, 2.0, 3.0]}, {"seed": [1.0]}, "mul@1", "the seed for output"),
    ("x * 2", {"x": [1.0, 2.0, 3.0]}, {"seed": [1.0, np.inf, 1.0]}, "mul@1", "is not finite"),
    ("x * 2", {"x": [1.0, 2.0, 3.0]}, {"wrt": ["y"]}, None, "the graph has no such leaf"),
    ("sum(k * 2)", {"k": [1, 2, 3]}, {"wrt": ["k"]}, None, "only leaves of floating dtype"),
    # abs() keeps these from the parser's folding of numbers, so that evaluation meets them.
    ("sum(x) * (1 / abs(2 - 2))", {"x": [1.0, 2.0, 3.0]}, {}, "div@11", "division by zero"),
    ("sum(x) * (abs(1000000000000000) * 1000000000000000)", {"x": [1.0, 2.0, 3.0]}, {}, "mul@11",
     "out of int64 range"),
]


@pytest.mark.parametrize(("text", "values", "kwargs", "node", "message"), EVALUATION_ERRORS,
                         ids=[f"{t}-{m[:20]}" for t, _, _, _, m in EVALUATION_ERRORS])
def test_evaluation_refuses_naming_the_node(text: str, values: dict[str, Any],
                                            kwargs: dict[str, Any], node: str | None,
                                            message: str) -> None:
    valid = validate(parse(text), {"x": ((3,), F32), "k": ((3,), I64)})
    with pytest.raises(InvalidArgument) as caught:
        evaluate(valid, values, **kwargs)
    assert caught.value.node == node
    assert message in caught.value.message


def test_a_negative_number_as_an_integer_power_is_refused_as_pytorch_refuses_it() -> None:
    # A RuntimeError in PyTorch (an integer tensor to a tensor of negative powers is computed).
    valid = validate(parse("sum(k ** -1)"), {"k": ((3,), I64)})
    with pytest.raises(UsageError, match="Integers to negative integer powers") as caught:
        evaluate(valid, {"k": [1, 2, 3]})
    assert caught.value.node == "pow@5"


# --- nodes ------------------------------------------------------------------------------------

def test_nodes_are_immutable_values() -> None:
    data = np.array([1.0, 2.0])
    c = Constant("c", data)
    data[0] = 5.0
    assert c.value[0] == 1.0 and not c.value.flags.writeable
    assert c == Constant("c", np.array([1.0, 2.0])) and c != Constant("c", np.array([1.0, 3.0]))
    o = Operation("y", "sum", ["x"], {"dim": 0})
    assert o.inputs == ("x",)
    with pytest.raises(TypeError):
        o.attrs["dim"] = 1
