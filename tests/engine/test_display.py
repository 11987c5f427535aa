"""Rendering closed forms: values substituted without letting SymPy compute huge exact numbers or
meaningless ones, whatever the formula."""

from __future__ import annotations

import signal
import threading
import time

import crossgrad.engine as cg
import numpy as np
import pytest
import sympy
from crossgrad.engine import display
from crossgrad.engine.display import ClosedForms, _within, _within_size, render
from crossgrad.engine.formula import parse
from crossgrad.engine.graph import Leaf, validate
from crossgrad.engine.symbolic import Plan, constants_of, derive


def rendered(formula: str, seconds: float | None = None) -> tuple[ClosedForms, float]:
    """The closed forms of every leaf's gradient, rendered in this process, and the seconds."""
    start = time.perf_counter()
    graph = parse(formula)
    leaves = sorted(n.name for n in graph.nodes if isinstance(n, Leaf))
    valid = validate(graph, {name: ((), cg.float64) for name in leaves})
    plan = Plan.of(valid, leaves)
    forms = render(plan, derive(plan), constants_of(valid), seconds)
    return forms, time.perf_counter() - start


# Seven ops whose simplification takes SymPy seconds (exptrigsimp on nested exponentials).
SLOW_TO_SIMPLIFY = "exp(sigmoid(exp(cos(x) + 5) + 2)) + 4"


@pytest.mark.parametrize(("formula", "text", "latex"), [
    # SymPy's 0*y -> 0 leaves 9**1000000000: kept as written, never computed.
    ("x * 9 ** (y*0 + 1000000000)", "9**1000000000", "9^{1000000000}"),
    ("x * 9 ** ((y*0 + 1000) * (y*0 + 1000) * (y*0 + 1000))", "9**1000000000",
     "9^{1000000000}"),
    ("x * sqrt(2 + y*0) ** (y*0 + 100000)", "2**50000", "2^{50000}"),
    # SymPy turns exp(n*log(9)) into 9**n.
    ("x * exp(log(9) * (y*0 + 1000000000))", "exp(1000000000*log(9))",
     "e^{1000000000 \\log{\\left(9 \\right)}}"),
    # Not simplified: simplify would expand the power.
    ("(x + 1) ** (y*0 + 1000000)", "1000000*(x + 1)**999999",
     "1000000 \\left(x + 1\\right)^{999999}"),
    ("(x + 1) ** 1000", "1000*(x + 1)**999", "1000 \\left(x + 1\\right)^{999}"),
])
def test_huge_exact_numbers_are_kept_as_written(formula: str, text: str, latex: str) -> None:
    forms, seconds = rendered(formula)
    assert forms.text["x"] == text and forms.latex["x"] == latex
    assert seconds < 1.0


@pytest.mark.parametrize(("formula", "leaf", "text", "latex"), [
    # A negative exponent: LaTeX's fraction would rebuild 7**1000000000 and compute it.
    ("x * 7 ** (y*0 - 1000000000)", "x", "1/7**1000000000", "\\frac{1}{7^{1000000000}}"),
    ("x / 7 ** (y*0 + 1000000000)", "x", "1/7**1000000000", "\\frac{1}{7^{1000000000}}"),
    ("x * 3 / 7 ** (y*0 + 1000000000)", "x", "3/7**1000000000", "\\frac{3}{7^{1000000000}}"),
    ("x * (0 - 7) ** (y*0 - 1000000001)", "x", "1/(-7)**1000000001",
     "\\frac{1}{\\left(-7\\right)^{1000000001}}"),
    ("x * sqrt(2 + y*0) ** (y*0 - 100001)", "x", "1/2**(100001/2)",
     "\\frac{1}{2^{\\frac{100001}{2}}}"),
    # Powers of powers, products and quotients of them.
    ("x * (7 ** (y*0 - 100000)) ** (y*0 + 100000)", "x", "(7**100000)**(-100000)",
     "\\frac{1}{\\left(7^{100000}\\right)^{100000}}"),
    ("x * 9**(y*0 + 1000000000) / 7**(y*0 + 1000000000)", "x", "9**1000000000/7**1000000000",
     "\\frac{9^{1000000000}}{7^{1000000000}}"),
    ("x * 9**(y*0 + 1000000000) / 9**(y*0 + 1000000000)", "x", "1", "1"),
    ("x * 9**(y*0 + 1000000000) * 9**(y*0 + 1000000000)", "x", "(9**1000000000)**2",
     "\\left(9^{1000000000}\\right)^{2}"),
    ("x * (y*0) ** (y*0 + 1000000000)", "x", "0", "0"),
    # SymPy keeps exp of an integer symbolic.
    ("x * exp(y*0 + 1000000000)", "x", "exp(1000000000)", "e^{1000000000}"),
    ("x * exp(-(y*0 + 1000000000))", "x", "exp(-1000000000)", "e^{-1000000000}"),
    ("x / exp(log(9) * (y*0 + 1000000000))", "x", "exp(-1000000000*log(9))",
     "e^{- 1000000000 \\log{\\left(9 \\right)}}"),
    # Through the chain rule, with a symbolic exponent: simplify would take 9**1000000000 out.
    ("9 ** (y * 1000000000)", "y", "1000000000*9**(1000000000*y)*log(9)",
     "1000000000 \\cdot 9^{1000000000 y} \\log{\\left(9 \\right)}"),
    ("x / 7 ** (y * 1000000000)", "y", "-1000000000*x*log(7)/7**(1000000000*y)",
     "- 1000000000 \\cdot 7^{- 1000000000 y} x \\log{\\left(7 \\right)}"),
])
def test_huge_powers_render_quickly_in_every_printer(formula: str, leaf: str, text: str,
                                                     latex: str) -> None:
    forms, seconds = rendered(formula)
    assert forms.text[leaf] == text and forms.latex[leaf] == latex
    assert seconds < 5.0  # computing the power takes minutes


