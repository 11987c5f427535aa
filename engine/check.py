"""The check: does the numeric engine's gradient agree with an independent derivation?

Every gradient crossgrad returns carries a ``CheckReport``: which check ran (``method``), what it
found (``status``), the largest absolute and relative errors, the tolerances used and a reason a
person can act on. Two checks exist:

- ``compare``: against the closed form (``SYMBOLIC``), element by element;
- ``finite_difference``: when the closed form is past a budget, the directional derivative along
  a random direction against central differences of the engine's own forward
  (``FINITE_DIFFERENCE``): an independent check of the backward pass that costs two forwards.

A float32 gradient that misses the closed form by more than the tolerance is judged once more,
by what float32 rounding does in this function (``within_rounding``): the same engine's gradient
in float64 is compared with the closed form at float64's tolerance. If it agrees, the derivation
is right and the float32 error is rounding the function amplified (``sin(exp(x) * 2)`` at 5,
whose condition is in the thousands): AGREE, with the condition estimated from the float32 and
float64 gradients' spread. A wrong derivation is as wrong in float64 and stays a DISAGREE. The
float64 gradient is computed only then, so a check that agrees at once costs nothing more.

Non-finite values agree only when both sides give the same one (nan and nan, inf and inf). Where
one side is finite and the other is not, the status is ``SINGULAR``, not ``DISAGREE``: the usual
cause is a removable singularity of one derivation (the numeric chain rule multiplies
``sqrt'(0) = inf`` by 0 in ``sqrt(x**2 + y**2)**2`` at 0, as PyTorch's does, while the closed form
simplifies to ``2*x``), or a point where the closed form is undefined and the numeric engine
applies PyTorch's convention (``x**y`` at ``x == 0``). The reason gives both values at each such
element (the first few per leaf), so that where the engine returns PyTorch's NaN (a norm written
by hand, ``sqrt(sum(x*x))**2``, at 0) the user also sees the closed form's finite value.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from .dtypes import DType, float32
from .dtypes import float64 as float64_dtype
from .errors import InvalidArgument


class CheckMode(str, enum.Enum):
    """What a disagreement does: fail the request (STRICT), only be reported (REPORT), or no
    check runs (OFF)."""

    STRICT = "STRICT"
    REPORT = "REPORT"
    OFF = "OFF"

    @staticmethod
    def of(value: str | CheckMode) -> CheckMode:
        try:
            return CheckMode(value.upper() if isinstance(value, str) else value)
        except ValueError:
            raise InvalidArgument(f"unknown check mode {value!r}; use one of "
                                  f"{', '.join(m.value.lower() for m in CheckMode)}") from None


class Method(str, enum.Enum):
    SYMBOLIC = "SYMBOLIC"
    FINITE_DIFFERENCE = "FINITE_DIFFERENCE"
    NONE = "NONE"


class Status(str, enum.Enum):
    AGREE = "AGREE"
    DISAGREE = "DISAGREE"
    SKIPPED = "SKIPPED"
    SINGULAR = "SINGULAR"


@dataclass(frozen=True)
class CheckReport:
    method: Method
    status: Status
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    atol: float = 0.0
    rtol: float = 0.0
    reason: str = ""


def tolerance(dtype: DType) -> tuple[float, float]:
    """(atol, rtol) for gradients computed in ``dtype``; atol is scaled by the largest magnitude
    of the reference gradient (at least 1), so errors are judged relative to the gradient's size.
    """
    return (1e-5, 1e-4) if dtype == float32 else (1e-10, 1e-7)


def skipped(reason: str) -> CheckReport:
    return CheckReport(Method.NONE, Status.SKIPPED, reason=reason)


def compare(numeric: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
            dtype: DType, *, method: Method = Method.SYMBOLIC,
            numeric_label: str = "the numeric gradient") -> CheckReport:
    """The numeric gradients against the closed form's, leaf by leaf, element by element."""
    atol, rtol = tolerance(dtype)
    worst_abs = worst_rel = 0.0
    disagreement = ""
    singular: list[str] = []
    for name in sorted(numeric.keys() | reference.keys()):
        mine, theirs = numeric.get(name), reference.get(name)
        if (mine is not None and theirs is not None and mine.size <= _FEW
                and mine.shape == theirs.shape):
            # A few elements (the usual gradient of a leaf): Python floats, several times cheaper.
            few = _compare_floats(mine.ravel().tolist(), theirs.ravel().tolist(), atol, rtol)
            if few is not None:
                most_abs, most_rel, k, scale = few
                worst_abs, worst_rel = max(worst_abs, most_abs), max(worst_rel, most_rel)
                if k >= 0 and not disagreement:
                    at_k = float(mine.flat[k]), float(theirs.flat[k])
                    disagreement = _disagreement(name, _index_of(k, mine.shape), numeric_label,
                                                 *at_k, abs(at_k[0] - at_k[1]), atol, scale,
                                                 rtol)
                continue
        got = np.asarray(0.0 if mine is None else mine, dtype=np.float64)
        want = np.broadcast_to(np.asarray(0.0 if theirs is None else theirs, dtype=np.float64),
                               got.shape)
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: the slow path below
            error = np.abs(got - want)
        if np.isfinite(error).all():  # the usual case: both sides finite everywhere
            magnitude = np.abs(want)
            scale = max(1.0, float(magnitude.max(initial=0.0)))
            worst_abs = max(worst_abs, float(error.max(initial=0.0)))
            with np.errstate(over="ignore"):  # a gap at a reference of ~0: inf, as floats
                relative = error / np.maximum(magnitude, _TINY)
            worst_rel = max(worst_rel, float(relative.max(initial=0.0)))
            bad = error > atol * scale + rtol * magnitude
            if bad.any() and not disagreement:
                k = int(np.argmax(np.where(bad, error, -1)))
                disagreement = _disagreement(name, _index_of(k, got.shape), numeric_label,
                                             got.ravel()[k], want.ravel()[k], error.ravel()[k],
                                             atol, scale, rtol)
            continue
        both = np.isfinite(got) & np.isfinite(want)
        same_nonfinite = ~both & ((np.isnan(got) & np.isnan(want)) | (got == want))
        one_sided = ~both & ~same_nonfinite
        if one_sided.any():
            singular.append(_singular(name, got, want, one_sided, numeric_label))
        if not both.any():
            continue
        g, w = got[both], want[both]
        error = np.abs(g - w)
        scale = max(1.0, float(np.max(np.abs(w))))
        with np.errstate(over="ignore"):
            relative = error / np.maximum(np.abs(w), _TINY)
        worst_abs = max(worst_abs, float(error.max()))
        worst_rel = max(worst_rel, float(relative.max()))
        bad = error > atol * scale + rtol * np.abs(w)
        if bad.any() and not disagreement:
            k = int(np.argmax(np.where(bad, error, -1)))
            at = _index_of(int(np.flatnonzero(both)[k]), got.shape)
            disagreement = _disagreement(name, at, numeric_label, g[k], w[k], error[k], atol,
                                         scale, rtol)
    if disagreement:
        return CheckReport(method, Status.DISAGREE, worst_abs, worst_rel, atol, rtol,
                           disagreement)
    if singular:
        return CheckReport(method, Status.SINGULAR, worst_abs, worst_rel, atol, rtol,
                           f"{'; '.join(singular)}: a singular point of one derivation (e.g. "
                           "0 * inf in the numeric chain rule, as in PyTorch, or a closed form "
                           "undefined where PyTorch's convention gives a number); elsewhere they "
                           "agree")
    return CheckReport(method, Status.AGREE, worst_abs, worst_rel, atol, rtol,
                       f"{numeric_label} matches the closed form within tolerance")


