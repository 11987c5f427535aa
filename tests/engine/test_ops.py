"""Table-driven tests of the op table (``engine/ops.py``): every row of ``ops.OPS`` is checked.

Per row: the NumPy forward against an independent NumPy reference, the hand-written VJPs against
central finite differences, the SymPy forward and its ``sympy.diff`` against the numeric engine
(the cross-check crossgrad is about), the conventions at kinks, the shape rule against the forward
and against the engine's errors, and the row's own invariants. A new row is picked up with no edit
here: its cases are derived from its arity, shape rule and attribute kinds.
"""

from __future__ import annotations

import dataclasses
import math
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

import crossgrad.engine as cg
import numpy as np
import pytest
import sympy
from crossgrad.engine import graph, ops, shapes
from crossgrad.engine.errors import CrossgradError
from crossgrad.engine.tensor import apply
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

Shape = tuple[int, ...]
ShapeSpec = Shape | None  # None: the operand is a Python number (PyTorch's wrapped scalar)
Value = Any  # np.ndarray for a tensor operand, float for a Python-number operand
Attrs = dict[str, Any]

OPS = ops.OPS
DIFFERENTIABLE = tuple(op for op in OPS if any(vjp is not None for vjp in op.vjps))
ATTR_KINDS = {"number?", "order?", "dims?", "dim?", "int|dims?", "dims", "int", "int?", "bool"}

# Central differences in float64: truncation ~STEP^2, rounding ~eps/STEP, both far below 1e-6.
STEP = 1e-6
FD_RTOL = FD_ATOL = 1e-6
# Keep drawn values this far from a kink so no finite-difference stencil straddles it.
KINK_MARGIN = 1e-4
# SymPy evaluates at 53-bit precision, so it agrees with NumPy to a few ulps (plus cancellation).
SYM_RTOL, SYM_ATOL = 1e-10, 1e-10

# Enough examples to find shape edge cases, few enough that the file runs in seconds; no example
# database, so running the tests writes nothing into the checkout.
HYPOTHESIS = settings(max_examples=50, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow])


def _op_id(op: ops.Op) -> str:
    return op.name


def _domains(op: ops.Op, count: int) -> tuple[tuple[float, float], ...]:
    """Per operand of a call of ``count`` operands, the range its values are drawn from."""
    return op.domain * count if op.variadic else op.domain


# --- cases: (operand shapes, attributes) per row ------------------------------------------------

# Shapes exercising broadcasting: trailing alignment, size-1 stretching, 0-d and Python numbers.
BROADCAST_PAIRS: tuple[tuple[ShapeSpec, ShapeSpec], ...] = (
    ((3, 1), (4,)), ((2, 1, 3), (3,)), ((), (2, 3)), ((2, 3), ()), ((), ()), ((1,), (3, 1)),
    (None, (2, 3)), ((2, 3), None))
UNARY_SHAPES: tuple[Shape, ...] = ((), (3,), (2, 3), (2, 1, 3))
# Every rank combination matmul dispatches on, with batch broadcasting.
MATMUL_PAIRS: tuple[tuple[Shape, Shape], ...] = (
    ((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 2)), ((2, 3), (3, 4)), ((2, 2, 3), (3, 4)),
    ((3,), (2, 3, 4)), ((2, 3), (2, 3, 1)), ((2, 1, 2, 3), (3, 3, 2)))


def _reduction_cases() -> list[tuple[str, Shape, Attrs]]:
    cases: list[tuple[str, Shape, Attrs]] = [
        (f"dim={dim}-keepdim={keep}", (2, 3, 4), {"dim": dim, "keepdim": keep})
        for dim in (None, (1,), (0, 2), (-1,), (-3, -1)) for keep in (False, True)]
    # PyTorch accepts dim 0 and -1 on a 0-d tensor; the result stays 0-d.
    cases += [(f"0d-dim={dim}-keepdim={keep}", (), {"dim": dim, "keepdim": keep})
              for dim, keep in ((None, False), ((0,), False), ((-1,), True))]
    return cases


def _one_dim_cases() -> list[tuple[str, Shape, Attrs]]:
    # ``prod`` takes one dim or none.
    return [(f"dim={dim}-keepdim={keep}", shape, {"dim": dim, "keepdim": keep})
            for shape, dim, keep in [((2, 3, 4), None, False), ((2, 3, 4), (1,), False),
                                     ((2, 3, 4), (-1,), True), ((), None, False),
                                     ((), (0,), True)]]


def _moment_cases() -> list[tuple[str, Shape, Attrs]]:
    # var and std: the reductions, with PyTorch's ways to say the correction.
    corrections: list[Attrs] = [
        {"unbiased": True, "correction": None}, {"unbiased": False, "correction": None},
        {"unbiased": True, "correction": 0.0}, {"unbiased": True, "correction": 2.0},
        {"unbiased": True, "correction": 0.5}]
    return [(f"{label}-{'-'.join(f'{k}={v}' for k, v in c.items())}", shape, {**attrs, **c})
            for c in corrections
            for label, shape, attrs in _reduction_cases() if shape == (2, 3, 4)]


def _along_cases() -> list[tuple[str, Shape, Attrs]]:
    # softmax and log_softmax: one dim, from either end; a 0-d tensor takes 0 and -1.
    return [(f"dim={dim}", shape, {"dim": dim})
            for shape, dim in [((2, 3, 4), 0), ((2, 3, 4), 1), ((2, 3, 4), -1), ((3,), 0),
                               ((), 0), ((), -1)]]


