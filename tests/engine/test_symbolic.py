"""The symbolic derivation and its two evaluators, against the numeric engine and SymPy itself."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytest
import symengine as se
import sympy
from crossgrad.engine import dtypes, evaluation, formula, graph
from crossgrad.engine.closed_form import Fused, Program
from crossgrad.engine.graph import Constant, Graph, Leaf, Operation
from crossgrad.engine.ops import OPS, TABLE
from crossgrad.engine.symbolic import (
    Plan,
    constants_of,
    derive,
    elementwise_rule,
)
from hypothesis import given, settings
from hypothesis import strategies as st

F64 = dtypes.float64


def _plan(source: str | Graph, shapes: Mapping[str, tuple[int, ...]],
          wrt: Sequence[str] | None = None, hessian: bool = False,
          ) -> tuple[graph.ValidGraph, Plan]:
    g = formula.parse(source) if isinstance(source, str) else source
    valid = graph.validate(g, {n: (s, F64) for n, s in shapes.items()})
    return valid, Plan.of(valid, list(wrt if wrt is not None else shapes), hessian)


def _both(source: str | Graph, values: Mapping[str, Any],
          wrt: Sequence[str] | None = None) -> None:
    """Both evaluators give the numeric engine's value and gradient (float64, well inside)."""
    arrays = {n: np.asarray(v, dtype=np.float64) for n, v in values.items()}
    valid, plan = _plan(source, {n: a.shape for n, a in arrays.items()}, wrt)
    value, gradients = evaluation.evaluate(valid, arrays, plan.wrt)
    leaves = [arrays[name] for name, _ in plan.leaves]
    constants = constants_of(valid)
    for evaluator in (Fused(plan, derive(plan)), Program(plan)):
        result = evaluator(leaves, constants)
        np.testing.assert_allclose(result.value, value, rtol=1e-12, atol=1e-12)
        assert set(result.gradients) == set(gradients), type(evaluator).__name__
        for name, gradient in gradients.items():
            np.testing.assert_allclose(result.gradients[name], gradient, rtol=1e-10,
                                       atol=1e-12, err_msg=f"{type(evaluator).__name__} {name}")


ELEMENTWISE = [op for op in OPS if op.elementwise and not op.stops_gradient]
# Unary ops at points where they (or their derivatives) are undefined or infinite, which SymPy
# and SymEngine write differently (zoo, nan, inf): the fixed points below are skipped there.
_UNDEFINED: dict[str, Callable[[float], bool]] = {
    **dict.fromkeys(("log", "sqrt", "log2", "log10", "rsqrt"), lambda x: x <= 0),
    "log1p": lambda x: x <= -1,
    "reciprocal": lambda x: x == 0,
    **dict.fromkeys(("asin", "acos", "atanh"), lambda x: abs(x) >= 1),
}
_ATTRS = {"clamp": ({"min": -0.5, "max": 0.5}, {"min": 0.3}, {"max": -0.2}, {"min": 1, "max": -1})}


@pytest.mark.parametrize("op", ELEMENTWISE, ids=lambda op: op.name)
def test_symengine_agrees_with_sympy_on_every_elementwise_form(op: Any) -> None:
    """The rule is derived by sympy.diff and carried by SymEngine: both agree on the forward and
    on each partial at points on both sides of every kink and at the kinks themselves."""
    for attrs in _ATTRS.get(op.name, ({},)):
        rule = elementwise_rule(op.name, tuple(sorted(attrs.items())))
        symbols = sympy.symbols(f"t0:{op.arity}", real=True)
        forward = op.sympy(*symbols, **attrs)
        sympy_forms = [forward, *(sympy.diff(forward, s) for s in symbols)]
        engine_forms = [rule.forward, *rule.partials]
        lows = [low for low, _ in op.domain]
        highs = [high for _, high in op.domain]
        points = [np.linspace(lo, hi, 7) for lo, hi in zip(lows, highs, strict=True)]
        kinks = [0.0, -0.5, 0.5, 0.3, -0.2, 1.0, -1.0]
        for k in range(7 + len(kinks)):
            point = [p[k] if k < 7 else kinks[k - 7] for p in points]
            if _UNDEFINED.get(op.name, lambda x: False)(point[0]):
                continue
            if op.name == "div" and point[1] == 0:
                continue
            if op.name == "pow" and point[0] <= 0:
                continue
            at = dict(zip(symbols, point, strict=True))
            # Evaluated as the engine evaluates closed forms: compiled (SymEngine's n() has no
            # numeric atan2).
            actuals = se.Lambdify(list(rule.symbols), engine_forms, real=True)(point)
            for want, actual in zip(sympy_forms, actuals, strict=True):
                expected = complex(want.subs(at).evalf())
                assert actual == pytest.approx(expected, rel=1e-12, abs=1e-12), \
                    (op.name, attrs, point)


