"""The check's comparisons: each status reachable, and each able to fail."""

from __future__ import annotations

from collections.abc import Mapping

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from crossgrad.engine import check, dtypes
from crossgrad.engine.check import (
    Method,
    Status,
    compare,
    finite_difference,
    tolerance,
)
from hypothesis import given, settings
from hypothesis import strategies as st

F32, F64 = dtypes.float32, dtypes.float64


def test_agree_within_tolerance_by_dtype() -> None:
    exact = {"x": np.array([1.0, -2.0, 3.0])}
    close32 = {"x": exact["x"] * (1 + 3e-5)}
    assert compare(close32, exact, F32).status is Status.AGREE
    assert compare(close32, exact, F64).status is Status.DISAGREE  # too far for float64
    assert tolerance(F32) != tolerance(F64)


def test_disagreement_names_the_leaf_and_element() -> None:
    report = compare({"w": np.array([[1.0, 2.0], [3.0, 4.0]])},
                     {"w": np.array([[1.0, 2.0], [3.0, 4.5]])}, F64)
    assert report.status is Status.DISAGREE and report.method is Method.SYMBOLIC
    assert report.reason.startswith("d/dw[1,1]: the numeric gradient 4.0 vs closed form 4.5")
    assert report.max_abs_error == pytest.approx(0.5)
    assert report.max_rel_error == pytest.approx(0.5 / 4.5)


def test_a_gradient_missing_on_one_side_is_compared_with_zero() -> None:
    assert compare({"x": np.array(0.0)}, {}, F64).status is Status.AGREE
    assert compare({"x": np.array(1.0)}, {}, F64).status is Status.DISAGREE


@pytest.mark.parametrize("numeric, closed, status", [
    (np.nan, np.nan, Status.AGREE),
    (np.inf, np.inf, Status.AGREE),
    (np.inf, -np.inf, Status.SINGULAR),
    (np.nan, 0.0, Status.SINGULAR),
    (0.0, np.nan, Status.SINGULAR),
])
def test_non_finite_values(numeric: float, closed: float, status: Status) -> None:
    report = compare({"x": np.array([1.0, numeric])}, {"x": np.array([1.0, closed])}, F64)
    assert report.status is status


def test_singular_points_do_not_hide_a_disagreement_elsewhere() -> None:
    report = compare({"x": np.array([np.nan, 2.0])}, {"x": np.array([0.0, 3.0])}, F64)
    assert report.status is Status.DISAGREE


_ELEMENTS = st.one_of(st.floats(-1e3, 1e3), st.sampled_from([0.0, 1.0, 1.00001, np.nan, np.inf]))


@st.composite
def _pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """A numeric gradient (float32 or float64) and a closed form near it, or not."""
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=5))
    got = draw(hnp.arrays(draw(st.sampled_from([np.float32, np.float64])), shape,
                          elements=_ELEMENTS.map(float).filter(lambda v: abs(v) < 1e30)))
    near = draw(hnp.arrays(np.float64, shape, elements=st.floats(-1e-4, 1e-4)))
    want = np.where(draw(hnp.arrays(np.bool_, shape)), got + near,
                    draw(hnp.arrays(np.float64, shape, elements=_ELEMENTS)))
    return got, want