def test_a_huge_power_of_a_fraction_reads_as_a_float() -> None:
    # 2/3 is folded to a float, whose power mpmath computes at once.
    forms, seconds = rendered("x * (2/3) ** (y*0 + 1000000000)")
    assert forms.text["x"].startswith("8.79667841925552") and "e-176091260" in forms.text["x"]
    assert seconds < 5.0


def test_a_power_of_a_product_is_bounded() -> None:
    # (2*x)**1000 is 2**1000 * x**1000; its 1000th power is not multiplied out.
    forms, seconds = rendered("((2*x)**1000)**1000")
    assert seconds < 1.0
    assert "(" + str(2**1000) + "*x**1000)**999" in forms.text["x"]


def test_numbers_too_long_to_print_exactly_read_as_floats() -> None:
    # 300 factors of 15 digits: Python prints no integer past 4,300 digits.
    forms, seconds = rendered("x" + " * 999999999999999" * 300)
    assert forms.text["x"].startswith("9.99999999999") and "e+4499" in forms.text["x"]
    assert seconds < 5.0


@pytest.mark.parametrize(("formula", "leaf", "text", "latex"), [
    ("x / 0", "x", "1/0", "\\frac{1}{0}"),
    ("(x + y) / 0", "y", "1/0", "\\frac{1}{0}"),
    ("x * log(y * 0)", "x", "log(0)", "\\log{\\left(0 \\right)}"),
])
def test_undefined_values_are_kept_as_written_not_zoo(formula: str, leaf: str, text: str,
                                                      latex: str) -> None:
    forms, _ = rendered(formula)
    assert forms.text[leaf] == text and forms.latex[leaf] == latex


def test_division_by_zero_end_to_end() -> None:
    result = cg.differentiate("x / 0", {"x": 2.0}, check="report")
    assert result.closed_forms["x"] == "1/0" and result.latex["x"] == "\\frac{1}{0}"
    assert result.gradients["x"] == np.inf  # the numeric side is PyTorch's


@pytest.mark.parametrize(("formula", "text"), [
    ("sin(x**2)", "2*x*cos(x**2)"),
    ("x**2/3 + x/7", "2*x/3 + 1/7"),
    ("(x + 1) ** 10", "10*(x + 1)**9"),
    ("x * 2**10", "1024"),
])
def test_ordinary_forms_are_unchanged(formula: str, text: str) -> None:
    forms, _ = rendered(formula)
    assert forms.text["x"] == text


# The timer may fire inside a weakref callback, where Python reports the exception and goes on;
# the next reminder stops the work. Expected, not a failure.
_TIMER_MAY_FIRE_IN_A_CALLBACK = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning")


@_TIMER_MAY_FIRE_IN_A_CALLBACK
def test_simplifying_past_its_bound_shows_the_form_unsimplified_and_says_so() -> None:
    handler = signal.getsignal(signal.SIGALRM)
    forms, seconds = rendered(SLOW_TO_SIMPLIFY, seconds=0.5)
    assert forms.note == ("the closed form is shown unsimplified: simplifying it for reading "
                          "passed the bound of 0.5 s")
    assert seconds < 5.0  # simplifying it without a bound takes several times longer
    # Still the right derivative: the text read back (ours, not a client's) at a point.
    x = sympy.Symbol("x")
    shown = sympy.sympify(forms.text["x"], locals={"x": x})
    point = 0.3
    expected = float(cg.differentiate(SLOW_TO_SIMPLIFY, {"x": point}).gradients["x"])
    assert float(shown.subs(x, point)) == pytest.approx(expected, rel=1e-12)
    # The timer is off and the handler is the one there was.
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is handler


