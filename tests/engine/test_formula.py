"""The formula parser: what it builds, what it refuses (quickly, evaluating nothing), and that a
parsed formula computes what the same expression computes on the engine directly."""

from __future__ import annotations

import builtins
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crossgrad.engine as cg
import numpy as np
import pytest
import sympy
from crossgrad.engine.errors import InvalidArgument, LimitExceeded
from crossgrad.engine.evaluation import evaluate
from crossgrad.engine.formula import parse
from crossgrad.engine.graph import DEFAULT_LIMITS, Constant, Leaf, Limits, Operation, validate
from hypothesis import given, note, settings
from hypothesis import strategies as st

# --- what it builds ---------------------------------------------------------------------------


def test_the_seed_formula_becomes_leaf_constant_pow_sin() -> None:
    graph = parse("sin(x**2)")
    leaf, const, power, sine = graph.nodes
    assert leaf == Leaf("x", "x")
    assert isinstance(const, Constant) and const.value.shape == () and const.value == 2
    assert const.value.dtype == np.int64  # a Python int: weak, so x**2 keeps x's dtype
    assert isinstance(power, Operation) and (power.op, power.inputs) == ("pow", ("x", const.id))
    assert isinstance(sine, Operation) and (sine.op, sine.inputs) == ("sin", (power.id,))
    assert graph.output == sine.id == "sin@1" and power.id == "pow@5"


def test_one_leaf_per_distinct_name_and_one_constant_per_number() -> None:
    graph = parse("x * x + y * 2 + 2")
    assert [n.id for n in graph.nodes if isinstance(n, Leaf)] == ["x", "y"]
    assert len([n for n in graph.nodes if isinstance(n, Constant)]) == 2


def ops_of(text: str) -> list[tuple[str, dict[str, Any]]]:
    return [(n.op, dict(n.attrs)) for n in parse(text).nodes if isinstance(n, Operation)]


@pytest.mark.parametrize(("text", "expected"), [
    ("sum(x)", [("sum", {"dim": None, "keepdim": False})]),
    ("sum(x, dim=0)", [("sum", {"dim": (0,), "keepdim": False})]),
    ("sum(x, 0, True)", [("sum", {"dim": (0,), "keepdim": True})]),  # PyTorch's positions
    ("mean(x, dim=(0, -1), keepdim=True)", [("mean", {"dim": (0, -1), "keepdim": True})]),
    ("clamp(x, min=0, max=1)", [("clamp", {"min": 0.0, "max": 1.0})]),
    ("clamp(x, -1.5)", [("clamp", {"min": -1.5, "max": None})]),
    ("reshape(x, [2, -1])", [("reshape", {"shape": (2, -1)})]),
    ("transpose(x, 0, 1)", [("transpose", {"dim0": 0, "dim1": 1})]),
    ("permute(x, dims=(1, 0))", [("permute", {"dims": (1, 0)})]),
    ("x @ y", [("matmul", {})]),
    ("-x", [("neg", {})]),
    ("+x", []),  # +x is x
    ("x ** -2", [("pow", {})]),  # -2 is one constant, not neg(2)
    ("x ** (-(2**3))", [("pow", {})]),  # numbers alone are folded
    ("x * (5000 + 0) - (1 - 1e-8)", [("mul", {}), ("sub", {})]),
    ("clamp(x, 1e-8, 1 - 1e-8)", [("clamp", {"min": 1e-8, "max": 1 - 1e-8})]),
    ("clamp(x, min=-(1/2))", [("clamp", {"min": -0.5, "max": None})]),
    ("sum(x, (0, 2 - 1))", [("sum", {"dim": (0, 1), "keepdim": False})]),
    ("matmul(x, y) / div(x, 2)", [("matmul", {}), ("div", {}), ("div", {})]),
])
def test_accepted_forms(text: str, expected: list[tuple[str, dict[str, Any]]]) -> None:
    assert ops_of(text) == expected


