"""``differentiate``: the two derivations, the check, the budgets and the cache, end to end."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from crossgrad.engine import formula, ops, shapes, solver
from crossgrad.engine.budget import Caps
from crossgrad.engine.check import CheckMode, Method, Status
from crossgrad.engine.differentiation import differentiate
from crossgrad.engine.dtypes import float32
from crossgrad.engine.errors import CheckFailed, InvalidArgument, LimitExceeded
from crossgrad.engine.gradient_check import GradientCheck
from crossgrad.engine.graph import Constant, Graph, Leaf, Operation, validate
from crossgrad.engine.solver import Symbolic

BCE = ("-(y * log(clamp(sigmoid(w * x + b), 1e-8, 0.99999999))"
       " + (1 - y) * log(1 - clamp(sigmoid(w * x + b), 1e-8, 0.99999999)))")


@pytest.fixture(scope="module")
def symbolic() -> Iterator[Symbolic]:
    side = Symbolic(Caps(workers=1))
    yield side
    side.close()


def test_the_seed_sin_of_a_square(symbolic: Symbolic) -> None:
    result = differentiate("sin(x**2)", {"x": 4.0}, symbolic=symbolic)
    assert float(result.value) == pytest.approx(np.sin(16.0))
    assert float(result.gradients["x"]) == pytest.approx(8 * np.cos(16.0))
    assert result.closed_forms == {"x": "2*x*cos(x**2)"}
    assert result.latex == {"x": r"2 x \cos{\left(x^{2} \right)}"}
    assert result.check.method is Method.SYMBOLIC and result.check.status is Status.AGREE
    assert result.check.max_abs_error < 1e-12


def test_the_seed_examples_in_float32(symbolic: Symbolic) -> None:
    f32 = np.float32
    square = differentiate("x**2", {"x": f32(5.0)}, symbolic=symbolic)
    assert square.gradients["x"].dtype == np.float32 and square.gradients["x"] == 10.0
    assert square.closed_forms == {"x": "2*x"}
    mean = differentiate("mean(x**2)", {"x": np.array([1.0, 3.0, 4.0], f32)}, symbolic=symbolic)
    np.testing.assert_allclose(mean.gradients["x"], [2 / 3, 2.0, 8 / 3], rtol=1e-6)
    assert mean.closed_forms == {"x": "[2*x[0]/3, 2*x[1]/3, 2*x[2]/3]"}
    assert mean.check.status is Status.AGREE and mean.check.rtol == 1e-4  # float32's tolerance
    neuron = differentiate(BCE, {"x": f32(6.7), "y": f32(0.0), "w": f32(1.0), "b": f32(0.0)},
                           wrt=["w", "b"], symbolic=symbolic)
    # The notebook's printed values.
    assert float(neuron.gradients["w"]) == pytest.approx(6.6918, abs=1e-4)
    assert float(neuron.gradients["b"]) == pytest.approx(0.9988, abs=1e-4)
    assert set(neuron.closed_forms) == {"w", "b"} and "exp(-b - w*x)" in neuron.closed_forms["w"]
    assert neuron.check.status is Status.AGREE


def test_a_wrong_vjp_is_caught(symbolic: Symbolic, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: sin's VJP swapped for a wrong one on the numeric side only."""
    wrong = dataclasses.replace(ops.TABLE["sin"], vjps=(lambda g, out, x: g * np.sin(x),))
    monkeypatch.setitem(ops.TABLE, "sin", wrong)
    report = differentiate("sin(x**2)", {"x": 4.0}, check="report", symbolic=symbolic).check
    assert report.status is Status.DISAGREE and report.method is Method.SYMBOLIC
    assert "d/dx" in report.reason and report.max_abs_error > 1
    with pytest.raises(CheckFailed) as failure:
        differentiate("sin(x**2)", {"x": 4.0}, symbolic=symbolic)
    assert failure.value.status == "INTERNAL" and failure.value.report.status is Status.DISAGREE