# Rows taking attributes get named cases; the ops' attributes are passed as ``apply`` gets them
# (the public API turns an int dim into a 1-tuple, see test_public_reduction_forms).
ATTR_CASES: dict[str, list[tuple[str, Shape, Attrs]]] = {
    "clamp": [("min", (2, 3), {"min": -0.5, "max": None}),
              ("max", (2, 3), {"min": None, "max": 0.5}),
              ("both", (2, 3), {"min": -0.5, "max": 0.5}),
              ("min>max", (2, 3), {"min": 0.5, "max": -0.5}),
              ("0d-both", (), {"min": -0.5, "max": 0.5})],
    "sum": _reduction_cases(),
    "mean": _reduction_cases(),
    "prod": _one_dim_cases(),
    "amax": _reduction_cases(),
    "amin": _reduction_cases(),
    "logsumexp": [case for case in _reduction_cases() if case[2]["dim"] is not None],
    "softmax": _along_cases(),
    "log_softmax": _along_cases(),
    "var": _moment_cases(),
    "std": _moment_cases(),
    "norm": [(label, shape, {"p": 2.0, **attrs}) for label, shape, attrs in _reduction_cases()],
    "reshape": [("flatten", (2, 3), {"shape": (-1,)}), ("infer-last", (2, 3), {"shape": (3, -1)}),
                ("infer-middle", (2, 3, 2), {"shape": (2, -1, 3)}),
                ("explicit", (2, 3), {"shape": (6,)}), ("0d-to-1x1", (), {"shape": (1, -1)}),
                ("to-0d", (1, 1), {"shape": ()})],
    "transpose": [("matrix", (2, 3), {"dim0": 0, "dim1": 1}),
                  ("outer", (2, 3, 4), {"dim0": 0, "dim1": 2}),
                  ("negative", (2, 3, 4), {"dim0": -1, "dim1": 0}),
                  ("same", (2, 3), {"dim0": 1, "dim1": 1}),
                  ("0d", (), {"dim0": 0, "dim1": -1})],
    "permute": [("cycle", (2, 3, 4), {"dims": (2, 0, 1)}),
                ("negative", (2, 3, 4), {"dims": (-1, 0, 1)}),
                ("identity", (2, 3), {"dims": (0, 1)}), ("0d", (), {"dims": ()})],
    "squeeze": [("all", (2, 1, 3, 1), {"dim": None}), ("one", (2, 1, 3), {"dim": 1}),
                ("one-not-1", (2, 1, 3), {"dim": 0}), ("tuple", (1, 2, 1), {"dim": (0, -1)}),
                ("empty-tuple", (1, 2), {"dim": ()}), ("0d", (), {"dim": 0})],
    "unsqueeze": [("front", (2, 3), {"dim": 0}), ("back", (2, 3), {"dim": -1}),
                  ("middle", (2, 3), {"dim": 1}), ("0d", (), {"dim": -1})],
    "flatten": [("all", (2, 3, 2), {"start_dim": 0, "end_dim": -1}),
                ("tail", (2, 3, 2), {"start_dim": 1, "end_dim": -1}),
                ("head", (2, 3, 2), {"start_dim": 0, "end_dim": 1}),
                ("one-dim", (2, 3), {"start_dim": 1, "end_dim": 1}),
                ("0d", (), {"start_dim": 0, "end_dim": -1})],
    "select": [("first", (3, 2), {"dim": 0, "index": 0}),
               ("last", (3, 2), {"dim": 1, "index": -1}),
               ("middle", (2, 3, 2), {"dim": -2, "index": 1}),
               ("vector", (3,), {"dim": 0, "index": 2})],
    "slice": [("all", (4, 2), {"dim": 0, "start": None, "end": None, "step": 1}),
              ("range", (4, 2), {"dim": 0, "start": 1, "end": 3, "step": 1}),
              ("step", (5, 2), {"dim": 0, "start": None, "end": None, "step": 2}),
              ("negative", (2, 5), {"dim": -1, "start": -3, "end": -1, "step": 1}),
              ("past-the-end", (2, 3), {"dim": 1, "start": 1, "end": 10, "step": 2}),
              ("empty", (3, 2), {"dim": 0, "start": 2, "end": 1, "step": 1})],
}


@dataclasses.dataclass(frozen=True)
class Case:
    op: ops.Op
    shapes: tuple[ShapeSpec, ...]
    attrs: Attrs
    label: str

    @property
    def id(self) -> str:
        return f"{self.op.name}-{self.label}"


def _as_shapes(specs: Sequence[ShapeSpec]) -> tuple[Shape, ...]:
    """What the shape rule sees: a Python number is 0-d."""
    return tuple(() if s is None else s for s in specs)


def _rule_shape(op: ops.Op, specs: Sequence[ShapeSpec], attrs: Mapping[str, Any]) -> Shape:
    return tuple(op.shape(*_as_shapes(specs), **attrs))


def _accepted(op: ops.Op, specs: Sequence[ShapeSpec], attrs: Mapping[str, Any]) -> bool:
    try:
        _rule_shape(op, specs, attrs)
    except CrossgradError:
        return False
    return True


def _default_attrs(op: ops.Op, shape: Shape) -> Attrs:
    """Attributes for a row with no named cases: defaults, or a plain valid pick per kind."""
    picks: dict[str, Any] = {"number?": None, "order?": None, "dims?": None, "dim?": None,
                             "int|dims?": None, "bool": False, "int": 0, "int?": None,
                             "dims": tuple(range(len(shape)))}
    return {name: a.default if not a.required else picks[a.kind] for name, a in op.attrs.items()}


# Variadic rows: (label, operand shapes, attributes).
VARIADIC_CASES: dict[str, list[tuple[str, tuple[Shape, ...], Attrs]]] = {
    "cat": [("one", ((2, 3),), {"dim": 0}), ("rows", ((2, 3), (1, 3), (3, 3)), {"dim": 0}),
            ("columns", ((2, 1), (2, 3)), {"dim": -1}), ("vectors", ((3,), (0,), (2,)), {"dim": 0}),
            ("legacy-empty", ((2, 3), (0,), (1, 3)), {"dim": 0})],
    "stack": [("one", ((2, 3),), {"dim": 0}), ("three", ((2, 3),) * 3, {"dim": 1}),
              ("last", ((2,), (2,)), {"dim": -1}), ("0d", ((), ()), {"dim": 0})],
}


def _cases_for(op: ops.Op) -> list[Case]:
    if op.name in VARIADIC_CASES:
        return [Case(op, specs, attrs, label) for label, specs, attrs in VARIADIC_CASES[op.name]]
    if op.name in ATTR_CASES:
        return [Case(op, (shape,), attrs, label) for label, shape, attrs in ATTR_CASES[op.name]]
    if op.shape is shapes.matmul:
        candidates: Sequence[tuple[ShapeSpec, ...]] = MATMUL_PAIRS
    elif op.arity == 1:
        candidates = [(s,) for s in UNARY_SHAPES]
    elif op.arity == 2:
        candidates = BROADCAST_PAIRS
    else:
        candidates = [((2, 3),) * op.arity, ((),) + ((2, 3),) * (op.arity - 1)]
    found = []
    for specs in candidates:
        attrs = _default_attrs(op, next((s for s in specs if s is not None), ()))
        if _accepted(op, specs, attrs):
            label = "-".join("num" if s is None else "x".join(map(str, s)) or "0d" for s in specs)
            found.append(Case(op, tuple(specs), attrs, label))
    return found


CASES = [case for op in OPS for case in _cases_for(op)]
DIFF_CASES = [case for case in CASES if case.op in DIFFERENTIABLE]


def _case_id(case: Case) -> str:
    return case.id


def _case_values(case: Case) -> tuple[Value, ...]:
    """Uniform values from each operand's domain, seeded by the case so reruns agree."""
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    return _with_conditions(case.op, tuple(
        float(rng.uniform(lo, hi)) if spec is None else rng.uniform(lo, hi, spec)
        for (lo, hi), spec in zip(_domains(case.op, len(case.shapes)), case.shapes,
                                  strict=True)))


def _with_conditions(op: ops.Op, values: Sequence[Value]) -> tuple[Value, ...]:
    """``values`` with a ``condition`` operand (where's) as a bool mask: its drawn value > 0."""
    if "condition" not in op.operands:
        return tuple(values)
    return tuple(np.asarray(np.asarray(v) > 0) if name == "condition" else v
                 for name, v in zip(op.operands, values, strict=True))


def _tensor(value: Value, dtype: cg.DType, requires_grad: bool = False) -> Any:
    """An operand's tensor: of ``dtype``; a bool mask stays bool, without grad."""
    if isinstance(value, np.ndarray) and value.dtype == np.bool_:
        return cg.tensor(value)
    return cg.tensor(value, dtype=dtype, requires_grad=requires_grad)


# --- hypothesis strategies ------------------------------------------------------------------------