@pytest.mark.parametrize("op", ELEMENTWISE, ids=lambda op: op.name)
def test_each_elementwise_op_agrees_with_the_engine(op: Any) -> None:
    rng = np.random.default_rng(1)
    operands = ", ".join("xy"[:op.arity])
    for attrs in _ATTRS.get(op.name, ({},)):
        extra = "".join(f", {k}={v}" for k, v in attrs.items())
        call = {"add": "x + y", "sub": "x - y", "mul": "x * y", "div": "x / y",
                "pow": "x ** y", "neg": "-x",
                "where": "where(x > 0, x, y)"}.get(op.name, f"{op.name}({operands}{extra})")
        values = {n: rng.uniform(op.domain[k][0], op.domain[k][1], size=(2, 3)) for k, n in
                  enumerate("xy"[:op.arity])}
        _both(f"sum({call} * c)", {**values, "c": rng.uniform(-1, 1, (3,))})


def test_kinks_follow_pytorch_on_the_symbolic_side() -> None:
    at_kinks = {"x": np.array([0.0, -1.0, 1.0, 0.5, -0.5, 2.0])}
    _both("sum(relu(x) + abs(x) + clamp(x, -1, 0.5) + clamp(x, min=0.5))", at_kinks)
    _both("sum(clamp(x, 1, -1))", at_kinks)  # min > max: max everywhere, no gradient


@pytest.mark.parametrize("text, shapes", [
    ("sum(a @ b)", {"a": (2, 3), "b": (3,)}),
    ("sum(a @ b)", {"a": (3,), "b": (3, 2)}),
    ("a @ b", {"a": (3,), "b": (3,)}),
    ("sum(tanh(a @ b + c) * 2)", {"a": (4, 3), "b": (2, 3, 5), "c": (5,)}),
    ("mean(sum(relu(x - 1) * abs(y), 0, True) / sqrt(x))", {"x": (3, 4), "y": (4,)}),
    ("sum(mean(x, (0, 2)) * y)", {"x": (2, 3, 4), "y": (3,)}),
    ("sum(transpose(reshape(x, (3, 2)), 0, 1) ** 3)", {"x": (2, 3)}),
    ("sum(permute(x, (2, 0, 1)) * exp(permute(x, (2, 0, 1))))", {"x": (2, 3, 2)}),
    ("sum(detach(x) * x + cos(x) / tan(x))", {"x": (3,)}),
    ("sum(x * detach(x * detach(x)))", {"x": (3,)}),
    ("sum(x + y)", {"x": (2, 1), "y": (1, 3)}),  # both broadcast
    ("x * 0 + 3", {"x": ()}),
    ("sum(squeeze(x) * unsqueeze(squeeze(x, (0, 2)), 0) ** 2)", {"x": (1, 3, 1)}),
    ("sum(exp(flatten(x, 1)) * squeeze(x, 0))", {"x": (2, 3)}),
    ("sum(flatten(unsqueeze(x, -1)) ** 3)", {"x": (2, 2)}),
    ("sum(select(x, 1, -1) * slice(x, 1, 0, 3, 2) ** 2)", {"x": (2, 4)}),
    ("sum(exp(slice(select(x, 0, 1), 0, -2))) * sum(alias(x) ** 2)", {"x": (2, 3)}),
    ("sum(x[1:3, 0] ** 2) * sum(exp(x[..., -1])) + sum(x[None, ::2])", {"x": (4, 2)}),
    ("sum(cat([x, sin(y), x * y], 1) ** 2)", {"x": (2, 1), "y": (2, 1)}),
    ("sum(stack((x, y, exp(x)), -1) * cat([y[:1], x[1:2], y[2:]]))", {"x": (3,), "y": (3,)}),
])
def test_structural_ops_and_broadcasting(text: str, shapes: dict[str, tuple[int, ...]]) -> None:
    rng = np.random.default_rng(2)
    _both(text, {n: rng.uniform(0.5, 2.0, s) for n, s in shapes.items()})