@pytest.mark.parametrize(("text", "value"), [
    ("2 + 3", 2 + 3), ("5000 + 0", 5000), ("1000 * 1000", 1000 * 1000), ("-1", -1),
    ("2 / 4", 2 / 4), ("1 / 3", 1 / 3), ("2**-3", 2**-3), ("1 - 1e-8", 1 - 1e-8),
    ("-(2**3)", -(2**3)), ("2 ** 0.5", 2**0.5), ("-0.0", -0.0), ("10**15", 10**15),
    ("(-2)**49", (-2)**49), ("7 - 7.0", 0.0), ("+-+3", -3), ("0 ** 0", 1), ("10 ** -400", 0.0),
])
def test_arithmetic_of_numbers_is_one_constant_as_python_computes_it(text: str,
                                                                     value: float) -> None:
    """The folded constant is the Python number the expression is, of the same type: an int
    stays an int (a weak int64 scalar), anything with a float or a "/" is a float."""
    for formula in (f"x * ({text})", text):
        (const,) = [n for n in parse(formula).nodes if isinstance(n, Constant)]
        assert const.value.shape == () and const.value.item() == value
        assert type(const.value.item()) is type(value)
        assert math.copysign(1, const.value.item()) == math.copysign(1, value)
    assert parse(text).output == "const@1" or text.startswith("(")


def test_folded_constants_compute_as_written_ones() -> None:
    value, grads = run("x ** (1 + 1) * (2 / 4)", {"x": 3.0})
    assert value.dtype == np.float32 and value == 4.5 and grads["x"] == 3.0
    folded, _ = run("x * (1 - 1e-8)", {"x": 3.0}, dtype=cg.float64)
    written, _ = run(f"x * {1 - 1e-8!r}", {"x": 3.0}, dtype=cg.float64)
    assert folded == written


def test_signed_literals_are_constants() -> None:
    (const,) = [n for n in parse("x ** -2.5").nodes if isinstance(n, Constant)]
    assert const.value == -2.5 and const.value.dtype == np.float64


def test_a_name_is_a_leaf_where_an_op_has_it_too() -> None:
    # ``t`` (time) is a variable, ``t(m)`` the transpose: only a call names an op.
    graph = parse("t * sum(t(m))")
    assert sorted(n.name for n in graph.nodes if isinstance(n, Leaf)) == ["m", "t"]
    assert [n.op for n in graph.nodes if isinstance(n, Operation)] == ["t", "sum", "mul"]


def test_blanks_newlines_and_unicode_names() -> None:
    graph = parse("  (αβ +\n   x)")
    assert {n.id for n in graph.nodes if isinstance(n, Leaf)} == {"αβ", "x"}


def test_errors_found_later_name_the_formula_column() -> None:
    graph = parse("x + sum(y, dim=3)")
    with pytest.raises(cg.DimensionError) as caught:
        validate(graph, {"x": ((3,), cg.float32), "y": ((3,), cg.float32)})
    assert caught.value.node == "sum@5"


# --- what it refuses --------------------------------------------------------------------------