def _with_negatives(draw: st.DrawFn, dims: Sequence[int], rank: int) -> tuple[int, ...]:
    # PyTorch counts dims from either end; mix both.
    return tuple(d - rank if draw(st.booleans()) else d for d in dims)


@st.composite
def _reshape_target(draw: st.DrawFn, shape: Shape) -> tuple[int, ...]:
    """A valid target: a random factorisation of the element count, maybe with one -1."""
    remaining = math.prod(shape)
    ndim = draw(st.integers(0 if remaining == 1 else 1, 3))
    target = []
    for _ in range(ndim - 1):
        d = draw(st.sampled_from([d for d in range(1, remaining + 1) if remaining % d == 0]))
        target.append(d)
        remaining //= d
    if ndim:
        target.append(remaining)
        if draw(st.booleans()):
            target[draw(st.integers(0, ndim - 1))] = -1
    return tuple(target)


@st.composite
def _clamp_bounds(draw: st.DrawFn, shape: Shape) -> Attrs:
    # Bounds at least 0.01 apart (or crossed), so values can keep KINK_MARGIN from both.
    low = draw(st.floats(-2.5, 2.0))
    high = low + draw(st.floats(0.01, 2.0))
    variant = draw(st.sampled_from(["min", "max", "both", "min>max"]))
    bounds = {"min": (low, None), "max": (None, high), "both": (low, high),
              "min>max": (high, low)}[variant]
    return {"min": bounds[0], "max": bounds[1]}


@st.composite
def _valid_attr(draw: st.DrawFn, attr: ops.Attr, shape: Shape, domain: tuple[float, float]) -> Any:
    """A value of ``attr``'s kind that fits an input of ``shape``."""
    rank = max(len(shape), 1)  # 0-d tensors take dim 0 / -1, as in PyTorch
    optional = not attr.required and draw(st.booleans())
    if attr.kind == "number?":
        return None if optional else draw(st.floats(*domain))
    if attr.kind == "bool":
        return draw(st.booleans())
    if attr.kind == "int":
        return draw(st.integers(-rank, rank - 1))
    if attr.kind == "int?":
        return None if optional else draw(st.integers(-rank, rank - 1))
    if attr.kind in ("dims?", "dim?", "int|dims?") and optional:
        return None
    if attr.kind == "dim?":
        return (draw(st.integers(-rank, rank - 1)),)
    if attr.kind == "int|dims?" and draw(st.booleans()):
        return _with_negatives(draw, [draw(st.integers(0, rank - 1))], rank)[0]
    if attr.kind in ("dims?", "int|dims?"):
        dims = draw(st.lists(st.integers(0, rank - 1), unique=True, max_size=rank))
    else:
        dims = draw(st.permutations(range(len(shape))))
    return _with_negatives(draw, dims, rank)


@st.composite
def _select_attrs(draw: st.DrawFn, shape: Shape) -> Attrs:
    if not shape:
        reject()
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    return {"dim": dim, "index": draw(st.integers(-shape[dim], shape[dim] - 1))}


@st.composite
def _slice_attrs(draw: st.DrawFn, shape: Shape) -> Attrs:
    if not shape:
        reject()
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    bound = st.none() | st.integers(-shape[dim] - 2, shape[dim] + 2)
    return {"dim": dim, "start": draw(bound), "end": draw(bound),
            "step": draw(st.integers(1, 3))}


def _valid_attrs(op: ops.Op, shape: Shape) -> st.SearchStrategy[Attrs]:
    if op.name == "select":
        return _select_attrs(shape)
    if op.name == "slice":
        return _slice_attrs(shape)
    if op.name == "clamp":
        return _clamp_bounds(shape)
    if op.name == "reshape":
        return st.fixed_dictionaries({"shape": _reshape_target(shape)})
    if op.name == "norm":  # the 2-norm only
        return st.fixed_dictionaries({"p": st.sampled_from([2.0, None]),
                                      "dim": _valid_attr(op.attrs["dim"], shape, op.domain[0]),
                                      "keepdim": st.booleans()})
    if op.attrs.get("correction") is not None:  # var and std: PyTorch's usual corrections
        return st.fixed_dictionaries(
            {name: st.sampled_from([None, 0.0, 1.0, 0.5]) if name == "correction" else
             _valid_attr(a, shape, op.domain[0]) for name, a in op.attrs.items()})
    return st.fixed_dictionaries(
        {name: _valid_attr(a, shape, op.domain[0]) for name, a in op.attrs.items()})


@st.composite
def _matmul_shapes(draw: st.DrawFn) -> tuple[ShapeSpec, ...]:
    n, k, m = (draw(st.integers(1, 3)) for _ in range(3))
    batch_a, batch_b = draw(hnp.mutually_broadcastable_shapes(
        num_shapes=2, min_dims=0, max_dims=2, max_side=2)).input_shapes
    a = (k,) if draw(st.booleans()) else (*batch_a, n, k)
    b = (k,) if draw(st.booleans()) else (*batch_b, k, m)
    return (a, b)


@st.composite
def _broadcast_shapes(draw: st.DrawFn, operands: Sequence[str]) -> tuple[ShapeSpec, ...]:
    arity = len(operands)
    named = [p for p in BROADCAST_PAIRS if len(p) == arity]
    drawn = draw(hnp.mutually_broadcastable_shapes(
        num_shapes=arity, min_dims=0, max_dims=3, max_side=3)).input_shapes
    use_named = bool(named) and draw(st.booleans())
    specs: list[ShapeSpec] = list(draw(st.sampled_from(named)) if use_named else drawn)
    # A 0-d operand may instead be a Python number, if a tensor other than a condition (which
    # stays one) remains.
    for i, spec in enumerate(specs):
        others = [s for j, s in enumerate(specs) if j != i and operands[j] != "condition"]
        if (spec == () and any(s is not None for s in others) and draw(st.booleans())
                and operands[i] != "condition"):
            specs[i] = None
    return tuple(specs)


@st.composite
def _variadic_call(draw: st.DrawFn, op: ops.Op) -> tuple[tuple[ShapeSpec, ...], Attrs]:
    """One to three shapes that join: equal (stack), or differing along the joined dim (cat)."""
    shape = draw(hnp.array_shapes(min_dims=0 if op.name == "stack" else 1, max_dims=3,
                                  max_side=3))
    count = draw(st.integers(1, 3))
    rank = len(shape) + (op.name == "stack")
    dim = draw(st.integers(-rank, rank - 1))
    if op.name == "stack":
        return (shape,) * count, {"dim": dim}
    sizes = draw(st.lists(st.integers(0, 3), min_size=count, max_size=count))
    d = dim % rank
    return tuple((*shape[:d], size, *shape[d + 1:]) for size in sizes), {"dim": dim}


@st.composite
def calls(draw: st.DrawFn, op: ops.Op) -> tuple[tuple[ShapeSpec, ...], Attrs]:
    """Operand shapes and attributes the shape rule accepts, for any row."""
    if op.variadic:
        return draw(_variadic_call(op))
    if op.shape is shapes.matmul:
        specs = draw(_matmul_shapes())
    elif op.arity == 1:
        specs = (draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=3)),)
    else:
        specs = draw(_broadcast_shapes(op.operands))
    attrs = draw(_valid_attrs(op, _as_shapes(specs)[0]))
    if not _accepted(op, specs, attrs):
        reject()
    if op.warns is not None and op.warns(_as_shapes(specs)[0], attrs):
        reject()  # a degenerate call (var of one element): NaN, which no difference matches
    return specs, attrs