def test_one_leaf_used_by_several_nodes_gets_every_contribution() -> None:
    g = Graph([Leaf("a", "x"), Leaf("b", "x"), Operation("m", "mul", ("a", "b")),
               Operation("s", "sin", ("m",))], "s")
    _both(g, {"x": 0.7})


def test_leaves_the_output_does_not_depend_on_get_no_gradient() -> None:
    _, plan = _plan("sin(x) + detach(y)", {"x": (), "y": ()})
    assert set(derive(plan).gradients) == {"x"}
    _both("sin(x) + detach(y)", {"x": 0.3, "y": 0.2})


def test_constants_are_symbols_so_one_derivation_serves_new_constants() -> None:
    first, plan = _plan("sin(x ** 2)", {"x": ()})
    second, other = _plan("sin(x ** 3)", {"x": ()})
    assert plan == other and first.structural_key() == second.structural_key()
    evaluator = Fused(plan, derive(plan))
    result = evaluator([np.array(1.5)], constants_of(second))
    assert float(result.gradients["x"]) == pytest.approx(3 * 1.5**2 * np.cos(1.5**3))


def test_seeded_non_scalar_output() -> None:
    _, plan = _plan("x * y", {"x": (3,), "y": (3,)})
    seed = np.array([1.0, -2.0, 0.5])
    x, y = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])
    for evaluator in (Fused(plan, derive(plan)), Program(plan)):
        result = evaluator([x, y], [], seed)
        np.testing.assert_allclose(result.gradients["x"], seed * y)
        np.testing.assert_allclose(result.gradients["y"], seed * x)


def test_hessian_closed_form() -> None:
    valid, plan = _plan("sin(x ** 2) * y", {"x": (), "y": ()}, hessian=True)
    result = Fused(plan, derive(plan))([np.array(1.2), np.array(0.5)], constants_of(valid))
    x, y = 1.2, 0.5
    assert float(result.hessian["x", "x"]) == pytest.approx(
        y * (2 * np.cos(x**2) - 4 * x**2 * np.sin(x**2)))
    assert float(result.hessian["x", "y"]) == pytest.approx(2 * x * np.cos(x**2))
    assert float(result.hessian["y", "y"]) == 0.0


def test_a_long_chain_derives_without_recursion() -> None:
    nodes: list[Any] = [Leaf("x", "x")]
    previous = "x"
    for k in range(3000):
        nodes.append(Constant(f"c{k}", np.array(1.0001)))
        nodes.append(Operation(f"n{k}", "sin" if k % 2 else "mul", (previous,) if k % 2
                               else (previous, f"c{k}")))
        previous = f"n{k}"
    g = Graph(nodes, previous)
    valid, plan = _plan(g, {"x": ()})
    _, gradients = evaluation.evaluate(valid, {"x": np.array(0.4)}, ["x"])
    result = Program(plan)([np.array(0.4)], constants_of(valid))
    np.testing.assert_allclose(result.gradients["x"], gradients["x"], rtol=1e-9)


_UNARY = ["sin", "cos", "tanh", "sigmoid", "exp", "relu", "abs"]
_BINARY = ["+", "-", "*"]


@st.composite
def _expressions(draw: Any, depth: int = 0) -> str:
    if depth > 3 or (draw(st.booleans()) and depth):
        return draw(st.sampled_from(["x", "y", "z", "0.5", "2"]))
    if draw(st.booleans()):
        return f"{draw(st.sampled_from(_UNARY))}({draw(_expressions(depth + 1))})"
    left, right = draw(_expressions(depth + 1)), draw(_expressions(depth + 1))
    return f"({left} {draw(st.sampled_from(_BINARY))} {right})"


@settings(max_examples=40, deadline=None)
@given(_expressions(), st.lists(st.floats(-2, 2), min_size=9, max_size=9))
def test_random_formulas_agree_with_the_engine(text: str, numbers: list[float]) -> None:
    values = {"x": np.array(numbers[:3]), "y": np.array(numbers[3:6]).reshape(3),
              "z": np.array(numbers[6])}
    used = {n: v for n, v in values.items() if re.search(rf"\b{n}\b", text)}
    if not used:
        return  # only constants: nothing to differentiate
    _both(f"sum({text})", used)