@settings(max_examples=200, deadline=None)
@given(st.lists(_pairs(), min_size=1, max_size=3))
def test_few_elements_take_the_rule_of_many(pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    # compare judges up to 16 elements with Python floats: the same report as NumPy's path.
    numeric = {f"x{i}": got for i, (got, _) in enumerate(pairs)}
    closed = {f"x{i}": want for i, (_, want) in enumerate(pairs)}
    for dtype in (F32, F64):
        few = compare(numeric, closed, dtype)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(check, "_FEW", -1)
            many = compare(numeric, closed, dtype)
        assert few == many


def _quadratic(values: Mapping[str, np.ndarray]) -> float:
    return float(np.sum(values["x"] ** 2) + 3 * float(values["y"]))


def test_finite_differences_agree_with_a_right_gradient() -> None:
    values = {"x": np.array([1.0, -2.0]), "y": np.array(0.5)}
    report = finite_difference(_quadratic, values, {"x": 2 * values["x"], "y": np.array(3.0)},
                               F64, "over a cap")
    assert report.method is Method.FINITE_DIFFERENCE and report.status is Status.AGREE
    assert report.reason.startswith("over a cap; ")


def test_finite_differences_catch_a_wrong_gradient() -> None:
    values = {"x": np.array([1.0, -2.0]), "y": np.array(0.5)}
    report = finite_difference(_quadratic, values, {"x": values["x"], "y": np.array(3.0)},
                               F64, "over a cap")
    assert report.status is Status.DISAGREE and "two directions" in report.reason


def _relus(values: Mapping[str, np.ndarray]) -> float:
    return float(np.sum(np.maximum(values["x"], 0.0)))


# Exact zeros: relu's kink, where PyTorch's convention gives the gradient 0.
KINKED = {"x": np.array([0.0, 0.0, 1.5, -2.0, 0.0, 3.0])}


def test_finite_differences_at_kinks_are_singular_for_a_convention() -> None:
    gradient = (KINKED["x"] > 0).astype(np.float64)
    report = finite_difference(_relus, KINKED, {"x": gradient}, F64, "over a cap")
    assert report.status is Status.SINGULAR and "kink along both" in report.reason


def test_finite_differences_at_kinks_still_catch_a_gradient_no_convention_gives() -> None:
    # 5 at the zeros is no subgradient of relu: the slope is outside the one-sided ones.
    gradient = np.where(KINKED["x"] == 0, 5.0, (KINKED["x"] > 0).astype(np.float64))
    report = finite_difference(_relus, KINKED, {"x": gradient}, F64, "over a cap")
    assert report.status is Status.DISAGREE


def test_finite_differences_with_nothing_to_check() -> None:
    report = finite_difference(_quadratic, {"x": np.ones(2)}, {}, F64, "over a cap")
    assert report.status is Status.SKIPPED


def test_a_singular_report_gives_both_values_at_each_singular_element() -> None:
    # The numeric gradient NaN (PyTorch's) where the closed form is finite: the user sees the
    # closed form's values too, element by element (the first few per leaf).
    report = compare({"x": np.full(6, np.nan), "y": np.array(np.inf)},
                     {"x": np.arange(6.0), "y": np.array(1.0)}, F64)
    assert report.status is Status.SINGULAR
    assert report.reason.startswith(
        "d/dx[0]: the numeric gradient gives nan where the closed form gives 0.0, as at "
        "d/dx[1] (nan vs 1.0), d/dx[2] (nan vs 2.0), d/dx[3] (nan vs 3.0) and 2 more; "
        "d/dy: the numeric gradient gives inf where the closed form gives 1.0: ")


def _at_point(numeric: dict[str, np.ndarray], closed: dict[str, np.ndarray],
              values: dict[str, np.ndarray], outputs: tuple[float, float] = (1.0, 1.0),
              ) -> check.CheckReport:
    return check.at_non_finite_points(compare(numeric, closed, F64), numeric, closed, values,
                                      (np.array(outputs[0]), np.array(outputs[1])), F64)


def test_a_disagreement_at_a_nan_input_is_singular_but_not_elsewhere() -> None:
    # relu at NaN: PyTorch passes the gradient, the closed form's branch gives 0.
    values = {"x": np.array([np.nan, 2.0, 3.0])}
    numeric = {"x": np.array([-1.0, 1.0, 1.0])}
    report = _at_point(numeric, {"x": np.array([0.0, 1.0, 1.0])}, values)
    assert report.status is Status.SINGULAR and "NaN or infinite value of leaf 'x'" in report.reason
    assert _at_point(numeric, {"x": np.array([0.0, 1.0, 5.0])}, values).status is Status.DISAGREE
    finite = {"x": np.array([1.0, 2.0, 3.0])}
    assert _at_point(numeric, {"x": np.zeros(3)}, finite).status is Status.DISAGREE


def test_a_disagreement_outside_the_domain_is_singular() -> None:
    # log1p at x < -1: NaN, where the closed form's identity gives a number; PyTorch's
    # 1 / (1 + x) against the identity's derivative.
    values = {"x": np.array([-2.5])}
    numeric, closed = {"x": np.array([-0.667])}, {"x": np.array([0.667])}
    report = _at_point(numeric, closed, values, outputs=(np.nan, 0.96))
    assert report.status is Status.SINGULAR and "outside the function's domain" in report.reason
    for outputs in ((0.5, 0.5), (np.nan, np.nan)):
        assert _at_point(numeric, closed, values, outputs).status is Status.DISAGREE