REFUSED = [
    # (formula, a part of the message)
    ("x.T", "attribute access '.T' is not allowed in a formula (at column 1)"),
    ("x.sin()", "attribute access '.sin'"),
    ("x[y]", "a subscript takes integers, slices of integers (1:3, ::2), ... and None, written "
             "as literals (at column 3)"),
    ("x[0:n]", "a subscript takes integers"),
    ("x[1.5]", "a subscript takes integers"),
    ("x[True]", "a subscript takes integers"),
    ("x[[0, 1]]", "a subscript takes integers"),
    ("x[sum(y)]", "a subscript takes integers"),
    ("x[::0]", "slice step cannot be zero"),
    ("x[::-1]", "step must be greater than zero"),
    ("x[..., 0, ...]", "an index can only have a single ellipsis"),
    ("x['a']", "a string"),
    ("(lambda: x)()", "calling anything but a function name"),
    ("lambda: x", "lambda"),
    ("[a for a in x]", "comprehension"),
    ("{a for a in x}", "comprehension"),
    ("{a: a for a in x}", "comprehension"),
    ("sum(a for a in x)", "generator expression"),
    ("'x'", "a string is not allowed in a formula (at column 1)"),
    ("x + \"y\"", "a string is not allowed in a formula (at column 5)"),
    ("b'x'", "a string"),
    ("f'{x}'", "a string"),
    ("__import__(os)", "the name '__import__' (names may not start with '_')"),
    ("__import__('os').system('true')", "a string"),
    ("_x + 1", "names may not start with '_'"),
    ("x.__class__", "attribute access '.__class__'"),
    ("sum(x, foo=1)", "sum has no keyword 'foo' (its keywords: dim, keepdim) (at column 8)"),
    ("sin(x, dim=0)", "sin has no keyword 'dim' (its keywords: none)"),
    ("sum(x, 0, dim=1)", "sum got two values for dim"),
    ("sum(x, dim=y)", "sum's dim must be a literal"),
    ("sum(x, dim=1.5)", "attribute 'dim' of sum must be an int"),
    ("clamp(x, min=True)", "attribute 'min' of clamp must be a finite number"),
    ("reshape(x)", "reshape needs the attribute 'shape'"),
    ("sin(x, 1)", "sin takes 1 operand(s); got 2 argument(s)"),
    ("add(x)", "add takes 2 operand(s); got 1 argument(s)"),
    ("foo(x)", "unknown function 'foo'; the functions are abs, acos, add"),
    ("eval(x)", "unknown function 'eval'"),
    ("(x)(y)", "unknown function 'x'"),
    ("sin(*x)", "a starred argument is not allowed"),
    ("sum(x, **k)", "a ** argument is not allowed"),
    ("x < y < 1", "a chained comparison (write each comparison on its own) is not allowed in a "
                  "formula (at column 1)"),
    ("x is y", "the operator is is not allowed in a formula (at column 1)"),
    ("x not in y", "the operator not in is not allowed"),
    ("x and y", "boolean operator"),
    ("not x", "the operator not"),
    ("~x", "the operator ~"),
    ("x // 2", "the operator //"),
    ("x % 2", "the operator %"),
    ("x | y", "the operator |"),
    ("(y := x)", "assignment expression (:=)"),
    ("x if y else 1", "conditional expression"),
    ("x, y", "tuple"),
    ("[x]", "list"),
    ("{x: 1}", "dict"),
    ("{x}", "set"),
    ("...", "'...' is not allowed"),
    ("1j * x", "a complex literal"),
    ("True * x", "True as a value"),
    ("None", "None as a value"),
    ("x ** (10**10)", "the exponent 10000000000 (at most 1000 in absolute value) is not "
                      "allowed in a formula (at column 7)"),
    ("x ** (5000 + 0)", "the exponent 5000 (at most 1000 in absolute value) is not allowed in a "
                        "formula (at column 7)"),
    ("(x + 1) ** (1000 * 1000)", "the exponent 1000000 (at most 1000"),
    ("x ** (999999999999999 * 9000)", "999999999999999 * 9000, an integer past the limit of "
                                      "1e+15, is not allowed in a formula (at column 7)"),
    ("9**9**9", "9 ** 387420489, an integer past the limit of 1e+15, is not allowed"),
    ("9**9**9**9", "an integer past the limit"),
    ("x * 2**64", "2 ** 64, an integer past the limit"),
    ("x * (-2)**-2**-9**99", "an integer past the limit"),
    ("x * 2.0**5000", "2.0 ** 5000, a number that is not finite"),
    ("x * (1e200 * 1e200)", "1e+200 * 1e+200, a number that is not finite"),
    ("x * (1 / 0)", "a division by zero (1 / 0) is not allowed in a formula (at column 6)"),
    ("x * 0 ** -1", "a division by zero (0 ** -1)"),
    ("x * (-8) ** (1/3)", "-8 ** 0.3333333333333333, a complex number"),
    ("x * (999999999999999 + 2)", "999999999999999 + 2, an integer past the limit"),
    ("clamp(x, 0, 1/0)", "a division by zero"),
    ("abs(9) ** abs(99)", "a power of constants computed by functions (write its value "
                          "instead)"),
    ("x ** 1001", "the exponent 1001 (at most 1000 in absolute value)"),
    ("x ** -5000.5", "the exponent -5000.5"),
    ("x * 10000000000000000", "an integer past the limit"),
    ("x * " + "9" * 4000, "an integer past the limit"),
    ("x * 1e999", "a number that is not finite"),
    ("x +", "syntax error in the formula at column"),
    ("", "syntax error"),
    ("sin(x", "'(' was never closed"),
    ("x\0", "a null character is not allowed in a formula (at column 2)"),
    ("import os", "syntax error"),
    ("x; y", "syntax error"),
    ("x = 1", "syntax error"),
]