def test_symengine_is_what_carries_the_composition() -> None:
    """The derivation's expressions are SymEngine's, over internal symbol names only."""
    _, plan = _plan("sin(x ** 2)", {"x": ()})
    derivation = derive(plan)
    assert all(isinstance(e, se.Basic) for e in derivation.gradients["x"])
    assert {str(s) for s in derivation.inputs} == {"L0_0", "C0_0"}


# Reductions whose local derivatives are not linear in one element: the op-by-op evaluator
# compiles them. Values with ties and zeros, where PyTorch's conventions show.
REDUCTIONS = {
    "prod": ["sum(prod(x, 1) * c)", "prod(x)", "prod(z)"],
    "amax": ["sum(amax(x, 1, True) * c)", "amax(t)"],
    "amin": ["amin(x, (0, 1))", "sum(amin(t, 0) * d)"],
    "max": ["max(x)", "max(t)"],
    "min": ["min(x) * 2", "min(t)"],
    "logsumexp": ["sum(logsumexp(x, 1) * c)", "logsumexp(x, (0, 1))"],
    "softmax": ["sum(softmax(x, 1) * w)", "sum(softmax(x, 0) * w)"],
    "log_softmax": ["sum(log_softmax(x, -1) * w)"],
    "var": ["var(x)", "sum(var(x, 1, False) * c)", "var(x, correction=2)"],
    "std": ["sum(std(x, 0, keepdim=True) * d)", "std(t, correction=0)"],
    "norm": ["norm(x)", "sum(norm(x, None, 1) * c)", "norm(z, dim=0)"],
}


@pytest.mark.parametrize("text", [t for forms in REDUCTIONS.values() for t in forms])
def test_reductions_agree_with_the_engine(text: str) -> None:
    rng = np.random.default_rng(3)
    values = {"x": rng.uniform(-2, 2, (2, 3)), "c": rng.uniform(-1, 1, (2,)),
              "w": rng.uniform(-1, 1, (2, 3)), "d": rng.uniform(-1, 1, (1, 3)),
              "t": np.array([[1.0, 3.0, 3.0], [3.0, 0.5, 3.0]]), "z": np.array([2.0, 0.0, 3.0])}
    _both(text, {n: v for n, v in values.items() if re.search(rf"\b{n}\b", text)})
def test_a_composed_op_derives_through_its_steps() -> None:
    # softmax's own Jacobian over n classes has n * n partials; its steps keep the closed form
    # linear in n: a 300-class cross-entropy derives and agrees with the engine.
    _, plan = _plan("sum(softmax(x, 0) * w)", {"x": (3,), "w": (3,)}, ["x"])
    assert [node.op for node in plan.nodes if node.kind == "op"] == [
        "logsumexp", "sub", "exp", "mul", "sum"]
    classes = 300
    rng = np.random.default_rng(5)
    source = "-sum(log_softmax(z, 0) * y)"
    _, plan = _plan(source, {"z": (classes,), "y": (classes,)}, ["z"])
    assert plan.element_count < 5 * classes
    _both(source, {"z": rng.uniform(-3, 3, classes), "y": np.eye(classes)[7]}, ["z"])


COMPARISONS = [op.name for op in OPS if op.boolean]


@pytest.mark.parametrize("name", COMPARISONS)
def test_comparisons_are_masks_held_constant(name: str) -> None:
    # The mask multiplies; no gradient flows through the comparison. Ties in the first element.
    _both(f"sum(x * {name}(x, y) + y * {name}(y, 2) * {name}(2, x))",
          {"x": [1.0, 2.0, -1.0, 2.0], "y": [1.0, 0.5, 3.0, 2.0]})


def test_every_op_of_the_table_is_covered_here() -> None:
    covered = {op.name for op in ELEMENTWISE} | {"matmul", "sum", "mean", "reshape",
                                                 "transpose", "t", "permute", "detach",
                                                 "squeeze", "unsqueeze", "flatten", "select",
                                                 "slice",
                                                 *COMPARISONS, "cat", "stack"}
    assert covered | set(REDUCTIONS) == set(TABLE)