_TINY = float(np.finfo(np.float64).tiny)
_FEW = 16


def _compare_floats(got: list[float], want: list[float], atol: float, rtol: float,
                    ) -> tuple[float, float, int, float] | None:
    """``compare``'s rule on lists of floats: the largest absolute and relative errors, the
    index of the worst element out of tolerance (-1: none) and the scale of atol; None when a
    value is not finite."""
    scale = max(1.0, max((abs(w) for w in want), default=0.0))
    worst_abs = worst_rel = 0.0
    worst_bad, at = -1.0, -1
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        gap = abs(g - w)
        if not math.isfinite(gap):
            return None
        worst_abs = max(worst_abs, gap)
        worst_rel = max(worst_rel, gap / max(abs(w), _TINY))
        if gap > atol * scale + rtol * abs(w) and gap > worst_bad:
            worst_bad, at = gap, k
    return worst_abs, worst_rel, at, scale


def _disagreement(name: str, at: str, label: str, got: float, want: float, error: float,
                  atol: float, scale: float, rtol: float) -> str:
    return (f"d/d{name}{at}: {label} {float(got)!r} vs closed form {float(want)!r} (error "
            f"{float(error):.3g} > {atol:g}*{scale:.3g} + {rtol:g}*|closed form|)")


_SHOWN = 4  # singular elements named per leaf


