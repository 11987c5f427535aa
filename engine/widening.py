"""The checks' references in float64: a validated graph with its floating leaves declared
float64, and leaf values widened to match (float32 widens exactly). Finite differences and the
float32-rounding judgement need float64's precision."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import dtypes
from .graph import ValidGraph
from .graph import validate as validate_graph


def widened(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The leaf values with floating ones in float64 (the same numbers: float32 widens
    exactly)."""
    return {n: a.astype(np.float64) if a.dtype.kind == "f" else a for n, a in arrays.items()}


def in_float64(valid: ValidGraph) -> ValidGraph:
    """The graph with its floating leaves declared float64: finite differences need the
    precision."""
    return validate_graph(valid.graph, {
        n: (shape, dtypes.float64 if d.is_floating_point else d)
        for n, (shape, d) in valid.leaves.items()})