def test_float32_rounding_amplified_by_the_function_is_not_a_disagreement(
        symbolic: Symbolic) -> None:
    # exp(5) * 2 inside sin: float32's rounding of the argument moves the gradient's fourth
    # digit (PyTorch's float32 gradient is the engine's, 16.0745678), while the closed form in
    # float64 says 16.0764234.
    result = differentiate("sin(exp(x)*2)+2", {"x": np.float32(5.0)}, symbolic=symbolic)
    assert float(result.gradients["x"]) == pytest.approx(16.074567794799805, abs=1e-6)
    report = result.check
    assert report.status is Status.AGREE and report.method is Method.SYMBOLIC
    assert "within float32's rounding for this function: condition ~2e+03" in report.reason
    assert "a disagreement would be an error past" in report.reason
    assert report.max_abs_error > 1e-3  # the float32 error is there, and said
    # In float64 the plain tolerance holds: no second look needed.
    wide = differentiate("sin(exp(x)*2)+2", {"x": 5.0}, symbolic=symbolic).check
    assert wide.status is Status.AGREE and "within tolerance" in wide.reason


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("formula, at", [("sin(x**2)", 1.3), ("sin(exp(x)*2)+2", 5.0)])
def test_a_vjp_off_by_a_thousandth_is_caught_in_both_dtypes(
        symbolic: Symbolic, monkeypatch: pytest.MonkeyPatch, dtype: type, formula: str,
        at: float) -> None:
    """Well conditioned or not, a derivation 1e-3 off is as wrong in float64: the second look
    at a float32 gradient does not excuse it as rounding."""
    sin = ops.TABLE["sin"]
    wrong = dataclasses.replace(sin, vjps=(lambda g, out, x: g * np.cos(x) * (1 + 1e-3),))
    monkeypatch.setitem(ops.TABLE, "sin", wrong)
    report = differentiate(formula, {"x": dtype(at)}, check="report", symbolic=symbolic).check
    assert report.status is Status.DISAGREE and report.method is Method.SYMBOLIC, report.reason
    if dtype is np.float32:
        assert "computed in float64 it misses the closed form too" in report.reason


def test_a_wrong_vjp_is_caught_by_finite_differences_past_a_cap(
        monkeypatch: pytest.MonkeyPatch) -> None:
    side = Symbolic(Caps(max_symbols=1, workers=1))
    wrong = dataclasses.replace(ops.TABLE["tanh"], vjps=(lambda g, out, x: g * out,))
    monkeypatch.setitem(ops.TABLE, "tanh", wrong)
    report = differentiate("tanh(x * y)", {"x": 0.3, "y": 0.8}, check="report",
                           symbolic=side).check
    assert report.method is Method.FINITE_DIFFERENCE and report.status is Status.DISAGREE
    assert "over the symbolic cap" in report.reason
    assert side.budget.tasks == 0  # past a cap, no worker is asked


def test_past_a_cap_finite_differences_check_and_say_why() -> None:
    side = Symbolic(Caps(max_elements=10, workers=1))
    result = differentiate("sum(sin(x) * x)", {"x": np.linspace(0, 1, 50)}, symbolic=side)
    assert result.check.method is Method.FINITE_DIFFERENCE
    assert result.check.status is Status.AGREE
    assert "101 scalar expressions is over the symbolic cap of 10" in result.check.reason
    assert result.closed_forms == {}
    np.testing.assert_allclose(result.gradients["x"], np.cos(np.linspace(0, 1, 50))
                               * np.linspace(0, 1, 50) + np.sin(np.linspace(0, 1, 50)))


def test_a_derivation_past_the_callers_deadline_falls_back_and_the_pool_serves_on(
        symbolic: Symbolic) -> None:
    differentiate("x * 2", {"x": 1.0}, symbolic=symbolic)  # a worker is up
    n = 3000
    values = {"w": np.linspace(-1, 1, n), "x": np.linspace(0, 2, n), "b": 0.1}
    started = time.monotonic()
    result = differentiate("mean(sigmoid(w * x + b))", values, symbolic=symbolic,
                           deadline=0.05)
    assert time.monotonic() - started < 5
    assert result.check.method is Method.FINITE_DIFFERENCE
    assert "passed its deadline of 0.05 s" in result.check.reason
    assert result.check.status is Status.AGREE
    after = differentiate("sin(x**2)", {"x": 4.0}, symbolic=symbolic)
    assert after.check.method is Method.SYMBOLIC and after.check.status is Status.AGREE


# Seven ops whose closed form SymPy takes seconds to simplify for reading.
SLOW_TO_SIMPLIFY = "exp(sigmoid(exp(cos(x) + 5) + 2)) + 4"


