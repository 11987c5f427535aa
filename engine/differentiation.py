"""``differentiate``: a gradient derived twice and checked — the one entry point the server and
the CLI call.

1. The graph (or the formula, parsed by the safe parser) is validated against the values.
2. The numeric engine computes the value and the gradient: that is what is returned, as PyTorch
   would compute it.
3. The closed form is derived in a worker under a deadline (or taken from the cache: derivations
   are keyed by structure, never by values), compiled, and evaluated at the same values in
   float64; past a cap or the deadline, central finite differences check instead. A derivation
   the caller stopped waiting for runs on in its worker (up to ``Caps.deadline``) and fills the
   cache for the next call. What a structure's derivation did is remembered (``Symbolic``, in
   ``solver.py``): one
   that raised in its worker or killed it twice in a row is not tried again, one that passed the
   pool's deadline not within that deadline; a single death or a caller's deadline costs only
   the one call.
4. The check compares them (``check.py``); in STRICT mode a disagreement fails the call.
5. Only then is the closed form rendered as text, in a task of its own, after the compiled one:
   the check never waits on text, and making the text readable is bounded apart
   (``Caps.render_seconds``; past it the form is shown unsimplified or as SymEngine prints it,
   and the result says so).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from . import dtypes, formula
from .check import CheckMode
from .errors import InvalidArgument
from .evaluation import inputs
from .gradient_check import Result
from .graph import DEFAULT_LIMITS, Graph, Limits
from .graph import validate as validate_graph
from .prepared import Prepared
from .solver import Symbolic, default_symbolic


def differentiate(source: Graph | str, values: Mapping[str, npt.ArrayLike], *,
                  wrt: Sequence[str] | None = None, check: str | CheckMode = "strict",
                  hessian: bool = False, seed: npt.ArrayLike | None = None,
                  limits: Limits = DEFAULT_LIMITS, symbolic: Symbolic | None = None,
                  deadline: float | None = None) -> Result:
    """The value of ``source`` at ``values``, its gradient, closed forms and the check report.

    ``source``: a ``Graph`` or a formula (``"sin(x**2)"``). ``values``: per leaf, a number or
    array; NumPy arrays keep their dtype (float32 as PyTorch's default), Python numbers and lists
    are float64. ``wrt``: the leaves to differentiate (default: every floating leaf). ``check``:
    "strict" (a disagreement raises ``CheckFailed``), "report" or "off" (no symbolic work).
    ``hessian``: second derivatives from the closed form too. ``seed``: the vector of the
    vector-Jacobian product when the output is not a scalar. ``deadline``: seconds for the
    symbolic derivation (default: the caps').
    """
    mode = CheckMode.of(check)
    graph = formula.parse(source, limits) if isinstance(source, str) else source
    arrays = {name: _as_array(name, value) for name, value in values.items()}
    valid = validate_graph(graph, {n: (a.shape, dtypes.from_numpy(a.dtype))
                                   for n, a in arrays.items()}, limits)
    checked, names, seed_array = inputs(valid, arrays, wrt, seed)  # checks wrt and the values
    prepared = Prepared(valid, symbolic or default_symbolic())
    return prepared.differentiate(checked, names, seed=seed_array, mode=mode, hessian=hessian,
                                  deadline=deadline)


def _as_array(name: str, value: npt.ArrayLike) -> np.ndarray:
    if isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value)
    else:
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise InvalidArgument(f"the value of {name!r} is not an array of numbers: {error}",
                                  node=name) from None
    if array.dtype.kind not in "fiub" or array.dtype not in _DTYPES:
        raise InvalidArgument(f"the value of {name!r} has dtype {array.dtype}; use float32, "
                              "float64, int64 or bool", node=name)
    return array


_DTYPES = {np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64), np.dtype(np.bool_)}
