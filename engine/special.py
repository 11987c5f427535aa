"""Special functions NumPy lacks, vectorized: ``erf``.

``erf`` of an array is a table lookup and a short Taylor expansion: the table holds, at every
1/256 from 0 to 6, erf and its first five derivatives over k! (from ``math.erf`` and Hermite
polynomials), so erf(x0 + h) for |h| <= 1/512 is a degree-5 polynomial in h, within 2 ulps of
``math.erf`` in float64 (and equal to it once rounded to float32). Past 6, erf is ±1 in float64.
Small arrays go through ``math.erf`` per element, which is faster below a few dozen elements.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_STEPS_PER_UNIT = 256
_TERMS = 6
_LIMIT = 6.0  # erfc(6) < 2.2e-17: erf rounds to 1 past it
_PER_ELEMENT_BELOW = 32  # elements; the table's fixed cost is ~15 µs


def _taylor_table() -> np.ndarray:
    """``table[k, i]``: the k-th derivative of erf at ``i / _STEPS_PER_UNIT``, over k!."""
    x0 = np.arange(int(_LIMIT * _STEPS_PER_UNIT) + 1) / _STEPS_PER_UNIT
    table = np.empty((_TERMS, x0.size))
    table[0] = [math.erf(v) for v in x0]
    # erf^(k)(x) = 2/sqrt(pi) e^(-x^2) (-1)^(k-1) H_(k-1)(x), H the physicists' Hermite
    # polynomials: H_0 = 1, H_1 = 2x, H_(n+1) = 2x H_n - 2n H_(n-1).
    gauss = 2 / math.sqrt(math.pi) * np.exp(-x0 * x0)
    before, hermite = np.zeros_like(x0), np.ones_like(x0)
    for k in range(1, _TERMS):
        n = k - 1
        table[k] = gauss * (-1) ** n * hermite / math.factorial(k)
        before, hermite = hermite, 2 * x0 * hermite - 2 * n * before
    return table


_TABLE = _taylor_table()
_erf_objects = np.frompyfunc(math.erf, 1, 1)


def erf(x: Any) -> Any:
    """The error function of each element, in the input's float type (float64 for integers)."""
    dtype = np.result_type(x) if np.result_type(x).kind == "f" else np.dtype(np.float64)
    if np.size(x) < _PER_ELEMENT_BELOW:
        return np.asarray(_erf_objects(x), dtype=dtype)[()]
    wide = np.asarray(x, dtype=np.float64)
    magnitude = np.fmin(np.abs(wide), _LIMIT)  # fmin: NaN becomes the limit, restored below
    nearest = (magnitude * _STEPS_PER_UNIT + 0.5).astype(np.intp)
    h = magnitude - nearest * (1 / _STEPS_PER_UNIT)
    terms = _TABLE[:, nearest]
    value = terms[_TERMS - 1]
    for k in range(_TERMS - 2, -1, -1):
        value = value * h + terms[k]
    result = np.where(np.isnan(wide), wide, np.copysign(value, wide))
    return result.astype(dtype, copy=False)