def test_a_form_within_the_bound_is_simplified() -> None:
    forms, _ = rendered("sin(exp(x) * 2) + 2", seconds=5.0)
    assert forms.text["x"] == "2*exp(x)*cos(2*exp(x))" and not forms.note


@pytest.mark.parametrize("formula", [
    # SymPy's simplify puts zoo and nan into Piecewise conditions on its way through these, and
    # refuses its own comparison (TypeError).
    "reciprocal(abs(rsqrt(asinh(x))))",
    "relu(x - exp(-sign(square(expm1(-x)))))",
    # Solving the condition, SymPy evaluates erfinv outside its domain (ValueError).
    "relu(tanh(asinh(erf(x))))",
])
def test_a_form_sympy_cannot_simplify_is_shown_as_derived(formula: str) -> None:
    forms, _ = rendered(formula)
    x = sympy.Symbol("x")
    shown = sympy.sympify(forms.text["x"], locals={"x": x})  # ours, not a client's
    point = 1.1624714136123657
    expected = float(cg.differentiate(formula, {"x": point}).gradients["x"])
    assert float(shown.subs(x, point)) == pytest.approx(expected, rel=1e-12)


@_TIMER_MAY_FIRE_IN_A_CALLBACK
def test_a_bounded_computation_stops_even_when_it_catches_every_exception() -> None:
    def stubborn() -> None:
        while True:
            try:
                while True:
                    pass
            except Exception:  # as some of SymPy's clauses do
                pass

    started = time.monotonic()
    assert _within(0.1, stubborn) is None
    assert time.monotonic() - started < 5.0
    assert _within(5.0, lambda: 42) == 42
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_off_the_main_thread_a_bounded_rendering_is_symengines_print() -> None:
    out: list[ClosedForms] = []
    thread = threading.Thread(target=lambda: out.append(rendered("sin(x**2)", 5.0)[0]))
    thread.start()
    thread.join()
    assert out[0].note == ("the closed form is shown as SymEngine prints it, without LaTeX: a "
                           "bounded rendering with SymPy runs only in a process's main thread")
    assert out[0].text["x"] == "2*x*cos(x**2)" and out[0].latex == {}


def test_a_form_sympy_cannot_read_is_shown_as_symengine_prints_it() -> None:
    # SymPy folds the nested Piecewise into the condition 0 < log(0) and raises.
    forms, _ = rendered("abs(log(abs(x)))", seconds=5.0)
    assert forms.note == ("the closed form is shown as SymEngine prints it, without LaTeX: "
                          "SymPy could not read it (Invalid comparison of non-real zoo)")
    assert forms.text["x"].startswith("Piecewise((1, 0 < x), (-1, x < 0), (0, True))*")
    assert forms.latex == {}


@_TIMER_MAY_FIRE_IN_A_CALLBACK
def test_a_form_sympy_reads_too_slowly_is_shown_as_symengine_prints_it() -> None:
    # Nested clamps: SymPy takes seconds to read their Piecewise forms.
    formula = ("clamp(clamp(clamp(tanh(cos(abs(x))), min=1.185), min=-2.308, max=2.978), "
               "min=1.046)")
    forms, seconds = rendered(formula, seconds=0.3)
    assert forms.note == ("the closed form is shown as SymEngine prints it, without LaTeX: "
                          "reading it into SymPy passed the bound of 0.3 s")
    assert "tanh(cos(" in forms.text["x"] and seconds < 5.0


def test_forms_past_the_size_bound_are_shown_in_part(monkeypatch: pytest.MonkeyPatch) -> None:
    # An unsimplified form can run to hundreds of megabytes (a network's, printed by SymEngine
    # with each shared subexpression written out at each use): an answer carries a bounded part.
    monkeypatch.setattr(display, "MAX_FORMS_CHARS", 10)
    forms = ClosedForms({"a": "x" * 6, "b": "y" * 8}, {"a": "z" * 3}, {}, {}, "unsimplified")
    bounded = _within_size(forms)
    assert bounded.text == {"a": "xxxxxx", "b": "yyyy… (shown in part: 8 characters in all)"}
    assert bounded.latex == {"a": "… (shown in part: 3 characters in all)"}
    assert bounded.note == ("unsimplified; the closed forms run past 10 characters: shown in "
                            "part")
    small = ClosedForms({"a": "x"}, {}, {}, {}, "")
    assert _within_size(small) is small
