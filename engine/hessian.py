"""Second derivatives from the closed form, checked against central differences of the numeric
gradient."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from . import dtypes
from .budget import Caps
from .check import CheckReport, Method, compare
from .closed_form import Evaluation
from .display import ClosedForms
from .errors import InvalidArgument, LimitExceeded
from .evaluation import outputs
from .executor import Executor
from .graph import ValidGraph
from .symbolic import Plan
from .widening import in_float64


@dataclass(frozen=True)
class Hessian:
    """Second derivatives from the closed form: per (row leaf, column leaf) a block of shape
    row.shape + column.shape, its closed form, and a check against finite differences of the
    numeric gradient."""

    values: dict[tuple[str, str], np.ndarray]
    closed_forms: dict[tuple[str, str], str]
    latex: dict[tuple[str, str], str]
    check: CheckReport


def check_hessian_size(plan: Plan, caps: Caps) -> None:
    if plan.seeded:
        raise InvalidArgument("a Hessian needs a scalar output")
    count = sum(math.prod(s) for n, s in plan.leaves if n in plan.wrt)
    if count > caps.max_hessian_variables:
        raise LimitExceeded(f"a Hessian over {count} variables is over the limit of "
                            f"{caps.max_hessian_variables}")


def no_hessian(report: CheckReport) -> Hessian:
    return Hessian({}, {}, {}, report)


def hessian_of(valid: ValidGraph, arrays: Mapping[str, np.ndarray], names: Sequence[str],
             evaluation: Evaluation, forms: ClosedForms | None) -> Hessian:
    """The closed form's Hessian, checked column by column against central differences of the
    numeric gradient in float64 (a SYMBOLIC check: the closed form is what is compared)."""
    wide = in_float64(valid)
    executor = Executor(wide, names)  # planned once, run at each point
    base = {n: np.asarray(a, dtype=np.float64) if a.dtype.kind == "f" else a
            for n, a in arrays.items()}
    estimate: dict[tuple[str, str], np.ndarray] = {}
    for column in names:
        shape = base[column].shape
        h = 1e-5 * max(1.0, float(np.max(np.abs(base[column]), initial=0.0)))
        blocks: dict[str, list[np.ndarray]] = {row: [] for row in names}
        for k in range(int(np.prod(shape))):
            step = np.zeros(int(np.prod(shape)))
            step[k] = h
            plus = dict(base, **{column: base[column] + step.reshape(shape)})
            minus = dict(base, **{column: base[column] - step.reshape(shape)})
            _, g_plus, _ = outputs(executor, wide, plus)
            _, g_minus, _ = outputs(executor, wide, minus)
            for row in names:
                zero = np.zeros(base[row].shape)
                blocks[row].append((g_plus.get(row, zero) - g_minus.get(row, zero)) / (2 * h))
        for row in names:
            estimate[row, column] = np.stack(blocks[row], axis=-1).reshape(
                base[row].shape + shape)
    values = {key: evaluation.hessian.get(key, np.zeros(estimate[key].shape))
              for key in estimate}
    # Labelled "x,y" for d/dx d/dy; differences of float64 gradients: float32's tolerance.
    report = compare({f"{r},{c}": v for (r, c), v in estimate.items()},
                     {f"{r},{c}": v for (r, c), v in values.items()}, dtypes.float32,
                     method=Method.SYMBOLIC,
                     numeric_label="the estimate by central differences of the numeric gradient")
    # A block comes in the wider of its two leaves' dtypes, as the leaves' gradients come in
    # theirs.
    values = {(r, c): v.astype(np.result_type(arrays[r].dtype, arrays[c].dtype), copy=False)
              for (r, c), v in values.items()}
    return Hessian(values, dict(forms.hessian_text) if forms else {},
                   dict(forms.hessian_latex) if forms else {}, report)