@st.composite
def _wild_attr(draw: st.DrawFn, attr: ops.Attr, shape: Shape) -> Any:
    """A value of ``attr``'s kind that may not fit: dims out of range, repeated, miscounted."""
    rank = max(len(shape), 1)
    if attr.kind == "number?":
        return draw(st.none() | st.floats(-3, 3))
    if attr.kind == "bool":
        return draw(st.booleans())
    if attr.kind in ("int", "int?"):
        return draw(st.integers(-rank - 1, rank))
    if attr.kind in ("dims?", "dim?", "int|dims?") and draw(st.booleans()):
        return None
    if attr.kind == "dim?":
        return (draw(st.integers(-rank - 1, rank)),)
    return tuple(draw(st.lists(st.integers(-rank - 1, rank), max_size=rank + 1)))


@st.composite
def wild_calls(draw: st.DrawFn, op: ops.Op) -> tuple[tuple[Shape, ...], Attrs]:
    """Independent shapes and attributes of the right kinds, often incompatible."""
    count = draw(st.integers(1, 3)) if op.variadic else op.arity
    specs = tuple(draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=3))
                  for _ in range(count))
    if op.name == "reshape":
        attrs = {"shape": tuple(draw(st.lists(st.integers(-2, 4), max_size=3)))}
    else:
        attrs = {name: draw(_wild_attr(a, specs[0])) for name, a in op.attrs.items()}
    return specs, attrs


# Points where a row's derivative jumps; drawn values keep KINK_MARGIN from them. Rows whose kink
# lies outside their domain (sqrt and pow at 0) need no entry.
KINK_POINTS: dict[str, Callable[[Mapping[str, Any]], list[float]]] = {
    "relu": lambda attrs: [0.0],
    "abs": lambda attrs: [0.0],
    "sign": lambda attrs: [0.0],
    "clamp": lambda attrs: [b for b in (attrs["min"], attrs["max"]) if b is not None],
    "norm": lambda attrs: [0.0],  # a slice of zeros
    # Not a kink: PyTorch's g * (out / x) rounds out to a subnormal when x is one (4.9e-324).
    "prod": lambda attrs: [0.0],
}
# The 2-norm's curvature is 1/norm: finite differences need more room than a margin of 1e-4.
WIDE_KINKS = {"norm": 0.05}
# Rows whose derivative jumps where elements tie (a maximum; std where a slice is constant):
# drawn values are spread apart.
TIE_KINKS = {"amax", "amin", "max", "min", "std"}


# Rows whose derivative jumps where the operands are equal: their values are drawn on a grid of
# 1/1024, so two operands are equal (a tie, which central differences see as half each) or apart
# by far more than a finite-difference step.
TIES = frozenset({"maximum", "minimum"})


def _on_tie_grid(op: ops.Op, value: np.ndarray) -> np.ndarray:
    return np.asarray(np.round(value * 1024) / 1024) if op.name in TIES else value


def _away_from_kinks(op: ops.Op, value: np.ndarray, attrs: Mapping[str, Any]) -> np.ndarray:
    value = _on_tie_grid(op, value)
    if op.name in TIE_KINKS:
        # Equal elements (hypothesis draws them often) made at least 3 margins apart.
        value = np.asarray(value + 3 * KINK_MARGIN * np.arange(value.size).reshape(value.shape))
    margin = WIDE_KINKS.get(op.name, KINK_MARGIN)
    for point in KINK_POINTS.get(op.name, lambda attrs: [])(attrs):
        near = np.abs(value - point) < margin
        value = np.where(near, point + np.where(value >= point, 2.0, -2.0) * margin, value)
    return value


@st.composite
def operand_values(draw: st.DrawFn, op: ops.Op, specs: tuple[ShapeSpec, ...],
                   attrs: Attrs) -> tuple[Value, ...]:
    """float64 values from each operand's domain, kept off the row's kinks."""
    values: list[Value] = []
    for (lo, hi), spec in zip(_domains(op, len(specs)), specs, strict=True):
        elements = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
        if spec is None:
            values.append(float(_away_from_kinks(op, np.array(draw(elements)), attrs)))
        else:
            array = draw(hnp.arrays(np.float64, spec, elements=elements))
            values.append(_away_from_kinks(op, array, attrs))
    return _with_conditions(op, values)


# --- the three derivatives: engine backward, finite differences, sympy.diff -------------------

Grads = list[np.ndarray | None]


def engine_vjp(op: ops.Op, values: Sequence[Value], attrs: Attrs, g: np.ndarray) -> Grads:
    """Leaf gradients from the engine's backward, seeded with upstream ``g`` (float64)."""
    leaves: list[Any] = [v if isinstance(v, float) else
                         _tensor(v, cg.float64, requires_grad=True) for v in values]
    out = apply(op, tuple(leaves), attrs)
    out.backward(cg.tensor(g, dtype=cg.float64))
    return [None if isinstance(leaf, float) or leaf.grad is None else leaf.grad.numpy()
            for leaf in leaves]


def finite_difference_vjp(op: ops.Op, values: Sequence[Value], attrs: Attrs,
                          g: np.ndarray) -> Grads:
    """Central differences of <g, forward(values)> per element of each tensor operand."""

    def loss(args: Sequence[Value]) -> float:
        return float(np.sum(g * op.forward(*args, **attrs)))

    grads: Grads = []
    for i, (value, vjp) in enumerate(zip(values, op.vjps_for(len(values)), strict=True)):
        if isinstance(value, float) or vjp is None:
            grads.append(None)
            continue
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            plus, minus = value.copy(), value.copy()
            plus[index] += STEP
            minus[index] -= STEP
            args_plus, args_minus = list(values), list(values)
            args_plus[i], args_minus[i] = plus, minus
            # Divide by the step actually taken, which rounding makes differ from STEP.
            grad[index] = (loss(args_plus) - loss(args_minus)) / (plus[index] - minus[index])
        grads.append(grad)
    return grads


def _symbols(prefix: str, shape: Shape) -> np.ndarray:
    """An object array of real SymPy symbols, one per element."""
    array = np.empty(shape, dtype=object)
    for index in np.ndindex(shape):
        array[index] = sympy.Symbol(prefix + "".join(f"_{i}" for i in index), real=True)
    return array


def sympy_number(expr: Any) -> float:
    """A SymPy value as a float; complex infinity (1/0) becomes +inf."""
    expr = sympy.sympify(expr)
    if expr is sympy.zoo or expr is sympy.oo:
        return math.inf
    if expr is sympy.S.NegativeInfinity:
        return -math.inf
    if expr is sympy.nan:
        return math.nan
    return float(expr)


