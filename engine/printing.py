"""Tensor ``repr`` text, character for character what PyTorch 2.13 prints with default options.

PyTorch decides one element style (integer, fixed point or scientific) and one column width for
the whole tensor, from the nonzero finite values it will actually show, then lays the elements out
in nested brackets and appends ``dtype=``/``requires_grad=``/``grad_fn=`` suffixes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np

from .dtypes import DType

# PyTorch's default print options.
PRECISION = 4
THRESHOLD = 1000  # more elements than this and only the edges of each dimension are shown
EDGEITEMS = 3
LINEWIDTH = 80

_PREFIX = "tensor("
_Scalar = float | int | bool
_Style = Literal["plain", "whole", "fixed", "sci"]


def _edges(data: np.ndarray) -> np.ndarray:
    """The elements a summarized print shows: the first and last EDGEITEMS along each long axis."""
    index = []
    for size in data.shape:
        if size > 2 * EDGEITEMS:
            index.append(np.r_[0:EDGEITEMS, size - EDGEITEMS : size])
        else:
            index.append(np.arange(size))
    return data[np.ix_(*index)]


def _render(value: _Scalar, style: _Style) -> str:
    """One element, unpadded. Values arrive as Python numbers, exactly as PyTorch's ``tolist``."""
    if style == "sci":
        return f"{value:.{PRECISION}e}"
    if style == "fixed":
        return f"{value:.{PRECISION}f}"
    if style == "whole":
        # A trailing dot marks integral values as floating point; inf and nan need no marker.
        text = f"{value:.0f}"
        return text + "." if math.isfinite(value) else text
    return str(value)


def _formatter(shown: np.ndarray, dtype: DType) -> tuple[Callable[[_Scalar], str], int]:
    """The element formatter (right-aligning to a common width) and that width."""
    values = shown.ravel().tolist()
    style: _Style = "plain"
    if dtype.is_floating_point:
        style = "whole"
        # Zeros, inf and nan take no part in choosing the style or the width.
        values = [v for v in values if v != 0 and math.isfinite(v)]
        if values:
            magnitudes = [abs(v) for v in values]
            # Python floats are doubles, which is the precision PyTorch decides in.
            big, small = max(magnitudes), min(magnitudes)
            if big / small > 1000.0 or big > 1.0e8 or small < 1.0e-4:
                style = "sci"
            elif not all(v.is_integer() for v in values):
                style = "fixed"
    width = max([1] + [len(_render(v, style)) for v in values])

    def render(value: _Scalar) -> str:
        return _render(value, style).rjust(width)

    return render, width


def _nest(data: np.ndarray, indent: int, summarize: bool,
          render: Callable[[_Scalar], str], width: int) -> str:
    """The bracketed body of ``data``, whose first line starts at column ``indent``."""
    if data.ndim == 0:
        return render(data.item())
    cut = summarize and data.shape[0] > 2 * EDGEITEMS
    if data.ndim == 1:
        if cut:
            head, tail = data[:EDGEITEMS].tolist(), data[-EDGEITEMS:].tolist()
            items = [render(v) for v in head] + [" ..."] + [render(v) for v in tail]
        else:
            items = [render(v) for v in data.tolist()]
        # Each element takes its width plus ", "; the ellipsis counts as an element too.
        per_line = max(1, (LINEWIDTH - indent) // (width + 2))
        lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
        return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"
    if cut:
        rows = [_nest(data[i], indent + 1, summarize, render, width) for i in range(EDGEITEMS)]
        rows.append("...")
        rows += [_nest(data[i], indent + 1, summarize, render, width)
                 for i in range(len(data) - EDGEITEMS, len(data))]
    else:
        rows = [_nest(row, indent + 1, summarize, render, width) for row in data]
    # Sub-blocks of a 3-D or deeper tensor are separated by ndim - 2 blank lines.
    return "[" + ("," + "\n" * (data.ndim - 1) + " " * (indent + 1)).join(rows) + "]"


def _append_suffixes(text: str, suffixes: list[str]) -> str:
    """Close ``tensor(`` after the suffixes, moving each to its own line when it would overflow."""
    parts = [text]
    # PyTorch's measure counts two more than the characters on the last line; kept for fidelity.
    used = len(text) - text.rfind("\n") + 1
    for suffix in suffixes:
        if used + len(suffix) + 2 > LINEWIDTH:
            parts.append(",\n" + " " * len(_PREFIX) + suffix)
            used = len(_PREFIX) + len(suffix)
        else:
            parts.append(", " + suffix)
            used += len(suffix) + 2
    return "".join(parts) + ")"


def format_tensor(data: np.ndarray, dtype: DType, *, requires_grad: bool = False,
                  grad_fn: str | None = None) -> str:
    """The text PyTorch's ``repr`` gives a CPU tensor with these values, dtype and autograd flags.

    ``grad_fn`` is the backward node's class name, e.g. ``"PowBackward0"``; when given it is shown
    instead of ``requires_grad=True``, as PyTorch does for non-leaf tensors.
    """
    array = np.asarray(data, dtype=dtype.numpy)
    suffixes = []
    if array.size == 0:
        body = "[]"
        # No element reveals an empty tensor's shape or (non-default) type, so both are spelled out.
        if array.ndim != 1:
            suffixes.append(f"size={tuple(array.shape)}")
        if dtype.name != "float32":
            suffixes.append(f"dtype={dtype!r}")
    else:
        summarize = array.size > THRESHOLD
        render, width = _formatter(_edges(array) if summarize else array, dtype)
        body = _nest(array, len(_PREFIX), summarize, render, width)
        # int64 and bool are defaults for their kind, so only float64 needs naming.
        if dtype.name == "float64":
            suffixes.append(f"dtype={dtype!r}")
    if grad_fn is not None:
        suffixes.append(f"grad_fn=<{grad_fn}>")
    elif requires_grad:
        suffixes.append("requires_grad=True")
    return _append_suffixes(_PREFIX + body, suffixes)
