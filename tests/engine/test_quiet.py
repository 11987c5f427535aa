"""``quiet()``: NumPy's floating-point warnings off inside the block, as they were outside it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from crossgrad.engine.quiet import quiet


def test_silences_inside_and_restores_after() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with quiet():
            assert np.log(np.zeros(1))[0] == -np.inf
            with quiet():
                np.sqrt(-np.ones(1))
            np.divide(np.ones(1), 0.0)  # still quiet after the inner block
        with pytest.raises(RuntimeWarning, match="divide by zero"):
            np.log(np.zeros(1))


def test_restores_when_the_block_raises() -> None:
    before = np.geterr()
    with pytest.raises(KeyError), quiet():
        raise KeyError("x")
    assert np.geterr() == before


def test_keeps_a_callers_own_setting() -> None:
    with np.errstate(divide="raise"), quiet():
        np.log(np.zeros(1))
    with np.errstate(divide="raise"):
        with quiet():
            pass
        with pytest.raises(FloatingPointError):
            np.log(np.zeros(1))
