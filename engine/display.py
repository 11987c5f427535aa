"""Closed forms for a person to read: SymPy text and LaTeX, with the graph's own names and values.

The derivation works on internal symbols (``L0_3``, ``C1_0``) with constants left symbolic; here
leaf elements get their names back (``x`` for a 0-d leaf, ``x[0, 2]`` for a tensor's element),
constants are replaced by their values (integral ones as integers, so ``x**2`` reads ``2*x``), a
``detach`` result shows as ``detach(...)``, and small expressions are simplified.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy

from .symbolic import Derivation, Plan

# Simplifying costs grow quickly with size; small expressions are where it pays off.
_SIMPLIFY_MAX_OPS = 40
_detach = sympy.Function("detach")


@dataclass(frozen=True)
class ClosedForms:
    """Per leaf (and per leaf pair for the Hessian): the closed form as text and as LaTeX."""

    text: dict[str, str]
    latex: dict[str, str]
    hessian_text: dict[tuple[str, str], str]
    hessian_latex: dict[tuple[str, str], str]


def render(plan: Plan, derivation: Derivation, constants: Sequence[np.ndarray]) -> ClosedForms:
    names = _names(plan, derivation, constants)
    shapes = dict(plan.leaves)
    text, latex = {}, {}
    for leaf, gradient in derivation.gradients.items():
        text[leaf], latex[leaf] = _render(gradient, shapes[leaf], names)
    hessian_text, hessian_latex = {}, {}
    for (row, column), block in derivation.hessian.items():
        shape = shapes[row] + shapes[column]
        hessian_text[row, column], hessian_latex[row, column] = _render(block, shape, names)
    return ClosedForms(text, latex, hessian_text, hessian_latex)


def _names(plan: Plan, derivation: Derivation, constants: Sequence[np.ndarray],
           ) -> dict[sympy.Symbol, Any]:
    """What each internal symbol reads as."""
    names: dict[sympy.Symbol, Any] = {}
    for leaf, symbols in derivation.leaf_symbols.items():
        shape = symbols.shape
        base = sympy.IndexedBase(leaf) if shape else None
        for index, symbol in np.ndenumerate(symbols):
            names[sympy.Symbol(str(symbol))] = (base[index] if base is not None
                                                else sympy.Symbol(leaf))
    for symbols, value in zip(derivation.constant_symbols, constants, strict=True):
        for symbol, number in zip(symbols.reshape(-1), np.ravel(value), strict=True):
            names[sympy.Symbol(str(symbol))] = _number(number)
    seed = sympy.IndexedBase("seed")
    if plan.seeded:
        for k in range(int(np.prod(plan.nodes[plan.output].shape))):
            names[sympy.Symbol(f"S{k}")] = seed[k]
    for symbol, expression in derivation.detached:
        names[sympy.Symbol(str(symbol))] = _detach(_readable(expression, names, simplify=False))
    return names


def _number(value: Any) -> sympy.Expr:
    if isinstance(value, (bool, np.bool_)):
        return sympy.Integer(int(value))
    number = float(value)
    if number.is_integer() and abs(number) < 2**53:
        return sympy.Integer(int(number))
    # The shortest text that reads back as the value in its own precision (1e-08, not 1e-08 in
    # float32's 9.99999993922529e-09).
    return sympy.Float(np.format_float_positional(value, unique=True, trim="-")
                       if abs(number) >= 1e-4 else str(value))


def _readable(expression: Any, names: Mapping[sympy.Symbol, Any], simplify: bool = True) -> Any:
    readable = expression._sympy_().xreplace(names)
    if simplify and sympy.count_ops(readable) <= _SIMPLIFY_MAX_OPS:
        readable = sympy.simplify(readable)
    return readable


def _render(elements: Sequence[Any], shape: tuple[int, ...],
            names: Mapping[sympy.Symbol, Any]) -> tuple[str, str]:
    forms = [_readable(e, names) for e in elements]
    if not shape:
        return sympy.sstr(forms[0]), sympy.latex(forms[0])
    nested = np.array(forms, dtype=object).reshape(shape)
    if len(shape) <= 2:
        matrix = sympy.Matrix(nested.reshape(shape[0], -1) if len(shape) == 2 else nested)
        latex = sympy.latex(matrix if len(shape) == 2 else matrix.T)
    else:
        latex = sympy.latex(nested.tolist())
    return _nested_text(nested), latex


def _nested_text(array: np.ndarray) -> str:
    if array.ndim == 1:
        return "[" + ", ".join(sympy.sstr(e) for e in array) + "]"
    return "[" + ", ".join(_nested_text(part) for part in array) + "]"