TOO_BIG = [
    ("x" * 10_001, "the formula has 10001 characters; the limit is 10000"),
    ("(" * 60 + "x" + ")" * 60, "nests too deeply"),
    ("sin(" * 60 + "x" + ")" * 60, "nests too deeply"),
    ("-" * 9_000 + "x", "nests too deeply"),  # Python's own parser runs out of memory on it
    ("x" + "**x" * 3_000, "nests too deeply"),
    ("+".join(["x"] * 3_000), "chains too many terms"),  # ast.parse: RecursionError
    ("sin(" + "+".join(["x"] * 1_500) + ")*" + "*".join(["x"] * 1_500), "chains too many"),
    ("-(" * 49 + "x" + ")" * 49, "nests too deeply"),
    ("[" * 3_000 + "]" * 3_000, "nests too deeply"),
]


def refusal(text: str) -> tuple[InvalidArgument, float]:
    start = time.perf_counter()
    with pytest.raises(InvalidArgument) as caught:
        parse(text)
    return caught.value, time.perf_counter() - start


@pytest.mark.parametrize(("text", "message"), REFUSED, ids=[t[:30] for t, _ in REFUSED])
def test_refused_quickly_with_what_and_where(text: str, message: str) -> None:
    error, seconds = refusal(text)
    assert message in error.message
    assert "column" in error.message or "parsed" in error.message
    assert error.status == "INVALID_ARGUMENT"
    assert seconds < 1.0


@pytest.mark.parametrize(("text", "message"), TOO_BIG, ids=[t[:12] for t, _ in TOO_BIG])
def test_limits_refuse_before_python_parses(text: str, message: str) -> None:
    error, seconds = refusal(text)
    assert isinstance(error, LimitExceeded) and error.status == "RESOURCE_EXHAUSTED"
    assert message in error.message
    assert seconds < 1.0


def test_columns_count_characters_not_bytes() -> None:
    error, _ = refusal("αβ + é.T")
    assert "(at column 6)" in error.message
    error, _ = refusal("  x.T")
    assert "(at column 3)" in error.message
    error, _ = refusal("(x +\n y.T)")
    assert "(at line 2, column 2)" in error.message


def test_limits_are_configurable() -> None:
    assert parse("+".join(["x"] * 80)).output  # a long flat sum is fine within the limit
    with pytest.raises(LimitExceeded, match="limited to 10 terms"):
        parse("+".join(["x"] * 11), Limits(max_chain=10))
    with pytest.raises(LimitExceeded):
        parse("sin(sin(sin(x)))", Limits(max_depth=6))
    with pytest.raises(LimitExceeded):
        parse("x + y", Limits(max_formula_chars=4))
    with pytest.raises(InvalidArgument, match="exponent 3"):
        parse("x ** 3", Limits(max_exponent=2))
    with pytest.raises(InvalidArgument, match="integer past the limit"):
        parse("x * 101", Limits(max_int_literal=100))