def test_a_closed_form_slow_to_simplify_is_shown_unsimplified_and_checked_symbolically(
        symbolic: Symbolic) -> None:
    result = differentiate(SLOW_TO_SIMPLIFY, {"x": np.float32(0.7)}, symbolic=symbolic)
    assert result.check.method is Method.SYMBOLIC and result.check.status is Status.AGREE
    assert "sin(x)" in result.closed_forms["x"]
    assert result.notes == ("the closed form is shown unsimplified: simplifying it for reading "
                            f"passed the bound of {symbolic.caps.render_seconds:g} s",)
    # The text is kept with the compiled form: the next call asks no worker for either.
    tasks = symbolic.budget.tasks
    again = differentiate(SLOW_TO_SIMPLIFY, {"x": np.float32(0.7)}, symbolic=symbolic)
    assert symbolic.budget.tasks == tasks and again.notes == result.notes
    assert again.closed_forms == result.closed_forms


def test_a_rendering_past_the_calls_deadline_leaves_the_check_symbolic() -> None:
    # Rendering runs to its end (seconds; more on a busy machine), within the pool's deadline.
    side = Symbolic(Caps(workers=1, deadline=120.0, render_seconds=120.0))
    try:
        side.budget.warm()
        end = time.monotonic() + 60
        while side.budget.idle < 1:
            assert time.monotonic() < end, "no worker started"
            time.sleep(0.02)
        result = differentiate(SLOW_TO_SIMPLIFY, {"x": np.float32(0.7)}, symbolic=side,
                               deadline=2.0)
        assert result.check.method is Method.SYMBOLIC and result.check.status is Status.AGREE
        assert result.closed_forms == {}
        # Waited for what was left of the call's deadline after the derivation.
        (note,) = result.notes
        assert note.startswith("no closed form is shown: the rendering of its closed form "
                               "passed its deadline of ")
        # The rendering went on in its worker: a later call waits for it, derives nothing.
        later = differentiate(SLOW_TO_SIMPLIFY, {"x": np.float32(0.7)}, symbolic=side,
                              deadline=120.0)
        assert later.closed_forms["x"] and later.notes == ()
        assert side.budget.tasks == 2  # one derivation, one rendering
    finally:
        side.close()


def test_workers_can_be_started_ahead_of_the_first_derivation() -> None:
    side = Symbolic(Caps(workers=1))
    try:
        side.budget.warm()
        deadline = time.monotonic() + 60
        while side.budget.idle < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert side.budget.idle == 1 and side.budget.tasks == 0
        differentiate("x * 3", {"x": 1.0}, symbolic=side)
        assert side.budget.idle == 1  # the warm worker served it: no second one started
    finally:
        side.close()


def test_the_cache_derives_once_per_structure(symbolic: Symbolic) -> None:
    differentiate("tanh(x) * x", {"x": 0.5}, symbolic=symbolic)
    tasks = symbolic.budget.tasks
    again = differentiate("tanh(x) * x", {"x": -1.5}, symbolic=symbolic)
    assert symbolic.budget.tasks == tasks  # new values: nothing derived, nothing rendered
    assert float(again.gradients["x"]) == pytest.approx(np.tanh(-1.5) - 1.5 * (
        1 - np.tanh(-1.5) ** 2))
    assert again.check.status is Status.AGREE
    new_constant = differentiate("tanh(x) * 3", {"x": 0.5}, symbolic=symbolic)
    # Same structure as "tanh(x) * x"? No: a leaf is not a constant. A new derivation (and
    # compilation), then its rendering.
    assert symbolic.budget.tasks == tasks + 2
    third = differentiate("tanh(x) * 4", {"x": 0.5}, symbolic=symbolic)
    # Only the closed form's text changes with a constant: rendered, not derived again.
    assert symbolic.budget.tasks == tasks + 3
    assert new_constant.closed_forms["x"] != third.closed_forms["x"]
    assert third.closed_forms["x"] == "4/cosh(x)**2" or "4" in third.closed_forms["x"]