def _singular(name: str, got: np.ndarray, want: np.ndarray, mask: np.ndarray,
              label: str) -> str:
    """The elements of leaf ``name`` where one side is finite and the other not, with both
    values (the first few): what the user sees of the closed form where PyTorch's gradient is
    NaN (``sqrt(sum(x*x))**2`` at 0), or of PyTorch's where the closed form is undefined."""
    at = np.flatnonzero(mask)
    first = int(at[0])
    text = (f"d/d{name}{_index_of(first, got.shape)}: {label} gives {float(got.flat[first])!r} "
            f"where the closed form gives {float(want.flat[first])!r}")
    others = [f"d/d{name}{_index_of(int(k), got.shape)} ({float(got.flat[k])!r} vs "
              f"{float(want.flat[k])!r})" for k in at[1:_SHOWN]]
    if others:
        text += f", as at {', '.join(others)}"
    if at.size > _SHOWN:
        text += f" and {at.size - _SHOWN} more"
    return text


def _index_of(flat: int, shape: tuple[int, ...]) -> str:
    if not shape:
        return ""
    return "[" + ",".join(str(int(i)) for i in np.unravel_index(flat, shape)) + "]"


_UNIT_ROUNDOFF_32 = 2.0 ** -24


def within_rounding(strict: CheckReport, numeric: Mapping[str, np.ndarray],
                    wide: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                    ) -> CheckReport:
    """A float32 DISAGREE (``strict``) judged again: ``wide`` is the same engine's gradient
    computed in float64 at the same point. If it matches the closed form within float64's
    tolerance, the float32 gradient is within float32's rounding for this function: AGREE, the
    reason saying the condition (the float32-float64 spread in units of float32's roundoff) and
    how far the float32 gradient could be before it would be a disagreement (twice the spread
    past the plain tolerance). Otherwise the DISAGREE stands, its reason saying float64 misses
    too."""
    again = compare(wide, reference, float64_dtype, numeric_label="the numeric gradient in "
                    "float64")
    if again.status is not Status.AGREE:
        return replace(strict, reason=f"{strict.reason}; computed in float64 it misses the "
                       f"closed form too ({again.reason}): a derivation is wrong")
    condition = spread = allowed = 0.0
    for name, got in numeric.items():
        exact = wide.get(name)
        if exact is None:
            continue
        g, w = np.asarray(got, np.float64), np.asarray(exact, np.float64)
        gap = np.abs(g - w)
        magnitude = np.abs(w)
        scale = max(1.0, float(magnitude.max(initial=0.0)))
        spread = max(spread, float(gap.max(initial=0.0)))
        condition = max(condition, float(np.max(
            gap / (_UNIT_ROUNDOFF_32 * np.maximum(magnitude, 1.0)), initial=0.0)))
        allowed = max(allowed, float(np.max(strict.atol * scale + strict.rtol * magnitude
                                            + 2 * gap, initial=0.0)))
    return replace(strict, status=Status.AGREE, reason=(
        f"the numeric gradient is within float32's rounding for this function: condition "
        f"~{condition:.0e} (float32 and float64 gradients differ by up to {spread:.3g}; the "
        f"float64 one matches the closed form; a disagreement would be an error past "
        f"{allowed:.3g}){_FEW_DIGITS if condition > 1e5 else ''}"))


_FEW_DIGITS = "; float32 keeps few correct digits here, float64 would keep more"


def at_non_finite_points(report: CheckReport, numeric: Mapping[str, np.ndarray],
                         reference: Mapping[str, np.ndarray], values: Mapping[str, np.ndarray],
                         outputs: tuple[np.ndarray, np.ndarray], dtype: DType) -> CheckReport:
    """A DISAGREE where the function has no derivative to check, as SINGULAR: at a point where
    one side's output is NaN or infinite and the other's is not (``outputs``: the engine's and
    the closed form's), so outside the function's domain (log1p at x < -1 is NaN, its closed
    form's identity goes on there, as PyTorch's formula 1 / (1 + x) does); or only at elements
    whose leaf value is NaN or infinite (PyTorch's relu passes the gradient at NaN, the closed
    form's branch gives 0). Either way each side's value is a convention. Any other disagreement
    stands."""
    if report.status is not Status.DISAGREE:
        return report
    engine, closed = (np.isfinite(np.asarray(o, np.float64)) for o in outputs)
    if engine.shape == closed.shape and (engine != closed).any():
        return replace(report, status=Status.SINGULAR, reason=(
            f"{report.reason}, where one output is NaN or infinite and the other is not (the "
            "point is outside the function's domain): each side's derivative is a convention"))
    elsewhere: dict[str, np.ndarray] = {}
    found: list[str] = []
    for name, got in numeric.items():
        value = values.get(name)
        if value is not None and value.dtype.kind == "f" and value.shape == np.shape(got):
            odd = ~np.isfinite(value)
            if odd.any():
                found.append(name)
                got = np.where(odd, reference.get(name, 0.0), got)
        elsewhere[name] = got
    if not found or compare(elsewhere, reference, dtype).status is Status.DISAGREE:
        return report
    return replace(report, status=Status.SINGULAR, reason=(
        f"{report.reason}, at a NaN or infinite value of leaf "
        f"{', '.join(repr(name) for name in found)}: a derivative there is a convention"))


