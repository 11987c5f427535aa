"""The special functions NumPy lacks (``engine/special.py``) against Python's ``math``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from crossgrad.engine import special


def _reference(x: np.ndarray) -> np.ndarray:
    return np.array([math.erf(v) for v in x.astype(np.float64).ravel()]).reshape(x.shape)


def _points() -> np.ndarray:
    rng = np.random.default_rng(0)
    tiny = np.logspace(-320, 0, 500)
    return np.concatenate([np.linspace(-7, 7, 40_001), rng.standard_normal(20_000) * 2,
                           tiny, -tiny, [0.0, 6.0, -6.0, 5.99, 1 / 512, 3 / 512]])


def test_erf_is_within_two_ulps_in_float64() -> None:
    x = _points()
    expected = _reference(x)
    ulps = np.abs(special.erf(x) - expected) / np.spacing(np.abs(expected))
    assert ulps.max() <= 2, (x[ulps.argmax()], ulps.max())


def test_erf_rounds_as_math_erf_in_float32() -> None:
    x = _points().astype(np.float32)
    got = special.erf(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, _reference(x).astype(np.float32))


@pytest.mark.parametrize("size", [1, 31, 32, 1000])  # both sides of the per-element cut
def test_erf_at_the_edges(size: int) -> None:
    edges = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-320, 40.0, -40.0])
    x = np.resize(edges, size)
    got = special.erf(x)
    expected = _reference(x)
    np.testing.assert_array_equal(got, expected)
    assert (np.signbit(got) == np.signbit(expected)).all()


def test_erf_of_integers_is_float64_and_of_scalars_a_scalar() -> None:
    assert special.erf(np.arange(40)).dtype == np.float64
    assert np.ndim(special.erf(np.float32(0.5))) == 0