def test_numeric_nan_where_the_closed_form_is_finite_is_reported_as_such(
        symbolic: Symbolic) -> None:
    result = differentiate("sqrt(x**2 + y**2)**2", {"x": 0.0, "y": 0.0}, symbolic=symbolic)
    assert np.isnan(result.gradients["x"])  # as PyTorch gives
    assert result.check.status is Status.SINGULAR
    assert "the numeric gradient gives nan where the closed form gives 0.0" in result.check.reason
    assert result.closed_forms == {"x": "2*x", "y": "2*y"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_norm_by_hand_at_0_is_singular_with_the_closed_forms_value(
        symbolic: Symbolic, dtype: type) -> None:
    # PyTorch's reverse mode gives NaN (sqrt'(0) = inf times 0), the engine too; the closed form
    # simplifies to 2*x, finite: the report is SINGULAR and gives it, element by element.
    result = differentiate("sqrt(sum(x*x))**2", {"x": np.zeros(3, dtype)}, symbolic=symbolic)
    assert np.isnan(result.gradients["x"]).all() and result.gradients["x"].dtype == dtype
    assert result.check.status is Status.SINGULAR
    assert result.check.reason.startswith(
        "d/dx[0]: the numeric gradient gives nan where the closed form gives 0.0, as at "
        "d/dx[1] (nan vs 0.0), d/dx[2] (nan vs 0.0): a singular point of one derivation")
    assert result.closed_forms == {"x": "[2*x[0], 2*x[1], 2*x[2]]"}
    # Off 0 the two agree; the table's norm has gradient 0 at 0 in both derivations.
    assert differentiate("sqrt(sum(x*x))**2", {"x": np.array([3.0, 4.0], dtype)},
                         symbolic=symbolic).check.status is Status.AGREE
    for text in ("norm(x)", "norm(x)**2", "sum(norm(x, None, 1))"):
        row = differentiate(text, {"x": np.zeros((2, 3), dtype)}, symbolic=symbolic)
        assert (row.gradients["x"] == 0).all(), text
        assert row.check.status is Status.AGREE, (text, row.check.reason)


@pytest.mark.parametrize("text", [
    "logsumexp(x, 1)", "sum(softmax(x, 1) * c)", "-sum(log_softmax(x, 1) * c)",
    "sum(log_softmax(x, 0) * c)"])
def test_reductions_of_large_values_agree_in_float32(symbolic: Symbolic, text: str) -> None:
    # The numeric forwards subtract the maximum; the closed forms shift by a slice's first
    # element (no kink): neither overflows, so no false disagreement at inputs near 80.
    x = np.array([[80.0, 81.0, 79.5], [88.5, 90.0, 3.0]], np.float32)
    c = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], np.float32)
    values = {"x": x, "c": c} if "c" in text else {"x": x}
    seed = [1.0, -2.0] if text == "logsumexp(x, 1)" else None
    result = differentiate(text, values, seed=seed, symbolic=symbolic)
    assert np.isfinite(result.gradients["x"]).all()
    assert result.check.status is Status.AGREE, result.check.reason


def test_kinks_agree_with_pytorch_on_both_sides(symbolic: Symbolic) -> None:
    at = {"x": np.array([0.0, -1.0, 0.5, 1.0, 2.0])}
    for text in ("sum(relu(x))", "sum(abs(x))", "sum(clamp(x, -1, 0.5))"):
        result = differentiate(text, at, symbolic=symbolic)
        assert result.check.status is Status.AGREE, (text, result.check.reason)
    clamp = differentiate("sum(clamp(x, -1, 0.5))", at, symbolic=symbolic)
    np.testing.assert_array_equal(clamp.gradients["x"], [1, 1, 1, 0, 0])  # bounds included


def test_pow_at_zero_is_reported_as_a_singular_point(symbolic: Symbolic) -> None:
    result = differentiate("x ** y", {"x": 0.0, "y": 2.0}, symbolic=symbolic)
    assert result.gradients["y"] == 0.0  # PyTorch's convention
    assert result.check.status is Status.SINGULAR and "d/dy" in result.check.reason


def test_modes(symbolic: Symbolic) -> None:
    off = differentiate("sin(x)", {"x": 1.0}, check="off", symbolic=symbolic)
    assert off.check.status is Status.SKIPPED and off.check.method is Method.NONE
    assert off.closed_forms == {}
    report = differentiate("sin(x)", {"x": 1.0}, check=CheckMode.REPORT, symbolic=symbolic)
    assert report.check.status is Status.AGREE
    with pytest.raises(InvalidArgument, match="unknown check mode 'loose'"):
        differentiate("sin(x)", {"x": 1.0}, check="loose", symbolic=symbolic)