def finite_difference(forward: Callable[[Mapping[str, np.ndarray]], float],
                      values: Mapping[str, np.ndarray], gradients: Mapping[str, np.ndarray],
                      dtype: DType, why: str, seed: int = 0) -> CheckReport:
    """The directional derivative along a random unit direction ``v``: ``sum(grad * v)`` from the
    numeric gradients against ``(f(x + h v) - f(x - h v)) / 2h``, with ``forward`` (a scalar
    function of the leaf values, evaluated in float64). Two directions must both disagree for a
    DISAGREE, so a kink that happens to lie within ``h`` of the point is not reported as one.
    Where both disagree because the point is a kink along them (relu at exact zeros, tied maxima:
    the one-sided differences differ, and the numeric gradient's slope lies between them, as
    PyTorch's conventions at kinks pick), the report is SINGULAR: differences cannot check a
    convention.
    """
    names = sorted(gradients)
    if not names:
        return skipped(f"{why}; and nothing to check: no leaf gets a gradient")
    rng = np.random.default_rng(seed)
    atol, rtol = (1e-4, 1e-3) if dtype == float32 else (1e-6, 1e-5)
    worst_abs = worst_rel = 0.0
    last = ""
    kinks: list[str] = []
    center: float | None = None
    for attempt in range(2):
        direction = {n: rng.standard_normal(np.shape(values[n])) for n in names}
        norm = np.sqrt(sum(float(np.sum(d * d)) for d in direction.values())) or 1.0
        size = max(1.0, max(float(np.max(np.abs(values[n]), initial=0.0)) for n in names))
        h = 1e-6 * size * (0.1 if attempt else 1.0)

        step = {n: h * direction[n] / norm for n in names}
        plus, minus = dict(values), dict(values)
        for n in names:
            plus[n] = np.asarray(values[n], np.float64) + step[n]
            minus[n] = np.asarray(values[n], np.float64) - step[n]
        with np.errstate(all="ignore"):
            above, below = forward(plus), forward(minus)
            estimate = (above - below) / (2 * h)
            claimed = sum(float(np.sum(np.asarray(gradients[n], np.float64) * direction[n]))
                          for n in names) / norm
        claimed, estimate = float(claimed), float(estimate)
        error = abs(claimed - estimate)
        worst_abs = max(worst_abs, error)
        worst_rel = max(worst_rel, error / max(abs(estimate), np.finfo(np.float64).tiny))
        if not (np.isfinite(claimed) and np.isfinite(estimate)):
            return CheckReport(Method.FINITE_DIFFERENCE, Status.SINGULAR, worst_abs, worst_rel,
                               atol, rtol, f"{why}; along a random direction the numeric "
                               f"gradient gives {claimed!r} and central differences "
                               f"{estimate!r}")
        tolerance = atol * max(1.0, abs(estimate)) + rtol * abs(estimate)
        if error <= tolerance:
            return CheckReport(Method.FINITE_DIFFERENCE, Status.AGREE, worst_abs, worst_rel,
                               atol, rtol, f"{why}; the numeric gradient matches central "
                               "differences along a random direction")
        last = (f"along a random direction the numeric gradient gives {claimed!r}, central "
                f"differences {estimate!r}")
        if center is None:
            with np.errstate(all="ignore"):
                center = float(forward(values))
        # One-sided slopes: apart by O(h) where the function is smooth, by the kink's jump
        # where it has one within h.
        ahead, behind = (float(above) - center) / h, (center - float(below)) / h
        if (abs(ahead - behind) > tolerance
                and min(ahead, behind) - tolerance <= claimed <= max(ahead, behind) + tolerance):
            kinks.append(f"one-sided differences {behind!r} and {ahead!r}")
    if len(kinks) == 2:
        return CheckReport(Method.FINITE_DIFFERENCE, Status.SINGULAR, worst_abs, worst_rel, atol,
                           rtol, f"{why}; {last}: the point is a kink along both random "
                           f"directions ({kinks[-1]}), and the numeric gradient's slope lies "
                           "between the one-sided ones, as a convention at a kink puts it; "
                           "differences cannot check which convention")
    return CheckReport(Method.FINITE_DIFFERENCE, Status.DISAGREE, worst_abs, worst_rel, atol,
                       rtol, f"{why}; {last} (in two directions)")