def symbolic_forward(op: ops.Op, values: Sequence[Value], attrs: Attrs,
                     ) -> tuple[list[np.ndarray | None], np.ndarray, dict[Any, Any]]:
    """``op.sympy`` over symbols: (symbols per operand, output expressions, symbol -> value)."""
    symbols: list[np.ndarray | None] = [
        None if isinstance(v, float) else _symbols(f"x{i}", v.shape) for i, v in enumerate(values)]
    operands = [v if s is None else s for v, s in zip(values, symbols, strict=True)]
    out = np.asarray(op.sympy(*operands, **attrs), dtype=object)
    subs: dict[Any, Any] = {}
    for sym, value in zip(symbols, values, strict=True):
        if sym is not None:
            pairs = zip(sym.flat, value.flat, strict=True)
            subs.update((s, sympy.Float(float(v))) for s, v in pairs)
    return symbols, out, subs


def _evaluate(exprs: np.ndarray, subs: Mapping[Any, Any]) -> np.ndarray:
    flat = [sympy_number(sympy.sympify(e).xreplace(subs)) for e in exprs.flat]
    return np.array(flat, dtype=np.float64).reshape(exprs.shape)


def sympy_vjp(op: ops.Op, values: Sequence[Value], attrs: Attrs, g: np.ndarray) -> Grads:
    """sympy.diff of <g, op.sympy(symbols)> per input symbol, evaluated at ``values``."""
    symbols, out, subs = symbolic_forward(op, values, attrs)
    terms = zip(g.flat, out.flat, strict=True)
    loss = sympy.Add(*(sympy.Float(float(gj)) * oj for gj, oj in terms))
    grads: Grads = []
    for sym, vjp in zip(symbols, op.vjps_for(len(symbols)), strict=True):
        if sym is None or vjp is None:
            grads.append(None)
            continue
        derivatives = np.empty(sym.shape, dtype=object)
        for index in np.ndindex(sym.shape):
            derivatives[index] = sympy.diff(loss, sym[index])
        grads.append(_evaluate(derivatives, subs))
    return grads


def mismatches(actual: Grads, expected: Grads, rtol: float, atol: float) -> list[str]:
    """Human-readable disagreements between two gradient lists; empty when they agree."""
    found = []
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        if e is None:
            continue
        if a is None:
            found.append(f"input {i}: no gradient, expected {e}")
        elif np.shape(a) != np.shape(e) or not np.allclose(a, e, rtol=rtol, atol=atol):
            found.append(f"input {i}: got {a!r}, expected {e!r}")
    return found


def _upstream(shape: Shape, seed: str) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(seed.encode())).uniform(-1.0, 1.0, shape)


# --- 1. forward against plain NumPy -------------------------------------------------------------

def _reduce_axes(x: np.ndarray, dim: Sequence[int] | None) -> tuple[int, ...] | None:
    # PyTorch semantics: a 0-d tensor reduced over 0 or -1 is itself.
    if dim is None:
        return None
    return tuple(d % x.ndim for d in dim) if x.ndim else ()


def _clamp_reference(x: np.ndarray, min: float | None = None,
                     max: float | None = None) -> np.ndarray:
    # Lower bound first, then upper: with min > max everything becomes max, as in PyTorch.
    low = x if min is None else np.maximum(x, min)
    return low if max is None else np.minimum(low, max)


def _transpose_reference(x: np.ndarray, dim0: int, dim1: int) -> np.ndarray:
    if x.ndim == 0:  # PyTorch lets a 0-d tensor swap dims 0 and -1 with themselves
        return x
    axes = list(range(x.ndim))
    axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
    return np.transpose(x, axes)


def _squeeze_reference(x: np.ndarray, dim: int | tuple[int, ...] | None) -> np.ndarray:
    dims = range(x.ndim) if dim is None else (dim,) if isinstance(dim, int) else dim
    return np.squeeze(x, axis=tuple(d % x.ndim for d in dims if x.ndim and x.shape[d] == 1))


# Independent NumPy spellings of each op (PyTorch semantics). A row missing here is checked
# against its SymPy forward instead, so new rows are still covered.
NUMPY_REFERENCE: dict[str, Callable[..., Any]] = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
    "neg": np.negative, "pow": np.power, "exp": np.exp, "log": np.log, "sin": np.sin,
    "cos": np.cos, "tan": np.tan, "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "relu": lambda x: np.where(x > 0, x, 0.0), "abs": np.absolute, "sqrt": np.sqrt,
    "clamp": _clamp_reference,
    "sum": lambda x, dim, keepdim: np.sum(x, axis=_reduce_axes(x, dim), keepdims=keepdim),
    "mean": lambda x, dim, keepdim: np.mean(x, axis=_reduce_axes(x, dim), keepdims=keepdim),
    "matmul": np.matmul, "maximum": np.fmax, "minimum": np.fmin, "atan2": np.arctan2,
    "reshape": lambda x, shape: np.reshape(x, shape),
    "transpose": _transpose_reference,
    "permute": lambda x, dims: np.transpose(x, dims),
    "t": lambda x: x.T,
    "squeeze": lambda x, dim: _squeeze_reference(x, dim),
    "unsqueeze": lambda x, dim: np.expand_dims(x, dim % (x.ndim + 1)),
    "select": lambda x, dim, index: np.take(x, index, axis=dim),
    "slice": lambda x, dim, start, end, step: np.moveaxis(
        np.moveaxis(x, dim, 0)[start:end:step], 0, dim),
    "alias": lambda x: np.array(x, copy=True),
    "cat": lambda *xs, dim: np.concatenate([x for x in xs if x.shape != (0,)] or xs[:1],
                                            axis=dim),
    "stack": lambda *xs, dim: np.stack(xs, axis=dim),
    "flatten": lambda x, start_dim, end_dim: np.reshape(x, (
        *x.shape[:start_dim % max(x.ndim, 1)], -1, *x.shape[end_dim % max(x.ndim, 1) + 1:])),
    "detach": lambda x: np.array(x, copy=True),
}


def _reference(op: ops.Op, values: Sequence[Value], attrs: Attrs) -> np.ndarray:
    if op.name in NUMPY_REFERENCE:
        return np.asarray(NUMPY_REFERENCE[op.name](*values, **attrs), dtype=np.float64)
    _, out, subs = symbolic_forward(op, values, attrs)
    return _evaluate(out, subs)


@pytest.mark.parametrize("dtype", [cg.float32, cg.float64], ids=repr)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_forward_matches_numpy(case: Case, dtype: cg.DType) -> None:
    op = case.op
    values = tuple(v if isinstance(v, float) or v.dtype == np.bool_ else v.astype(dtype.numpy)
                   for v in _case_values(case))
    differentiable = op in DIFFERENTIABLE
    operands = tuple(v if isinstance(v, float) else
                     _tensor(v, dtype, requires_grad=differentiable) for v in values)
    result = apply(op, operands, case.attrs)

    assert result.dtype == op.result_dtype(dtype), "the input dtype (bool for comparisons)"
    assert tuple(result.shape) == _rule_shape(op, case.shapes, case.attrs)
    # The reference runs in float64 on the (possibly float32-rounded) inputs.
    expected = _reference(op, tuple(v if isinstance(v, float) or v.dtype == np.bool_
                                    else v.astype(np.float64) for v in values), case.attrs)
    tol = 1e-5 if dtype == cg.float32 else 1e-12
    np.testing.assert_allclose(result.detach().numpy(), expected, rtol=tol, atol=tol)
    # The backward node is named (PyTorch's ``grad_fn``) exactly when the row is differentiable.
    if differentiable:
        assert result.grad_fn is not None
        assert re.fullmatch(r"[A-Z]\w*Backward\d+", result.grad_fn.name())
    else:
        assert result.grad_fn is None and not result.requires_grad