def test_hessian(symbolic: Symbolic) -> None:
    result = differentiate("sin(x**2) * y", {"x": 1.2, "y": 0.5}, hessian=True,
                           symbolic=symbolic)
    assert result.hessian is not None
    assert float(result.hessian.values["x", "y"]) == pytest.approx(2 * 1.2 * np.cos(1.44))
    assert result.hessian.closed_forms["x", "y"] == "2*x*cos(x**2)"
    assert result.hessian.closed_forms["y", "y"] == "0"
    # The closed form's second derivatives are what is checked: a SYMBOLIC check.
    assert result.hessian.check.method is Method.SYMBOLIC
    assert result.hessian.check.status is Status.AGREE
    vector = differentiate("sum(x**3)", {"x": np.array([1.0, 2.0])}, hessian=True,
                           symbolic=symbolic)
    assert vector.hessian is not None
    np.testing.assert_allclose(vector.hessian.values["x", "x"], [[6.0, 0.0], [0.0, 12.0]])
    with pytest.raises(LimitExceeded, match="Hessian over 100 variables"):
        differentiate("sum(x)", {"x": np.ones(100)}, hessian=True, symbolic=symbolic)


def test_a_hessian_block_comes_in_the_wider_of_its_leaves_dtypes(symbolic: Symbolic) -> None:
    result = differentiate("sin(x * y) + x * x", {"x": np.float32(0.5), "y": np.float64(2.0)},
                           hessian=True, symbolic=symbolic)
    assert result.hessian is not None
    dtypes_of = {pair: block.dtype for pair, block in result.hessian.values.items()}
    assert dtypes_of == {("x", "x"): np.float32, ("x", "y"): np.float64,
                         ("y", "x"): np.float64, ("y", "y"): np.float64}


def test_graphs_seeds_and_wrt(symbolic: Symbolic) -> None:
    g = Graph([Leaf("a", "x"), Constant("c", np.array([1.0, 2.0])),
               Operation("m", "mul", ("a", "c")), Operation("s", "sin", ("m",))], "s")
    result = differentiate(g, {"x": np.array([0.3, 0.4])}, seed=[1.0, -1.0], symbolic=symbolic)
    np.testing.assert_allclose(result.gradients["x"],
                               [np.cos(0.3), -2 * np.cos(0.8)])
    assert result.check.status is Status.AGREE
    only_x = differentiate("x * y", {"x": 2.0, "y": 3.0}, wrt=["x"], symbolic=symbolic)
    assert set(only_x.gradients) == {"x"} == set(only_x.closed_forms)
    assert only_x.closed_forms["x"] == "y"


@pytest.mark.parametrize(("op", "status"), [("sum", Status.AGREE), ("mean", Status.SINGULAR)])
def test_a_reduction_of_no_elements(symbolic: Symbolic, op: str, status: Status) -> None:
    # PyTorch: sum of nothing is 0, mean nan; the gradient has no elements either way.
    g = Graph([Leaf("e", "e"), Operation("r", op, ("e",))], "r")
    result = differentiate(g, {"e": np.zeros(0, np.float32)}, symbolic=symbolic)
    assert result.gradients["e"].shape == (0,)
    assert result.check.status is status, result.check.reason


def _failing_derivations(monkeypatch: pytest.MonkeyPatch) -> None:
    # A task that raises in its worker, whatever the plan: the worker runs only functions of
    # crossgrad.engine, and shapes.t takes one argument where a derivation is given two.
    monkeypatch.setattr(solver, "_compile", shapes.t)


def test_a_failed_derivation_is_not_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_derivations(monkeypatch)
    side = Symbolic(Caps(workers=1))  # its own: the failure is remembered for the pool's life
    valid = validate(formula.parse("sum(sin(x))"), {"x": ((3,), float32)})
    check = GradientCheck(valid, ["x"], side)
    x = {"x": np.ones(3, np.float32)}
    gradient = {"x": np.cos(np.ones(3, np.float32))}
    try:
        first = check(x, np.float32(3 * np.sin(1.0)), gradient)
        tasks = side.budget.tasks
        again = check(x, np.float32(3 * np.sin(1.0)), gradient)
        assert again.check == first.check and "derivation failed" in first.check.reason
        assert "Error" not in first.check.reason  # the exception's type is for the log only
        assert side.budget.tasks == tasks  # the worker was not asked again
    finally:
        side.close()