def test_a_flat_chain_is_not_nesting() -> None:
    # Python's grammar reads x + x - x ... as a loop, so only the tree's depth bounds it.
    limit = DEFAULT_LIMITS.max_chain
    for operator in ("+", "-", "*", "/", "@"):
        start = time.perf_counter()
        graph = parse(operator.join(["x"] * limit))
        assert time.perf_counter() - start < 1.0
        assert len(graph.nodes) == limit and len({n.id for n in graph.nodes}) == limit
    mixed = parse("+".join(["x*2"] * (limit // 2)))
    assert len(mixed.nodes) == 1 + 3 * (limit // 2) - 1  # x, then per term 2, mul, add
    assert parse("sin(" + "+".join(["x"] * 900) + ")**2 - " + "-".join(["y"] * 900)).output
    with pytest.raises(LimitExceeded, match="chains too many terms"):
        parse("+".join(["x"] * (limit + 1)))


def test_a_long_sum_differentiates() -> None:
    limit = DEFAULT_LIMITS.max_chain
    result = cg.differentiate("+".join(["x"] * limit), {"x": 1.5})
    assert result.gradients["x"] == limit
    assert result.check.status.value == "AGREE"


def forbid_evaluation(patch: pytest.MonkeyPatch) -> None:
    """Fail on any eval/exec, any compile to code (ast.parse compiles to a tree only) or sympify."""
    import ast

    real_compile = builtins.compile

    def tree_only(source: Any, filename: Any, mode: str, flags: int = 0, *args: Any,
                  **kwargs: Any) -> Any:
        assert flags & ast.PyCF_ONLY_AST, "compiled to code"
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("evaluated")

    patch.setattr(builtins, "compile", tree_only)
    patch.setattr(builtins, "eval", forbidden)
    patch.setattr(builtins, "exec", forbidden)
    patch.setattr(sympy, "sympify", forbidden)
    patch.setattr(sympy, "parse_expr", forbidden, raising=False)


def test_parsing_evaluates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "ran"
    attacks = [f"__import__('os').system('touch {marker}')",
               f"[c for c in ().__class__.__base__.__subclasses__()]('{marker}')",
               "exec(x)", "compile(x)", "open(x)", "getattr(x, y)"]
    with monkeypatch.context() as patch:
        forbid_evaluation(patch)
        for text in attacks + [text for text, _ in REFUSED]:
            with pytest.raises(InvalidArgument):
                parse(text)
        parse("sin(x**2) + clamp(y, 0, 1) * sum(x, dim=0) / (1 / 3)")
    assert not marker.exists()


# --- what it computes -------------------------------------------------------------------------


def run(text: str, values: dict[str, Any], dtype: cg.DType = cg.float32,
        **kwargs: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    shapes = {name: (np.shape(value), dtype) for name, value in values.items()}
    return evaluate(validate(parse(text), shapes), values, **kwargs)


# Subscripts become the ops tensor indexing runs (see test_torch_shapes), dims after an ellipsis
# counted from the end, as the formula knows no shapes.
@pytest.mark.parametrize(("text", "expected"), [
    ("x[0]", [("select", {"dim": 0, "index": 0})]),
    ("x[-1]", [("select", {"dim": 0, "index": -1})]),
    ("x[1 - 2]", [("select", {"dim": 0, "index": -1})]),
    ("x[1:3]", [("slice", {"dim": 0, "start": 1, "end": 3, "step": 1})]),
    ("x[:]", [("slice", {"dim": 0, "start": None, "end": None, "step": 1})]),
    ("x[:, -1]", [("select", {"dim": 1, "index": -1})]),
    ("x[..., 0]", [("select", {"dim": -1, "index": 0})]),
    ("x[..., None, 0]", [("unsqueeze", {"dim": -2}), ("select", {"dim": -1, "index": 0})]),
    ("x[None, ::2]", [("unsqueeze", {"dim": 0}),
                      ("slice", {"dim": 1, "start": None, "end": None, "step": 2})]),
    ("x[1:3, 0]", [("slice", {"dim": 0, "start": 1, "end": 3, "step": 1}),
                   ("select", {"dim": 1, "index": 0})]),
    ("x[:, :]", [("alias", {})]),
    ("x[...]", [("alias", {})]),
])
def test_subscripts_become_indexing_ops(text: str, expected: list[tuple[str, dict[str, Any]]],
                                        ) -> None:
    assert ops_of(text) == expected


INDEXED: list[tuple[str, Callable[[Any], Any]]] = [
    ("x[0]", lambda x: x[0]), ("x[1:3]", lambda x: x[1:3]), ("x[:, -1]", lambda x: x[:, -1]),
    ("x[..., 0]", lambda x: x[..., 0]), ("x[None, ::2]", lambda x: x[None, ::2]),
    ("x[1:3, 0] * x[0, ..., None]", lambda x: x[1:3, 0] * x[0, ..., None]),
    ("x[..., None, 1:]", lambda x: x[..., None, 1:]), ("x[-2:, ...]", lambda x: x[-2:, ...]),
    ("x[1, 2]", lambda x: x[1, 2])]


@pytest.mark.parametrize(("text", "index"), INDEXED, ids=[t for t, _ in INDEXED])
def test_subscripts_compute_what_tensor_indexing_computes(text: str,
                                                          index: Callable[[Any], Any]) -> None:
    values = np.arange(12.0).reshape(3, 4) / 7
    value, grads = run(f"sum(sin({text}))", {"x": values}, dtype=cg.float64)
    x = cg.tensor(values, dtype=cg.float64, requires_grad=True)
    expected = index(x).sin().sum()
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(grads["x"], x.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize(("text", "expected"), [
    ("cat([x, y])", [("cat", ("x", "y"), {"dim": 0})]),
    ("cat((x, y, x), 1)", [("cat", ("x", "y", "x"), {"dim": 1})]),
    ("stack([y], dim=-1)", [("stack", ("y",), {"dim": -1})]),
])
def test_a_variadic_op_takes_its_operands_as_a_list(
        text: str, expected: list[tuple[str, tuple[str, ...], dict[str, Any]]]) -> None:
    found = [(n.op, n.inputs, dict(n.attrs)) for n in parse(text).nodes
             if isinstance(n, Operation)]
    assert found == expected


@pytest.mark.parametrize(("text", "message"), [
    ("cat(x, y)", "cat takes a list of one or more operands first, as in cat([x, y]) (at "
                  "column 5)"),
    ("cat([])", "cat takes a list of one or more operands first"),
    ("stack()", "stack takes a list of operands, then dim; got 0 argument(s)"),
    ("cat([x], 0, 1)", "cat takes a list of operands, then dim; got 3 argument(s)"),
])
def test_a_variadic_op_without_its_list_is_refused(text: str, message: str) -> None:
    assert message in refusal(text)[0].message


def test_a_formula_cat_computes_what_the_engine_computes() -> None:
    values = {"x": np.arange(6.0).reshape(2, 3) / 5, "y": np.arange(3.0).reshape(1, 3) / 4}
    value, grads = run("sum(sin(cat([x, y, x * y], 0)) * 2)", values, dtype=cg.float64,
                       wrt=["x", "y"])
    x, y = (cg.tensor(values[n], dtype=cg.float64, requires_grad=True) for n in "xy")
    expected = (cg.cat([x, y, x * y], 0).sin() * 2).sum()
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(grads["x"], x.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(grads["y"], y.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize(("text", "constant"), [
    ("log_softmax(3.0, 0)", 0.0), ("softmax(3.0, 0)", 1.0), ("var(2.0, correction=0)", 0.0)])
def test_a_reduction_of_a_number_runs_on_the_number(text: str, constant: float) -> None:
    # A graph holds a number constant as a Python number: the forwards take it as a 0-d tensor.
    value, grads = run(f"sum(x) + {text}", {"x": np.array([1.0, 2.0])}, dtype=cg.float64,
                       wrt=["x"])
    assert value == pytest.approx(3.0 + constant)
    np.testing.assert_array_equal(grads["x"], [1.0, 1.0])


def test_a_subscript_out_of_bounds_names_its_node() -> None:
    with pytest.raises(cg.DimensionError, match="index 5 out of range") as caught:
        validate(parse("x[5] + 1"), {"x": ((3,), cg.float32)})
    assert caught.value.node == "select@1"


def test_seed_notebook_sin_of_square() -> None:
    value, grads = run("sin(x**2)", {"x": 4.0})
    assert value.dtype == np.float32 and grads["x"].dtype == np.float32
    assert value == pytest.approx(-0.2879, abs=1e-4)
    assert grads["x"] == pytest.approx(-7.6613, abs=1e-4)


def test_seed_notebook_mean_of_squares() -> None:
    value, grads = run("mean(x**2)", {"x": [1.0, 3.0, 4.0]})
    assert value == pytest.approx(8.6667, abs=1e-4)
    np.testing.assert_allclose(grads["x"], [0.6667, 2.0, 2.6667], atol=1e-4)


def test_seed_notebook_binary_cross_entropy() -> None:
    # The notebook's loss with y_pred = sigmoid(w*x + b), clamped to [e, 1-e].
    p = "clamp(sigmoid(w*x + b), 1e-8, 0.99999999)"
    loss = f"-(y*log({p}) + (1 - y)*log(1 - {p}))"
    value, grads = run(loss, {"x": 6.7, "y": 0.0, "w": 1.0, "b": 0.0}, wrt=["w", "b"])
    assert value == pytest.approx(6.7012, abs=1e-4)
    assert grads["w"] == pytest.approx(6.6918, abs=1e-4)
    assert grads["b"] == pytest.approx(0.9988, abs=1e-4)


# The seed notebook's binary cross-entropy exactly as its cell writes it: clamp's bounds are
# arithmetic of numbers (1-1e-8), folded by the parser.
SEED_P = "sigmoid(w*6.7+b)"
SEED_LOSS = (f"-(y*log(clamp({SEED_P}, 1e-8, 1-1e-8)) "
             f"+ (1-y)*log(1-clamp({SEED_P}, 1e-8, 1-1e-8)))")
SEED_VALUES = {"w": 1.0, "b": 0.0, "y": 0.0}


def seed_loss_in_torch(torch: Any) -> tuple[float, dict[str, float]]:
    """The notebook's cell on PyTorch: the loss and the gradients of w and b (float32)."""
    w = torch.tensor(SEED_VALUES["w"], requires_grad=True)
    b = torch.tensor(SEED_VALUES["b"], requires_grad=True)
    y_pred = torch.clamp(torch.sigmoid(w * 6.7 + b), 1e-8, 1 - 1e-8)
    y = torch.tensor(SEED_VALUES["y"])
    loss = -(y * torch.log(y_pred) + (1 - y) * torch.log(1 - y_pred))
    loss.backward()
    return loss.item(), {"w": w.grad.item(), "b": b.grad.item()}


def test_the_seed_notebook_loss_as_written(require_torch: Any) -> None:
    values = {name: np.float32(v) for name, v in SEED_VALUES.items()}
    result = cg.differentiate(SEED_LOSS, values, wrt=["w", "b"])  # strict: a disagreement raises
    assert result.check.status.value == "AGREE"
    loss, grads = seed_loss_in_torch(require_torch)
    assert result.value.dtype == np.float32
    assert_seed_numbers(float(result.value), {n: float(g) for n, g in result.gradients.items()},
                        loss, grads)


def assert_seed_numbers(value: float, grads: dict[str, float], torch_value: float,
                        torch_grads: dict[str, float]) -> None:
    """The notebook's printed digits (4 decimals) are PyTorch's. 1 - p cancels in float32 near
    p = 1, so NumPy's and PyTorch's sigmoid, 1 ulp apart there, differ from the fifth digit."""
    assert f"{value:.4f}" == f"{torch_value:.4f}"
    assert value == pytest.approx(torch_value, rel=1e-4)
    assert set(grads) == set(torch_grads)
    for name, grad in grads.items():
        assert f"{grad:.4f}" == f"{torch_grads[name]:.4f}"
        assert grad == pytest.approx(torch_grads[name], rel=1e-5)


def test_constant_arithmetic_is_pythons() -> None:
    # (1 / 3) is divided in double precision, as Python divides it before PyTorch sees it.
    value, _ = run("x * (1 / 3)", {"x": 3.0}, dtype=cg.float64)
    assert value == 3.0 * (1 / 3)
    value, _ = run("x ** 2", {"x": 3.0})
    assert value.dtype == np.float32


# --- random formulas against the engine -------------------------------------------------------

VALUES = {"x": np.array([0.5, -1.25, 2.0]), "y": np.array(0.75)}
SHAPES = {"x": (3,), "y": ()}
UNARY = ["sin", "cos", "tanh", "exp", "sigmoid", "relu", "abs", "neg", "detach", "log", "sqrt"]
BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": lambda a, b: a / b, "**": lambda a, b: a ** b, "@": lambda a, b: a @ b}


@dataclass(frozen=True)
class Expr:
    """A formula's text and the same computation written against the engine."""

    text: str
    run: Callable[[dict[str, Any]], Any]
    shape: tuple[int, ...] | None  # None: a Python number


def leaf(name: str) -> Expr:
    return Expr(name, lambda env: env[name], SHAPES[name])


def number(value: float) -> Expr:
    return Expr(f"({value!r})", lambda env: value, None)


def tensor(e: Expr) -> Expr:
    """``e`` where an operand must be a tensor (PyTorch's functions take no Python numbers)."""
    return leaf("x") if e.shape is None else e


def binary(symbol: str, a: Expr, b: Expr) -> Expr:
    fn = BINARY[symbol]
    if symbol in ("/", "**") and a.shape is None and b.shape is None:
        a = tensor(a)  # Python computes the rest of constant arithmetic exactly, and 1/0 raises
    if symbol == "@":
        a, b = (e if e.shape == (3,) else leaf("x") for e in (a, b))
    if a.shape is None and b.shape is None:
        shape = None
    else:
        shape = () if symbol == "@" else np.broadcast_shapes(a.shape or (), b.shape or ())
    return Expr(f"({a.text} {symbol} {b.text})", lambda env: fn(a.run(env), b.run(env)), shape)


def build(tree: Any) -> Expr:
    """The Expr of a tree of tuples drawn by hypothesis: (op, operands..., attributes...)."""
    if isinstance(tree, str):
        return leaf(tree)
    if not isinstance(tree, tuple):
        return number(tree)
    kind, a, *rest = tree
    a = build(a)
    if kind in BINARY:
        return binary(kind, a, build(rest[0]))
    a = tensor(a)
    if kind == "rpow":
        return binary("**", number(2), a)
    if kind in UNARY:
        fn = getattr(cg, kind)
        return Expr(f"{kind}({a.text})", lambda env: fn(a.run(env)), a.shape)
    if kind == "clamp":
        low, high = rest
        return Expr(f"clamp({a.text}, min={low!r}, max={high!r})",
                    lambda env: cg.clamp(a.run(env), min=low, max=high), a.shape)
    keepdim, dim = rest
    reduce = getattr(cg, kind)
    assert a.shape is not None
    return Expr(f"{kind}({a.text}, dim={dim}, keepdim={keepdim})",
                lambda env: reduce(a.run(env), dim=dim, keepdim=keepdim),
                (1,) * len(a.shape) if keepdim else ())


def extend(trees: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.tuples(st.sampled_from(["+", "-", "*", "/", "@"]), trees, trees),
        st.tuples(st.just("**"), trees, st.sampled_from([2, 3, 0.5, -1, 1.5, -2.0]) | trees),
        st.tuples(st.just("rpow"), trees),
        st.tuples(st.sampled_from(UNARY), trees),
        st.tuples(st.sampled_from(["sum", "mean"]), trees, st.booleans(),
                  st.sampled_from([None, 0, -1])),  # 0-d tensors take dim 0 and -1 too
        st.tuples(st.just("clamp"), trees, st.sampled_from([-1.0, 0.0]), st.sampled_from([0.5, 2])),
    )


TREES = st.recursive(st.sampled_from(["x", "y", 2, 3, 0.5, -1.5, 1e-3]), extend, max_leaves=12)


def on_engine(expr: Expr) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    env = {name: cg.tensor(v, dtype=cg.float64, requires_grad=True) for name, v in VALUES.items()}
    out = expr.run(env)
    if out.requires_grad:
        out.backward(np.ones(out.shape))
    grads = {name: t.grad.numpy() for name, t in env.items() if t.grad is not None}
    return out.detach().numpy(), grads


@settings(max_examples=300, deadline=None)
@given(TREES)
def test_random_formulas_compute_what_the_engine_computes(tree: Any) -> None:
    expr = tensor(build(tree))
    note(expr.text)
    with np.errstate(all="ignore"):
        expected_value, expected_grads = on_engine(expr)
    graph = parse(expr.text)
    valid = validate(graph, {name: (SHAPES[name], cg.float64) for name in VALUES})
    assert valid.types[graph.output] == (expected_value.shape, cg.float64, False)
    seed = np.ones(expected_value.shape) if expected_value.shape else None
    value, grads = evaluate(valid, VALUES, seed=seed)
    np.testing.assert_array_equal(value, expected_value)
    assert value.dtype == expected_value.dtype
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        np.testing.assert_array_equal(grad, expected_grads[name])