REDUCTION_FORMS = [
    pytest.param(shape, dim, keepdim, id=f"{'x'.join(map(str, shape)) or '0d'}-dim={dim}-{keepdim}")
    for shape, dim, keepdim in [
        ((2, 3, 4), None, False), ((2, 3, 4), 1, False), ((2, 3, 4), -1, True),
        ((2, 3, 4), (0, 2), False), ((2, 3, 4), (-1, 0), True), ((), 0, False), ((), -1, True)]]


@pytest.mark.parametrize("name", ["sum", "mean"])
@pytest.mark.parametrize(("shape", "dim", "keepdim"), REDUCTION_FORMS)
def test_public_reduction_forms(name: str, shape: Shape, dim: int | tuple[int, ...] | None,
                                keepdim: bool) -> None:
    # The public functions take dim as an int or a tuple; the op row always gets a tuple.
    x = np.random.default_rng(0).uniform(-3, 3, shape)
    result = getattr(cg, name)(cg.tensor(x, dtype=cg.float64), dim, keepdim=keepdim)
    dims = None if dim is None else (dim,) if isinstance(dim, int) else dim
    expected = NUMPY_REFERENCE[name](x, dims, keepdim)
    assert tuple(result.shape) == np.shape(expected)
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-12, atol=1e-12)


# --- 2. VJPs against finite differences ---------------------------------------------------------

@pytest.mark.parametrize("op", DIFFERENTIABLE, ids=_op_id)
@HYPOTHESIS
@given(data=st.data())
def test_vjp_matches_finite_differences(op: ops.Op, data: st.DataObject) -> None:
    specs, attrs = data.draw(calls(op), label="shapes, attrs")
    values = data.draw(operand_values(op, specs, attrs), label="values")
    g = data.draw(hnp.arrays(np.float64, _rule_shape(op, specs, attrs),
                             elements=st.floats(-1, 1)), label="upstream")
    assert mismatches(engine_vjp(op, values, attrs, g), finite_difference_vjp(op, values, attrs, g),
                      FD_RTOL, FD_ATOL) == []


@pytest.mark.parametrize("op", [op for op in OPS if None in op.vjps], ids=_op_id)
def test_non_differentiable_inputs_get_no_gradient(op: ops.Op) -> None:
    # A row without a VJP for an input (detach) must cut the graph there, as PyTorch does.
    case = _cases_for(op)[0]
    leaves = [v if isinstance(v, float) else _tensor(v, cg.float64, requires_grad=True)
              for v in _case_values(case)]
    out = apply(op, tuple(leaves), case.attrs)
    if all(vjp is None for vjp in op.vjps):
        assert not out.requires_grad and out.grad_fn is None
        return
    out.backward(cg.ones_like(out))
    for leaf, vjp in zip(leaves, op.vjps, strict=True):
        if vjp is None and not isinstance(leaf, float):
            assert leaf.grad is None


# --- 3. conventions at kinks --------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Kink:
    label: str
    op: str
    values: tuple[Any, ...]  # per operand, a number (a 0-d tensor) or nested tuples (a tensor)
    attrs: Attrs
    input: int  # the operand whose derivative is checked
    expected: Any  # its gradient (seeded with 1): a number, or nested tuples
    # Where the row's ``kink`` documents that its closed form is undefined (pow at x == 0) while
    # PyTorch's convention gives a value: sympy.diff must then give a non-finite value.
    closed_form_undefined: bool = False


# PyTorch 2.13's values at the non-differentiable points the rows document in ``kink``.
KINKS = [
    Kink("relu'(0)=0", "relu", (0.0,), {}, 0, 0.0),
    Kink("abs'(0)=0", "abs", (0.0,), {}, 0, 0.0),
    Kink("sign'(0)=0", "sign", (0.0,), {}, 0, 0.0),
    Kink("at-min", "clamp", (-1.0,), {"min": -1.0, "max": 1.0}, 0, 1.0),
    Kink("at-max", "clamp", (1.0,), {"min": -1.0, "max": 1.0}, 0, 1.0),
    Kink("at-min-only", "clamp", (-1.0,), {"min": -1.0, "max": None}, 0, 1.0),
    Kink("at-max-only", "clamp", (1.0,), {"min": None, "max": 1.0}, 0, 1.0),
    Kink("min=max", "clamp", (0.5,), {"min": 0.5, "max": 0.5}, 0, 1.0),
    Kink("min>max", "clamp", (0.5,), {"min": 1.0, "max": 0.0}, 0, 0.0),
    Kink("sqrt'(0)=inf", "sqrt", (0.0,), {}, 0, math.inf),
    Kink("tie-input", "maximum", (1.0, 1.0), {}, 0, 0.5),
    Kink("tie-other", "maximum", (1.0, 1.0), {}, 1, 0.5),
    Kink("tie-input", "minimum", (-2.0, -2.0), {}, 0, 0.5),
    Kink("tie-other", "minimum", (-2.0, -2.0), {}, 1, 0.5),
    Kink("d/dy-at-origin", "atan2", (0.0, 0.0), {}, 0, 0.0),
    Kink("d/dx-at-origin", "atan2", (0.0, 0.0), {}, 1, 0.0),
    Kink("d/dy-at-x=0-y=2", "pow", (0.0, 2.0), {}, 1, 0.0, closed_form_undefined=True),
    Kink("d/dy-at-x=0-y=0", "pow", (0.0, 0.0), {}, 1, 0.0, closed_form_undefined=True),
    Kink("d/dx-at-x=0-y=0", "pow", (0.0, 0.0), {}, 0, 0.0, closed_form_undefined=True),
    # Reductions: ties share the gradient evenly; products at zeros are exact; the 2-norm and
    # std have gradient 0 where they are 0.
    Kink("one-zero", "prod", ((2.0, 0.0, 3.0),), {"dim": None, "keepdim": False}, 0,
         (0.0, 6.0, 0.0)),
    Kink("two-zeros", "prod", ((2.0, 0.0, 0.0),), {"dim": None, "keepdim": False}, 0,
         (0.0, 0.0, 0.0)),
    Kink("one-zero-along-dim", "prod", (((2.0, 0.0), (0.0, 0.0)),), {"dim": (1,),
                                                                      "keepdim": False}, 0,
         ((0.0, 2.0), (0.0, 0.0))),
    Kink("tie", "amax", ((1.0, 3.0, 3.0),), {"dim": None, "keepdim": False}, 0, (0.0, 0.5, 0.5)),
    Kink("tie-along-dim", "amax", (((3.0, 3.0, 3.0), (1.0, 2.0, 2.0)),),
         {"dim": (1,), "keepdim": True}, 0, ((1 / 3, 1 / 3, 1 / 3), (0.0, 0.5, 0.5))),
    Kink("tie", "amin", ((1.0, 0.0, 0.0),), {"dim": None, "keepdim": False}, 0, (0.0, 0.5, 0.5)),
    Kink("tie", "max", ((3.0, 1.0, 3.0, 3.0),), {}, 0, (1 / 3, 0.0, 1 / 3, 1 / 3)),
    Kink("tie", "min", ((-1.0, -1.0),), {}, 0, (0.5, 0.5)),
    Kink("all-equal", "std", ((2.0, 2.0, 2.0),),
         {"dim": None, "unbiased": True, "keepdim": False, "correction": None}, 0,
         (0.0, 0.0, 0.0)),
    Kink("at-0", "norm", ((0.0, 0.0),), {"p": 2.0, "dim": None, "keepdim": False}, 0,
         (0.0, 0.0)),
    Kink("at-0-along-dim", "norm", (((0.0, 0.0), (3.0, 4.0)),),
         {"p": 2.0, "dim": (1,), "keepdim": False}, 0, ((0.0, 0.0), (0.6, 0.8))),
]


