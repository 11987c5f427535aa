"""``quiet()``: NumPy's floating-point warnings off for a block, as PyTorch never warns of an inf
or a nan that a computation gives.

``with np.errstate(all="ignore")`` builds NumPy's error state anew on every entry: 1.3 us, a few
percent of a small backward. NumPy keeps that state in a context variable; setting it to a state
built once takes half the time and is as safe across threads and asyncio tasks. The variable is
not public API: where it is missing, ``np.errstate`` does the job.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import numpy as np

try:
    from numpy._core._ufunc_config import (  # type: ignore[attr-defined]
        _extobj_contextvar,
        _make_extobj,
    )
except ImportError:  # pragma: no cover - a NumPy that keeps its error state elsewhere
    def quiet() -> AbstractContextManager[Any]:
        return np.errstate(all="ignore")
else:
    _IGNORE_ALL = _make_extobj(all="ignore")

    class _Quiet:
        __slots__ = ("_token",)

        def __enter__(self) -> None:
            self._token = _extobj_contextvar.set(_IGNORE_ALL)

        def __exit__(self, *exc_info: object) -> None:
            _extobj_contextvar.reset(self._token)

    def quiet() -> AbstractContextManager[Any]:
        return _Quiet()