def test_failures_are_remembered_per_structure_in_a_bounded_map(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_derivations(monkeypatch)
    side = Symbolic(Caps(workers=1), cache_size=1)

    def check(shape: tuple[int, ...]) -> str:
        """A new GradientCheck per call, as the server's Differentiate makes."""
        return differentiate("sum(sin(x))", {"x": np.ones(shape, np.float32)},
                             symbolic=side).check.reason

    try:
        first = check((2,))
        assert "derivation failed" in first and side.budget.tasks == 1
        assert check((2,)) == first and side.budget.tasks == 1  # not asked again
        check((2, 2))  # another structure that fails: the first one's failure is forgotten
        assert side.budget.tasks == 2
        assert check((2,)) == first and side.budget.tasks == 3
    finally:
        side.close()


def test_a_closed_form_of_empty_leaves(symbolic: Symbolic) -> None:
    # SymEngine compiles no function of zero arguments; the form of the sum of nothing takes an
    # unused one, and the check compares closed forms, not finite differences.
    for shape in [(0,), (0, 2)]:
        result = differentiate("sum(sin(e))", {"e": np.zeros(shape, np.float32)},
                               symbolic=symbolic)
        assert result.value == 0 and result.gradients["e"].shape == shape
        assert result.check.status is Status.AGREE and result.check.method is Method.SYMBOLIC


def test_nothing_to_differentiate_is_no_check(symbolic: Symbolic) -> None:
    # Int leaves get no gradient, so a non-scalar output needs no seed and nothing is checked.
    g = Graph([Leaf("i", "i"), Operation("l", "log", ("i",))], "l")
    result = differentiate(g, {"i": np.array([2, 3])}, symbolic=symbolic)
    np.testing.assert_allclose(result.value, np.log([2.0, 3.0]).astype(np.float32))
    assert result.gradients == {} and result.check.status is Status.SKIPPED


@pytest.mark.parametrize("cap", [False, True])
def test_an_explicit_gradient_for_a_one_element_output_scales_the_closed_form(
        symbolic: Symbolic, cap: bool) -> None:
    # y.backward(torch.tensor(2.0)): the gradient is 2 dy/dx, and so is the reference it is
    # checked against (fused closed form, or op by op past the fused form's size).
    checker = Symbolic(Caps(fused_max_outputs=0)) if cap else symbolic
    try:
        for seed in (2.0, [[-0.5]]):
            values = {"x": 3.0} if np.ndim(seed) == 0 else {"x": [[3.0]]}
            result = differentiate("x ** 2", values, seed=seed, symbolic=checker)
            np.testing.assert_allclose(result.gradients["x"], np.multiply(seed, 6.0))
            assert result.check.status is Status.AGREE, result.check.reason
    finally:
        if cap:
            checker.close()


def test_big_graphs_are_evaluated_op_by_op(symbolic: Symbolic) -> None:
    n = 500
    rng = np.random.default_rng(0)
    values = {"w": rng.normal(size=n), "x": rng.normal(size=n), "b": 0.2}
    result = differentiate("mean(sigmoid(w * x + b))", values, symbolic=symbolic)
    assert result.check.method is Method.SYMBOLIC and result.check.status is Status.AGREE
    assert result.closed_forms == {} and "evaluated op by op" in result.notes[0]


@pytest.mark.parametrize("source, values, message", [
    ("sin(x)", {"x": "text"}, "not an array of numbers"),
    ("sin(x)", {"x": np.array([1, 2], np.int8)}, "dtype int8"),
    ("sin(x)", {}, "unknown leaf 'x'"),
    ("sin(x)", {"x": float("nan")}, "not finite"),
    ("__import__(x)", {"x": 1.0}, "the name '__import__'"),
    ("x.real", {"x": 1.0}, "attribute access"),
    ("x ** (10 ** 10)", {"x": 1.0}, "the exponent 10000000000 (at most 1000"),
    ("x ** (5000 + 0)", {"x": 1.0}, "the exponent 5000 (at most 1000"),
    ("x * 9 ** 99 ** 99", {"x": 1.0}, "is not allowed in a formula"),
])
def test_bad_input_is_refused_with_what_is_wrong(symbolic: Symbolic, source: str,
                                                 values: dict[str, Any], message: str) -> None:
    tasks = symbolic.budget.tasks
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
        differentiate(source, values, symbolic=symbolic)
    assert symbolic.budget.tasks == tasks