def _kink_id(kink: Kink) -> str:
    return f"{kink.op}-{kink.label}"


def _same(actual: Any, expected: Any) -> bool:
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected)
    return actual.shape == expected.shape and bool(np.allclose(actual, expected, rtol=1e-15,
                                                               atol=0, equal_nan=True))


def _upstream_of_ones(op: ops.Op, values: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    return np.ones(op.shape(*(np.shape(v) for v in values), **attrs))


@pytest.mark.parametrize("kink", KINKS, ids=_kink_id)
def test_kink_numeric_vjp(kink: Kink) -> None:
    op = ops.get(kink.op)
    values = tuple(np.array(v, dtype=np.float64) for v in kink.values)
    grads = engine_vjp(op, values, kink.attrs, _upstream_of_ones(op, values, kink.attrs))
    grad = grads[kink.input]
    assert grad is not None
    assert _same(grad, kink.expected), grad


@pytest.mark.parametrize("kink", KINKS, ids=_kink_id)
def test_kink_sympy_derivative(kink: Kink) -> None:
    # Exact (rational) values: the SymPy form's derivative at the kink, with no rounding; for a
    # tensor, the derivative of the sum of the results (the upstream gradient of ones).
    op = ops.get(kink.op)
    symbols = [_symbols(f"x{i}", np.shape(v)) for i, v in enumerate(kink.values)]
    expr = sympy.Add(*np.asarray(op.sympy(*symbols, **kink.attrs), dtype=object).flat)
    exact = {s: sympy.Rational(str(v)) for array, values in zip(symbols, kink.values, strict=True)
             for s, v in zip(array.flat, np.array(values, dtype=np.float64).flat, strict=True)}
    checked = symbols[kink.input]
    derivatives = [sympy.diff(expr, s) for s in checked.flat]
    at_kink = np.array([sympy_number(d.subs(exact)) for d in derivatives]).reshape(checked.shape)
    if kink.closed_form_undefined:
        assert not np.isfinite(at_kink).all(), f"{derivatives} at the kink is {at_kink}"
    else:
        assert _same(at_kink, kink.expected), f"{derivatives} at the kink is {at_kink}"


# --- 4. the SymPy forward and its derivative against the numeric engine ------------------------

@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_sympy_forward_matches_numpy(case: Case) -> None:
    values = _case_values(case)
    _, out, subs = symbolic_forward(case.op, values, case.attrs)
    numeric = np.asarray(case.op.forward(*values, **case.attrs))
    assert out.shape == numeric.shape
    np.testing.assert_allclose(_evaluate(out, subs), numeric, rtol=SYM_RTOL, atol=SYM_ATOL)


COMPOSED_CASES = [case for case in CASES if case.op.composed is not None]


@pytest.mark.parametrize("case", COMPOSED_CASES, ids=_case_id)
def test_composed_steps_compute_the_forward(case: Case) -> None:
    # The closed form derives a composed row through its steps: they must be the row's function.
    assert case.op.composed is not None
    values = list(_case_values(case))
    expected = np.asarray(case.op.forward(*values, **case.attrs))
    for step in case.op.composed(**case.attrs):
        row = ops.get(step.op)
        values.append(row.forward(*(values[i] for i in step.inputs),
                                  **graph.normalize_attrs(row, step.attrs)))
    result = np.asarray(values[-1])
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", DIFF_CASES, ids=_case_id)
def test_sympy_derivative_matches_engine_vjp(case: Case) -> None:
    values = _case_values(case)
    g = _upstream(_rule_shape(case.op, case.shapes, case.attrs), case.id)
    assert mismatches(engine_vjp(case.op, values, case.attrs, g),
                      sympy_vjp(case.op, values, case.attrs, g), SYM_RTOL, SYM_ATOL) == []


def test_cross_checks_detect_a_wrong_vjp() -> None:
    # Both comparisons must be able to fail: sin with the derivative g * sin(x) instead of
    # g * cos(x) is caught by SymPy and by finite differences alike.
    sin = ops.get("sin")
    wrong = dataclasses.replace(sin, vjps=(lambda g, out, x: g * np.sin(x),))
    values = (np.array([-2.0, -0.5, 0.3, 1.7]),)
    g = np.array([1.0, -0.5, 0.25, 2.0])
    for reference in (sympy_vjp, finite_difference_vjp):
        assert mismatches(engine_vjp(sin, values, {}, g), reference(sin, values, {}, g),
                          FD_RTOL, FD_ATOL) == []
        assert mismatches(engine_vjp(wrong, values, {}, g), reference(wrong, values, {}, g),
                          FD_RTOL, FD_ATOL) != []


# --- 5. shape rules ---------------------------------------------------------------------------

@pytest.mark.parametrize("op", OPS, ids=_op_id)
@HYPOTHESIS
@given(data=st.data())
def test_shape_rule_matches_forward(op: ops.Op, data: st.DataObject) -> None:
    specs, attrs = data.draw(calls(op), label="shapes, attrs")
    # Only shapes matter here, so the values come cheaply from a fixed case-seeded draw.
    values = _case_values(Case(op, specs, attrs, "shape-rule"))
    expected = _rule_shape(op, specs, attrs)
    assert np.shape(op.forward(*values, **attrs)) == expected
    operands = tuple(v if isinstance(v, float) else cg.tensor(v) for v in values)
    assert tuple(apply(op, operands, attrs).shape) == expected


def _outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except Exception as error:  # the comparison below names whichever type was raised
        return "raised", error


@pytest.mark.parametrize("op", OPS, ids=_op_id)
@HYPOTHESIS
@given(data=st.data())
def test_engine_raises_the_shape_rules_error(op: ops.Op, data: st.DataObject) -> None:
    # On any shapes, the engine either computes the rule's shape or raises the rule's error
    # (PyTorch's type and message), never NumPy's.
    specs, attrs = data.draw(wild_calls(op), label="shapes, attrs")
    operands = tuple(_tensor(v, cg.float64) for v in _with_conditions(
        op, [np.full(s, sum(lo_hi) / 2)
             for s, lo_hi in zip(specs, _domains(op, len(specs)), strict=True)]))
    rule, expected = _outcome(lambda: _rule_shape(op, specs, attrs))
    engine, actual = _outcome(lambda: tuple(apply(op, operands, attrs).shape))
    if rule == "ok":
        assert (engine, actual) == (rule, expected)
    else:
        assert engine == "raised", f"the rule raised {expected!r}, the engine gave {actual}"
        assert (type(actual), str(actual)) == (type(expected), str(expected))


def test_broadcast_error_is_pytorchs() -> None:
    with pytest.raises(RuntimeError, match=re.escape(
            "The size of tensor a (3) must match the size of tensor b (2) at non-singleton "
            "dimension 0")):
        cg.ones(3) + cg.ones(2)


# Calls written once for both modules (``m`` is torch or crossgrad.engine): the engine must raise
# what PyTorch raises, or compute what it computes.
TORCH_CALLS: dict[str, Callable[[Any], Any]] = {
    "add-mismatch": lambda m: m.ones(3) + m.ones(2),
    "sub-batch-mismatch": lambda m: m.ones(2, 3) - m.ones(4, 3),
    "mul-three-way": lambda m: m.ones(2, 1, 3) * m.ones(4, 1),
    "matmul-0d": lambda m: m.ones(()) @ m.ones(3),
    "matmul-mm": lambda m: m.ones(2, 3) @ m.ones(2, 3),
    "matmul-bmm": lambda m: m.ones(2, 2, 3) @ m.ones(2, 3),
    "matmul-mv": lambda m: m.ones(2, 3) @ m.ones(2),
    "matmul-vm": lambda m: m.ones(3) @ m.ones(2, 4),
    "matmul-dot": lambda m: m.ones(3) @ m.ones(2),
    "matmul-batch": lambda m: m.ones(2, 2, 3) @ m.ones(3, 3, 4),
    "reshape-invalid": lambda m: m.ones(2, 3).reshape(4, -1),
    "reshape-two-inferred": lambda m: m.ones(2, 3).reshape(-1, -1),
    "reshape-negative": lambda m: m.ones(2, 3).reshape(-2, 3),
    "transpose-out-of-range": lambda m: m.ones(2, 3).transpose(0, 2),
    "transpose-0d": lambda m: m.ones(()).transpose(0, -1),
    "t-matrix": lambda m: m.arange(6.0).reshape(2, 3).t(),
    "t-vector": lambda m: m.t(m.arange(3.0)),
    "t-3d": lambda m: m.ones(2, 3, 4).t(),
    "permute-length": lambda m: m.ones(2, 3).permute(0),
    "permute-duplicate": lambda m: m.ones(2, 3).permute(0, 0),
    "sum-out-of-range": lambda m: m.ones(2, 3).sum(2),
    "sum-duplicate": lambda m: m.ones(2, 3).sum((0, -2)),
    "sum-0d-dim0": lambda m: m.ones(()).sum(0),
    "mean-0d-dim-1-keepdim": lambda m: m.ones(()).mean(-1, keepdim=True),
    "sum-empty-dims": lambda m: m.ones(2, 3).sum(()),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", list(TORCH_CALLS))
def test_matches_torch(name: str, require_torch: ModuleType) -> None:
    torch_kind, torch_result = _outcome(lambda: TORCH_CALLS[name](require_torch))
    engine_kind, engine_result = _outcome(lambda: TORCH_CALLS[name](cg))
    if torch_kind == "raised":
        assert engine_kind == "raised", f"torch raised {torch_result!r}; engine {engine_result}"
        assert isinstance(engine_result, type(torch_result)), repr(engine_result)
        assert str(engine_result) == str(torch_result)
    else:
        assert engine_kind == "ok", f"torch computed, the engine raised {engine_result!r}"
        assert tuple(engine_result.shape) == tuple(torch_result.shape), "shape differs from torch"
        np.testing.assert_allclose(engine_result.numpy(), torch_result.numpy())


# --- 6. row invariants ------------------------------------------------------------------------

def test_names_are_unique_and_indexed() -> None:
    names = [op.name for op in OPS]
    assert len(names) == len(set(names))
    assert all(ops.TABLE[op.name] is op and ops.get(op.name) is op for op in OPS)
    with pytest.raises(KeyError, match="known ops"):
        ops.get("no-such-op")


def _kind_holds(kind: str, value: Any) -> bool:
    dims = isinstance(value, tuple) and all(type(d) is int for d in value)
    return {"number?": value is None or type(value) in (int, float),
            "order?": value is None or type(value) in (int, float),
            "dims?": value is None or dims, "dim?": value is None or (dims and len(value) == 1),
            "dims": dims, "int": type(value) is int,
            "int|dims?": value is None or dims or type(value) is int,
            "int?": value is None or type(value) is int, "bool": type(value) is bool}[kind]


@pytest.mark.parametrize("op", OPS, ids=_op_id)
def test_row_invariants(op: ops.Op) -> None:
    assert op.arity == len(op.domain) >= 1
    assert all(lo < hi for lo, hi in op.domain)
    # Differentiable rows name their PyTorch backward node; detach has none.
    differentiable = any(vjp is not None for vjp in op.vjps)
    assert bool(op.grad_fn) == differentiable
    for name, attr in op.attrs.items():
        assert attr.kind in ATTR_KINDS, name
        assert not attr.required or attr.default is None, name
        assert attr.required or _kind_holds(attr.kind, attr.default), name
    # Every row has cases, whose attributes are the row's own and of the declared kinds.
    cases = _cases_for(op)
    assert cases, f"no shape the rule accepts among the default cases for {op.name}"
    for case in cases:
        assert set(case.attrs) == set(op.attrs)
        assert all(_kind_holds(op.attrs[k].kind, v) for k, v in case.attrs.items()), case.id
    # A documented kink is pinned by a case in KINKS.
    assert bool(op.kink) == any(k.op == op.name for k in KINKS)
    # An elementwise row has an elementwise shape rule; a row stops the gradient exactly when
    # none of its inputs is differentiable.
    assert not op.elementwise or op.shape in (shapes.broadcast, shapes.same)
    assert op.stops_gradient == (not differentiable)
    # PyTorch names the tensor operand "input", a variadic op's sequence "tensors".
    assert ("tensors" if op.variadic else "input") in op.operands
    assert len(op.operands) == op.arity


@dataclasses.dataclass(frozen=True)
class _TensorCall:
    values: tuple[np.ndarray, ...]
    out: np.ndarray
    attrs: Mapping[str, Any]
    targets: tuple[Any, ...]


@pytest.mark.parametrize("op", [op for op in OPS if callable(op.grad_fn)], ids=_op_id)
def test_tensor_grad_fn_is_the_name_on_tensor_operands(op: ops.Op) -> None:
    # Contiguous matrices, all requiring grad, default attributes.
    matrix = np.zeros((2, 2))
    call = _TensorCall((matrix,) * op.arity, matrix,
                       {name: attr.default for name, attr in op.attrs.items()},
                       (True,) * op.arity)
    assert op.grad_fn_name(call) == op.tensor_grad_fn


def test_each_operator_writes_one_op() -> None:
    written = [(op.operator, op.arity) for op in OPS if op.operator]
    assert len(written) == len(set(written)) == len(ops.OPERATORS)
    assert all(ops.TABLE[name].operator == symbol for (symbol, _), name in ops.OPERATORS.items())
