"""The erf row's forward (SciPy's) against Python's ``math.erf`` (libm's), in the dtypes the engine
computes in: what the row promises, whichever library computes it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from crossgrad.engine.ops import TABLE

erf = TABLE["erf"].forward


def _reference(x: np.ndarray) -> np.ndarray:
    return np.array([math.erf(v) for v in x.astype(np.float64).ravel()]).reshape(x.shape)


def _points() -> np.ndarray:
    rng = np.random.default_rng(0)
    tiny = np.logspace(-320, 0, 500)
    return np.concatenate([np.linspace(-7, 7, 40_001), rng.standard_normal(20_000) * 2,
                           tiny, -tiny, [0.0, 6.0, -6.0, 5.99, 1 / 512, 3 / 512]])


def test_erf_is_within_four_ulps_in_float64() -> None:
    # Cephes' documented peak relative error is 3.7e-16: up to 4 ulps near the top of a binade.
    x = _points()
    expected = _reference(x)
    ulps = np.abs(erf(x) - expected) / np.spacing(np.abs(expected))
    assert ulps.max() <= 4, (x[ulps.argmax()], ulps.max())


def test_erf_rounds_as_math_erf_in_float32() -> None:
    x = _points().astype(np.float32)
    got = erf(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, _reference(x).astype(np.float32))


@pytest.mark.parametrize("size", [1, 1000])
def test_erf_at_the_edges(size: int) -> None:
    edges = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-320, 40.0, -40.0])
    x = np.resize(edges, size)
    got = erf(x)
    expected = _reference(x)
    np.testing.assert_array_equal(got, expected)
    assert (np.signbit(got) == np.signbit(expected)).all()


def test_erf_of_integers_is_float64_and_of_scalars_a_scalar() -> None:
    assert erf(np.arange(40)).dtype == np.float64
    assert np.ndim(erf(np.float32(0.5))) == 0
