"""Benchmark of the symbolic side: deriving and compiling closed forms, and evaluating them.

Run: ``python bench/bench_symbolic.py [--quick] [--sections abcdef] [--chains N] [--seed S]``.
Sections, each measured against its anchors in the same run and printed as ratios:

(a) derivation + compile of a 200-op scalar chain (sin, *1.01, +0.1, tanh, -0.1 repeated), cold
    (every cache of derived rules emptied first); anchors: SymPy alone (the whole expression's
    ``diff``) and SymEngine alone (the same). Target: crossgrad <= 50 ms.
(b) the same for ``mean(sigmoid(w*x + b))`` with 1000-element ``w`` and ``x``. Target: <= 2 s.
    SymPy alone takes over a minute here; ``--quick`` skips that anchor.
(c) a cached closed form evaluated at new values, per seed-notebook example, against the numeric
    engine's forward + backward of the same computation. Target: <= 0.5x the engine.
    The whole ``differentiate`` call (validation, numeric engine, closed form, check) is shown
    beside it.
(d) ``--chains`` seeded random chains of 2-8 scalar ops of the table, differentiated in float32
    with the check's verdict recorded (mode REPORT) and the numeric gradient held against
    PyTorch's: how often the check calls DISAGREE where PyTorch computes the same gradient
    (target 0), its fallbacks; a first ``differentiate()`` call per chain through the default
    route (derive, compile, check, render), with its verdicts; each chain's derivation + compile
    as a new structure, cold, against SymEngine alone and SymPy alone (``diff`` + compile;
    target: p99 under 1 s on 7 ops); the check's cost per call on a cached structure. Needs
    PyTorch. ``--sections d`` runs it alone.
(f) the reductions whose every partial depends on the whole slice (``amax``, ``var``, ``std``,
    ``logsumexp``, ``prod``) over 100, 300 and 1000 elements: derivation + compile, cold, as a
    first call pays it, in a worker of the default pool. Target: within the check's deadline
    (10 s) at 1000 elements, where a worker still deriving is stopped.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import functools
import math
import operator
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import crossgrad.engine as cg
import numpy as np
import symengine as se
import sympy
from _timing import fmt_ratio, fmt_time, markdown_table, measure, verdict
from crossgrad.engine import closed_form, dtypes, formula, graph, solver, symbolic
from crossgrad.engine.budget import DEFAULT_CAPS
from crossgrad.engine.closed_form import Fused
from crossgrad.engine.differentiation import differentiate
from crossgrad.engine.errors import DeadlineExceeded
from crossgrad.engine.graph import Constant, Graph, Leaf, Operation
from crossgrad.engine.solver import Symbolic, _compile
from crossgrad.engine.symbolic import Plan, constants_of, derive

F32 = dtypes.float32
CHAIN = [("sin", None), ("mul", 1.01), ("add", 0.1), ("tanh", None), ("sub", 0.1)]


def chain_graph(n: int) -> Graph:
    nodes: list[Any] = [Leaf("x", "x")]
    previous = "x"
    for k in range(n):
        op, constant = CHAIN[k % len(CHAIN)]
        if constant is None:
            nodes.append(Operation(f"n{k}", op, (previous,)))
        else:
            nodes.append(Constant(f"c{k}", np.array(constant)))
            nodes.append(Operation(f"n{k}", op, (previous, f"c{k}")))
        previous = f"n{k}"
    return Graph(nodes, previous)


def _plan(source: Graph | str, leaves: dict[str, tuple[int, ...]]) -> tuple[Any, Plan]:
    g = formula.parse(source) if isinstance(source, str) else source
    valid = graph.validate(g, {n: (s, F32) for n, s in leaves.items()})
    return valid, Plan.of(valid, list(leaves))


def _cold() -> None:
    """Forget every derived rule (and SymPy's own cache), so a derivation pays for all of its
    computer algebra."""
    sympy.core.cache.clear_cache()
    solver._derivations.clear()
    symbolic.elementwise_rule.cache_clear()
    symbolic.structural_rule.cache_clear()
    closed_form._compiled_rule.cache_clear()
    closed_form._gathers.cache_clear()


def crossgrad_compile(valid: Any, plan: Plan) -> Callable[[], object]:
    fused = Symbolic().fused(plan)  # the route differentiate takes for this plan

    def run() -> object:
        _cold()
        return _compile(plan, fused)

    return run


def whole_expression(plan: Plan, library: Any) -> Callable[[], object]:
    """The anchor: the output as one expression of the leaf symbols (the table's SymPy forwards,
    constants as symbols as crossgrad has them), then ``diff`` by every leaf element — with SymPy
    or with SymEngine."""
    def run() -> object:
        leaves = {name: _symbols(library, name, shape) for name, shape in plan.leaves}
        nodes: list[Any] = []
        for k, node in enumerate(plan.nodes):
            if node.kind == "leaf":
                nodes.append(leaves[node.name])
            elif node.kind == "const":
                nodes.append(_symbols(library, f"c{k}_", node.shape))
            else:
                nodes.append(_sympy_op(node, [nodes[i] for i in node.inputs], library))
        out = nodes[plan.output]
        out = out.reshape(()).item() if isinstance(out, np.ndarray) else out
        return [out.diff(s) for array in leaves.values() for s in np.ravel(array)]

    return run


def _symbols(library: Any, prefix: str, shape: tuple[int, ...]) -> Any:
    if not shape:
        return library.Symbol(prefix)
    count = int(np.prod(shape))
    return np.array([library.Symbol(f"{prefix}{k}") for k in range(count)],
                    dtype=object).reshape(shape)


def _sympy_op(node: Any, inputs: list[Any], library: Any) -> Any:
    op = cg.ops.TABLE[node.op]
    if library is sympy or node.op in ("add", "sub", "mul", "div", "neg", "pow", "mean", "sum"):
        return op.sympy(*inputs, **dict(node.attrs))
    if not op.elementwise:  # the table's forward, written with SymEngine's arithmetic
        return op.sympy(*inputs, **dict(node.attrs))
    attrs = dict(node.attrs)
    if node.op in _SYMENGINE:
        function = _SYMENGINE[node.op]
        return np.frompyfunc(lambda v: function(v, **attrs), 1, 1)(*inputs)
    symbols, forward = _symengine_forward(node.op, node.attrs)
    return np.frompyfunc(lambda *v: forward.subs(dict(zip(symbols, v, strict=True))),
                         len(inputs), 1)(*inputs)


@functools.cache  # not emptied by _cold: the anchor's forms are written once, as _SYMENGINE's
def _symengine_forward(name: str, attrs: tuple[tuple[str, Any], ...]) -> tuple[tuple[Any, ...],
                                                                                Any]:
    """The table's SymPy forward of an elementwise op without a form in ``_SYMENGINE``, on
    scalar symbols, in SymEngine."""
    op = cg.ops.TABLE[name]
    symbols = sympy.symbols(f"t0:{op.arity}", real=True)
    return (tuple(se.sympify(s) for s in symbols),
            se.sympify(op.sympy(*symbols, **dict(attrs))))


def _clamp_symengine(v: Any, min: float | None = None, max: float | None = None) -> Any:
    branches = [] if min is None else [(se.Float(min), se.Lt(v, min))]
    branches += [] if max is None else [(se.Float(max), se.Gt(v, max))]
    return se.Piecewise(*branches, (v, True))


# The table's SymPy forwards written in SymEngine, kinks as the table writes them (Piecewise,
# with PyTorch's derivative at the kink).
_SYMENGINE: dict[str, Callable[..., Any]] = {
    "exp": se.exp, "log": se.log, "sin": se.sin, "cos": se.cos, "tan": se.tan, "tanh": se.tanh,
    "sqrt": se.sqrt, "sigmoid": lambda v: 1 / (1 + se.exp(-v)),
    "relu": lambda v: se.Piecewise((v, se.Gt(v, 0)), (0, True)),
    "abs": lambda v: se.Piecewise((v, se.Gt(v, 0)), (-v, se.Lt(v, 0)), (0, True)),
    "clamp": _clamp_symengine,
}


def _deep(function: Callable[[], object]) -> Callable[[], object]:
    """``function`` in a thread with a large stack and recursion limit: SymPy recurses as deep
    as the expression nests."""
    def run() -> object:
        box: dict[str, object] = {}
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(200_000)
        threading.stack_size(1 << 29)
        thread = threading.Thread(target=lambda: box.setdefault("r", function()))
        thread.start()
        thread.join()
        threading.stack_size(0)
        sys.setrecursionlimit(limit)
        return box.get("r")
    return run


def timed_once(function: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def derivation_section(title: str, valid: Any, plan: Plan, target: float, sympy_anchor: bool,
                       ) -> tuple[str, bool]:
    ours = timed_once(crossgrad_compile(valid, plan))
    symengine_alone = timed_once(whole_expression(plan, se), repeat=1)
    rows = [["crossgrad (symbolic reverse mode, compiled)", fmt_time(ours), "1.00x"],
            ["SymEngine alone (whole-expression diff)", fmt_time(symengine_alone),
             fmt_ratio(ours / symengine_alone)]]
    if sympy_anchor:
        sympy_alone = timed_once(_deep(whole_expression(plan, sympy)), repeat=1)
        rows.append(["SymPy alone (whole-expression diff)", fmt_time(sympy_alone),
                     fmt_ratio(ours / sympy_alone)])
    else:
        rows.append(["SymPy alone (whole-expression diff)", "skipped (--quick)", ""])
    print(f"\n### {title}\n")
    print(markdown_table(["derivation + compile, cold", "time", "crossgrad / this"], rows))
    ok = ours <= target
    print(f"\ncrossgrad: {fmt_time(ours)} against a target of {fmt_time(target)}: "
          f"{'PASS' if ok else 'MISS'}")
    return f"{title}: {fmt_time(ours)} (target {fmt_time(target)})", ok


SEED: list[tuple[str, str, dict[str, Any], list[str]]] = [
    ("x**2 at 5", "x**2", {"x": np.float32(5.0)}, ["x"]),
    ("sin(x**2) at 4", "sin(x**2)", {"x": np.float32(4.0)}, ["x"]),
    ("the neuron's BCE loss", "-(y * log(clamp(sigmoid(w * x + b), 1e-8, 0.99999999))"
     " + (1 - y) * log(1 - clamp(sigmoid(w * x + b), 1e-8, 0.99999999)))",
     {"x": np.float32(6.7), "y": np.float32(0.0), "w": np.float32(1.0), "b": np.float32(0.0)},
     ["w", "b"]),
    ("mean(x**2), x of 3", "mean(x**2)", {"x": np.array([1.0, 3.0, 4.0], np.float32)}, ["x"]),
]


def _engine_case(name: str) -> Callable[[], object]:
    """The seed example on the numeric engine, as the notebook runs it."""
    if name.startswith("x**2"):
        def square() -> object:
            x = cg.tensor(5.0, requires_grad=True)
            (x ** 2).backward()
            return x.grad
        return square
    if name.startswith("sin"):
        def sine() -> object:
            x = cg.tensor(4.0, requires_grad=True)
            cg.sin(x ** 2).backward()
            return x.grad
        return sine
    if name.startswith("the neuron"):
        def neuron() -> object:
            x, y = cg.tensor(6.7), cg.tensor(0.0)
            w, b = cg.tensor(1.0, requires_grad=True), cg.tensor(0.0, requires_grad=True)
            p = cg.clamp(cg.sigmoid(w * x + b), 1e-8, 1 - 1e-8)
            (-(y * cg.log(p) + (1 - y) * cg.log(1 - p))).backward()
            return w.grad, b.grad
        return neuron

    def mean() -> object:
        x = cg.tensor([1.0, 3.0, 4.0], requires_grad=True)
        (x ** 2).mean().backward()
        return x.grad
    return mean


def evaluation_section(budget: float) -> tuple[list[str], bool]:
    side = Symbolic()
    rows: list[list[str]] = []
    summary: list[str] = []
    ok = True
    for title, text, values, wrt in SEED:
        valid = graph.validate(formula.parse(text), {n: (np.shape(v), F32)
                                                     for n, v in values.items()})
        plan = Plan.of(valid, wrt)
        evaluator = Fused(plan, derive(plan))
        leaves = [np.asarray(values[n], dtype=np.float64) for n, _ in plan.leaves]
        constants = constants_of(valid)
        differentiate(text, values, wrt=wrt, symbolic=side)  # derived once, then cached
        stats = measure({"closed": functools.partial(evaluator, leaves, constants),
                         "engine": _engine_case(title),
                         "differentiate": functools.partial(differentiate, text, values, wrt=wrt,
                                                            symbolic=side)}, budget=budget)
        ratio = stats["closed"].median / stats["engine"].median
        ok &= ratio <= 0.5
        rows.append([title, f"{stats['closed'].median * 1e6:.2f}",
                     f"{stats['engine'].median * 1e6:.2f}", fmt_ratio(ratio),
                     verdict(ratio, 0.5), f"{stats['differentiate'].median * 1e6:.0f}"])
        summary.append(f"{title}: {fmt_ratio(ratio)}")
    side.close()
    print("\n### (c) a cached closed form at new values vs the numeric engine (µs per call)\n")
    print(markdown_table(["seed example", "closed form", "engine fwd+bwd", "ratio",
                          "<= 0.5x", "whole differentiate()"], rows))
    return summary, ok


# --- (e) softmax cross-entropy: a non-elementwise head ------------------------------------------

CLASSES = 100
SOFTMAX_CE = "-sum(log_softmax(z, 0) * y)"


def softmax_ce_values() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"z": rng.standard_normal(CLASSES).astype(np.float32),
            "y": np.eye(CLASSES, dtype=np.float32)[7]}


def _engine_softmax_ce(values: dict[str, np.ndarray]) -> Callable[[], Any]:
    def run() -> Any:
        z = cg.tensor(values["z"], requires_grad=True)
        (-(cg.log_softmax(z, 0) * cg.tensor(values["y"])).sum()).backward()
        return z.grad
    return run


def softmax_section(budget: float) -> list[tuple[str, bool]]:
    values = softmax_ce_values()
    valid, plan = _plan(SOFTMAX_CE, {"z": (CLASSES,), "y": (CLASSES,)})
    plan = Plan.of(valid, ["z"])
    results = [derivation_section(f"(e) {SOFTMAX_CE}, {CLASSES} classes", valid, plan, 1.0,
                                  sympy_anchor=False)]
    evaluator = Fused(plan, derive(plan))
    leaves = [np.asarray(values[n], dtype=np.float64) for n, _ in plan.leaves]
    constants = constants_of(valid)
    closed = evaluator(leaves, constants).gradients["z"]
    engine = np.asarray(_engine_softmax_ce(values)().tolist(), dtype=np.float64)
    np.testing.assert_allclose(closed, engine, rtol=1e-5, atol=1e-6)
    stats = measure({"closed": functools.partial(evaluator, leaves, constants),
                     "engine": _engine_softmax_ce(values)}, budget=budget)
    ratio = stats["closed"].median / stats["engine"].median
    print(markdown_table(["cached evaluation", "closed form µs", "engine fwd+bwd µs", "ratio",
                          "<= 0.5x"],
                         [["gradient at new values", f"{stats['closed'].median * 1e6:.1f}",
                           f"{stats['engine'].median * 1e6:.1f}", fmt_ratio(ratio),
                           verdict(ratio, 0.5)]]))
    results.append((f"(e) cached closed form / engine: {fmt_ratio(ratio)} (target 0.50x)",
                    ratio <= 0.5))
    return results


# --- (f) dense reductions: first derivations as the slice grows -----------------------------------

DENSE_REDUCTIONS = ("amax(x)", "var(x)", "std(x)", "logsumexp(x, 0)", "prod(x)")
DENSE_SIZES = (100, 300, 1000)


def dense_section() -> list[tuple[str, bool]]:
    """Each size a new structure for a worker of the default pool, as a first call meets it;
    a worker past the deadline is stopped there, as in a call."""
    deadline = DEFAULT_CAPS.deadline
    side = Symbolic()
    side.evaluator(_plan("sum(x)", {"x": (1,)})[1], deadline)  # the pool started and warm
    rows, results = [], []
    for source in DENSE_REDUCTIONS:
        row, in_time = [source], True
        for n in DENSE_SIZES:
            start = time.perf_counter()
            try:
                side.evaluator(_plan(source, {"x": (n,)})[1], deadline)
                row.append(fmt_time(time.perf_counter() - start))
                in_time = True
            except DeadlineExceeded:
                row.append(f"past the {fmt_time(deadline)} deadline")
                in_time = False
        results.append((f"(f) {source}, {DENSE_SIZES[-1]} elements: {row[-1]} "
                        f"(target {fmt_time(deadline)})", in_time))
        rows.append(row)
    side.close()
    print("\n### (f) Dense reductions: derivation + compile, cold, in a worker\n")
    print(markdown_table(["formula", *(f"{n} elements" for n in DENSE_SIZES)], rows))
    return results


# --- (d) random scalar chains: the check's verdicts, held against PyTorch, and their cost ------

# A chain operand: "v" (the chain so far), "x" (the leaf) or a Python number.
Operand = str | float | int
BINARY = {"add": ("+", operator.add), "sub": ("-", operator.sub), "mul": ("*", operator.mul),
          "div": ("/", operator.truediv), "pow": ("**", operator.pow)}
KINK_MARGIN = 0.01  # operands of relu, abs and clamp stay this far from their kinks
TIES = ("maximum", "minimum")  # and the operands of these from each other
# Chain values stay below this: float32 still resolves sin and cos of it to ~1e-4, where larger
# operands leave no digit of them that any tolerance could judge.
MAGNITUDE = 1e3


@dataclasses.dataclass(frozen=True)
class Step:
    op: str
    args: tuple[Operand, ...]
    attrs: tuple[tuple[str, float], ...] = ()


@dataclasses.dataclass(frozen=True)
class Chain:
    steps: tuple[Step, ...]
    x: float  # a float32 value

    @property
    def text(self) -> str:
        """The chain as a formula, parenthesized only where precedence needs it."""
        text, atomic = "x", True
        for step in self.steps:
            if step.op == "neg":
                text, atomic = f"-{text if atomic else f'({text})'}", False
            elif step.op in BINARY:
                a, b = (_operand_text(arg, text, atomic) for arg in step.args)
                text, atomic = f"{a} {BINARY[step.op][0]} {b}", False
            elif len(step.args) == 2:  # maximum(x, 2)
                a, b = (_operand_text(arg, text, True) for arg in step.args)
                text, atomic = f"{step.op}({a}, {b})", True
            else:
                extra = "".join(f", {k}={v!r}" for k, v in step.attrs)
                text, atomic = f"{step.op}({text}{extra})", True
        return text

    def torch(self, lib: Any, x: Any) -> Any:
        """The chain on PyTorch tensors (Python numbers stay numbers, as in the formula)."""
        v = x
        for step in self.steps:
            args = [v if a == "v" else x if a == "x" else a for a in step.args]
            if step.op in BINARY:
                v = BINARY[step.op][1](*args)
            elif len(args) == 2:  # torch's functions of two tensors take no Python numbers
                v = getattr(lib, step.op)(*(a if isinstance(a, lib.Tensor)
                                            else lib.tensor(a, dtype=x.dtype) for a in args))
            else:
                v = getattr(lib, step.op)(*args, **dict(step.attrs))
        return v


def _operand_text(arg: Operand, chain: str, atomic: bool) -> str:
    if arg == "v":
        return chain if atomic else f"({chain})"
    if isinstance(arg, str):
        return arg
    return f"({arg!r})" if arg < 0 else repr(arg)


def _chain_ops() -> tuple[list[str], list[str]]:
    """The table's elementwise ops a scalar chain can use: unary (no attributes but clamp's
    optional bounds; ``detach`` passes no gradient) and binary."""
    unary = [op.name for op in cg.ops.OPS if op.elementwise and op.arity == 1 and op.public
             and op.vjps[0] is not None and not any(a.required for a in op.attrs.values())]
    binary = [op.name for op in cg.ops.OPS if op.elementwise and op.arity == 2
              and not op.boolean]  # a comparison's bool ends a chain's gradient
    return unary, binary


def _kinks(op: str, attrs: dict[str, float]) -> list[float]:
    # Where the op is not smooth: a float32 rounding there flips the branch taken.
    if op in ("relu", "abs"):
        return [0.0]
    return [b for b in (attrs.get("min"), attrs.get("max")) if b is not None]


def _inside(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] <= value <= bounds[1]


def _number(rng: np.random.Generator, bounds: tuple[float, float]) -> float | int:
    """A constant in ``bounds``: half the time an integer when one fits (``x ** 2``), else a
    float with three decimals, so formulas stay readable."""
    lo, hi = bounds
    if math.ceil(lo) <= hi and rng.random() < 0.5:
        return int(rng.integers(math.ceil(lo), math.floor(hi) + 1))
    return min(max(round(float(rng.uniform(lo, hi)), 3), lo), hi)


Bounds = tuple[float, float]


def _reach(bounds: Bounds, widest: Bounds, lifted: bool) -> Bounds:
    """Where an operand may lie. The domains are where the tests draw values: a bound inside the
    widest range marks a singularity or the end of smoothness (log and sqrt at 0, a divisor
    near 0, pow's base, tan's poles) and is kept; a bound at the widest range only marks where
    the tests stop drawing, and is lifted unless ``lifted`` is off."""
    lo, hi = bounds
    if lifted:
        lo = -math.inf if lo <= widest[0] else lo
        hi = math.inf if hi >= widest[1] else hi
    return lo, hi


def _try_step(rng: np.random.Generator, name: str, v: float, x: float, widest: Bounds,
              lifted: bool) -> Step | None:
    """A step of op ``name`` on the chain's value ``v`` with every operand where the op is
    defined and smooth (``_reach`` of its domain, clear of its kinks), or None when no form of
    it fits. Constants are drawn from the domain itself, as the tests draw them."""
    op = cg.ops.TABLE[name]
    reach = [_reach(bounds, widest, lifted) for bounds in op.domain]
    if op.arity == 1:
        attrs: dict[str, float] = {}
        if op.attrs:  # clamp: one or both bounds, inside its domain
            low, high = op.domain[0]
            lo, hi = sorted(round(float(b), 3) for b in rng.uniform(low, high, size=2))
            attrs = [{"min": lo, "max": hi}, {"min": lo}, {"max": hi}][int(rng.integers(3))]
        fits = _inside(v, reach[0]) and all(
            abs(v - k) >= KINK_MARGIN for k in _kinks(name, attrs))
        return Step(name, ("v",), tuple(attrs.items())) if fits else None
    for form in rng.permutation(4):
        chain_at, other = int(form % 2), ("x" if form >= 2 else None)
        if not _inside(v, reach[chain_at]):
            continue
        if other == "x" and not _inside(x, reach[1 - chain_at]):
            continue
        operand: Operand = other or _number(rng, op.domain[1 - chain_at])
        if name in TIES and abs(v - (x if operand == "x" else float(operand))) < KINK_MARGIN:
            continue
        return Step(name, ("v", operand) if chain_at == 0 else (operand, "v"))
    return None


def _apply(step: Step, v: float, x: float) -> float:
    args = [np.float64(v if a == "v" else x if a == "x" else a) for a in step.args]
    with np.errstate(all="ignore"):
        return float(cg.ops.TABLE[step.op].forward(*args, **dict(step.attrs)))


def draw_chains(count: int, seed: int, lifted: bool = True, spread: float = 3.0,
                ) -> tuple[list[Chain], int]:
    """``count`` chains of 2-8 ops and the number of draws thrown away: chains that reached a
    value no op could take, or one past ``MAGNITUDE``. The leaf is drawn from a domain, each op
    and its form at random among those whose operands fit (evaluated in float64 while
    drawing)."""
    rng = np.random.default_rng(seed)
    unary, binary = _chain_ops()
    names = unary + binary
    chains: list[Chain] = []
    discarded = 0
    widest = (min(lo for n in names for lo, _ in cg.ops.TABLE[n].domain),
              max(hi for n in names for _, hi in cg.ops.TABLE[n].domain))
    while len(chains) < count:
        length = int(rng.integers(2, 9))
        first = cg.ops.TABLE[names[int(rng.integers(len(names)))]]
        lo, hi = first.domain[int(rng.integers(first.arity))]
        # A lifted bound lets the leaf range ``spread`` times as far.
        lo = lo * spread if lifted and lo <= widest[0] else lo
        hi = hi * spread if lifted and hi >= widest[1] else hi
        x = float(np.float32(rng.uniform(lo, hi)))
        v, steps = x, []
        for _ in range(length):
            step = next((s for n in rng.permutation(names)
                         if (s := _try_step(rng, str(n), v, x, widest, lifted)) is not None),
                        None)
            if step is None:
                break
            v = _apply(step, v, x)
            if not abs(v) <= MAGNITUDE:
                break
            steps.append(step)
        if len(steps) == length:
            chains.append(Chain(tuple(steps), x))
        else:
            discarded += 1
    return chains, discarded


@dataclasses.dataclass
class Outcome:
    """One chain at its point: the check's verdict, the numeric gradient, PyTorch's."""

    chain: Chain
    status: str
    method: str
    reason: str
    finite: bool
    numeric: float
    torch32: float
    torch64: float
    ulps: int
    closed: float = math.nan

    def of_tolerance(self, value: float) -> float:
        """``value``'s error against the closed form (PyTorch's float64 gradient stands in for
        it: they agree to ~1e-12) as a multiple of the check's float32 allowance."""
        atol, rtol = 1e-5, 1e-4  # check.tolerance(float32)
        truth = self.torch64
        return abs(value - truth) / (atol * max(1.0, abs(truth)) + rtol * abs(truth))


# Out of the tolerance today although PyTorch gives the same float32 gradient: sin amplifies
# the rounding of exp(5) * 2 = 297.
KNOWN = Chain((Step("exp", ("v",)), Step("mul", ("v", 2)), Step("sin", ("v",)),
               Step("add", ("v", 2))), 5.0)


def _ulps(a: float, b: float) -> int:
    """Distance between two float32 values in units in the last place."""
    def key(value: float) -> int:
        bits = int(np.array(value, np.float32).view(np.int32))
        return bits if bits >= 0 else -(bits & 0x7FFFFFFF)
    if math.isnan(a) or math.isnan(b):
        return 0 if math.isnan(a) and math.isnan(b) else 1 << 31
    return abs(key(a) - key(b))


def _torch_gradient(torch: Any, chain: Chain, dtype: Any) -> tuple[float, float]:
    x = torch.tensor(chain.x, dtype=dtype, requires_grad=True)
    out = chain.torch(torch, x)
    out.backward()
    return float(out.detach()), float(x.grad)


def judge(chain: Chain, side: Symbolic, torch: Any) -> Outcome:
    values = {"x": np.float32(chain.x)}
    with np.errstate(all="ignore"):  # out-of-range points are counted, not warned about
        result = differentiate(chain.text, values, check="report", symbolic=side)
    numeric = float(result.gradients["x"])
    value32, torch32 = _torch_gradient(torch, chain, torch.float32)
    _, torch64 = _torch_gradient(torch, chain, torch.float64)
    report = result.check
    finite = all(math.isfinite(v) for v in (float(result.value), numeric, value32, torch32))
    outcome = Outcome(chain, report.status.value, report.method.value, report.reason, finite,
                      numeric, torch32, torch64, _ulps(numeric, torch32))
    if report.method.value == "SYMBOLIC" and (report.status.value == "DISAGREE"
                                              or _ROUNDING in report.reason):
        # The closed form the check compared with: cached by structure now, so cheap.
        valid = graph.validate(formula.parse(chain.text), {"x": ((), F32)})
        plan = Plan.of(valid, ["x"])
        evaluator = side.evaluator(plan, side.caps.deadline)
        evaluation = evaluator([np.asarray(values["x"])], constants_of(valid))
        outcome.closed = float(evaluation.gradients["x"])
    return outcome


def _fallback_reason(reason: str) -> str:
    # The cause, without the point-specific numbers that follow it.
    return reason.split(";")[0].removeprefix("no closed form: ")


_ROUNDING = "within float32's rounding"  # the check's word for an error float32 explains


def verdict_table(outcomes: list[Outcome], discarded: int) -> tuple[list[list[str]], int]:
    total = len(outcomes)
    finite = [o for o in outcomes if o.finite]
    exact = sum(o.ulps == 0 for o in finite)
    near = sum(o.ulps <= 1 for o in finite)
    symbolic_disagree = [o for o in finite if o.status == "DISAGREE" and o.method == "SYMBOLIC"]
    false = [o for o in symbolic_disagree if o.ulps <= 1]
    # Further from PyTorch than 1 ulp, but PyTorch's own float32 gradient is out of tolerance
    # too: as false, for a float32 engine.
    as_false = [o for o in symbolic_disagree if o.ulps > 1 and o.of_tolerance(o.torch32) > 1]
    closest = max((o.of_tolerance(o.numeric) for o in finite if o.status == "AGREE"),
                  default=0.0)
    fd = [o for o in finite if o.method == "FINITE_DIFFERENCE"]
    singular = [o for o in finite if o.status == "SINGULAR"]
    agree = sum(o.status == "AGREE" and o.method == "SYMBOLIC" for o in finite)
    rounding = sum(o.status == "AGREE" and _ROUNDING in o.reason for o in finite)
    # Ulps mean little where a gradient cancels to ~0: the gap is shown against its scale.
    widest_gap = max((abs(o.numeric - o.torch32) / max(1.0, abs(o.torch64)) for o in finite),
                     default=0.0)

    def share(n: int) -> str:
        return f"{n / max(len(finite), 1):.1%}"

    rows = [["chains (2-8 ops, operands where each op is defined and smooth)", f"{total:,}",
             ""],
            [f"  drawn and thrown away (no op could follow, or past {MAGNITUDE:g})",
             f"{discarded:,}", ""],
            ["  function or gradient not finite (kept out below)", f"{total - len(finite)}", ""],
            ["points judged", f"{len(finite):,}", "100%"],
            ["numeric = PyTorch float32, bit for bit", f"{exact:,}", share(exact)],
            ["numeric within 1 ulp of PyTorch", f"{near:,}", share(near)],
            [f"  further apart (gap at most {widest_gap:.1e} x max(1, |gradient|))",
             f"{len(finite) - near}",
             share(len(finite) - near)],
            ["check SYMBOLIC AGREE", f"{agree:,}", share(agree)],
            ["  of them within float32's rounding (the float64 gradient agrees)",
             f"{rounding:,}", share(rounding)],
            ["check SYMBOLIC DISAGREE", f"{len(symbolic_disagree)}",
             share(len(symbolic_disagree))],
            ["  false DISAGREE: numeric within 1 ulp of PyTorch (target 0)", f"{len(false)}",
             share(len(false))],
            ["  of which bit for bit", f"{sum(o.ulps == 0 for o in false)}", ""],
            ["  DISAGREE where PyTorch float32 fails the tolerance too", f"{len(as_false)}",
             share(len(as_false))],
            ["closest AGREE, error / allowance", f"{closest:.2f}", ""],
            ["SINGULAR", f"{len(singular)}", share(len(singular))],
            ["FINITE_DIFFERENCE fallbacks", f"{len(fd)}", share(len(fd))]]
    for status in ("AGREE", "DISAGREE", "SINGULAR"):
        n = sum(o.status == status for o in fd)
        if n:
            rows.append([f"  {status}", f"{n}", ""])
    reasons = collections.Counter(_fallback_reason(o.reason) for o in fd + singular)
    rows += [[f"  why: {why}", f"{n}", ""] for why, n in reasons.most_common(5)]
    return rows, len(false)


def examples_table(outcomes: list[Outcome], count: int = 10) -> list[list[str]]:
    false = [o for o in outcomes if o.finite and o.status == "DISAGREE"
             and o.method == "SYMBOLIC" and (o.ulps <= 1 or o.of_tolerance(o.torch32) > 1)]
    false.sort(key=lambda o: abs(o.numeric - o.closed) / abs(o.closed), reverse=True)
    return [[f"`{o.chain.text}`", repr(o.chain.x), repr(o.numeric), repr(o.closed),
             f"{abs(o.numeric - o.closed) / abs(o.closed):.2e}", f"{o.ulps}",
             f"{abs(o.closed - o.torch64) / abs(o.torch64):.0e}"] for o in false[:count]]


def _anchor_compile(plan: Plan, library: Any) -> Callable[[], object]:
    """SymPy or SymEngine alone: the whole expression's derivative (``whole_expression``), then
    compiled to a function of the leaf and the constants."""
    derivatives = whole_expression(plan, library)
    names = [name for name, _ in plan.leaves] + [
        f"c{k}_" for k, node in enumerate(plan.nodes) if node.kind == "const"]

    def run() -> object:
        forms = derivatives()
        symbols = [library.Symbol(n) for n in names]
        if library is sympy:
            return sympy.lambdify(symbols, forms)
        return se.Lambdify(symbols, forms)

    return run


def _cold_compile(plan: Plan) -> Callable[[], object]:
    """What a worker does for a new small structure (``_compile``'s fused route) without the
    worker's cache of whole derivations, so that a repeated structure is derived again."""
    def run() -> object:
        return Fused(plan, derive(plan))
    return run


def _quantiles(samples: list[float]) -> tuple[str, str]:
    if not samples:
        return "", ""
    ordered = sorted(samples)
    return (fmt_time(float(np.quantile(ordered, 0.5))),
            fmt_time(float(np.quantile(ordered, 0.99))))


def compile_table(chains: list[Chain], sympy_every: int, side: Symbolic,
                  ) -> tuple[list[list[str]], int, float]:
    """Cold derivation + compile per chain: crossgrad, SymEngine alone, SymPy alone (every
    ``sympy_every``-th chain), interleaved chain by chain so noise hits all three alike. Also
    returns crossgrad's p99 on the 7-op chains (seconds)."""
    times: dict[str, dict[int, list[float]]] = {k: collections.defaultdict(list)
                                                for k in ("crossgrad", "symengine", "sympy")}
    failed: collections.Counter[str] = collections.Counter()
    for k, chain in enumerate(chains):
        _, plan = _plan(chain.text, {"x": ()})
        if not side.fused(plan):
            raise SystemExit(f"(d) {chain.text} is not compiled fused")
        cases = {"crossgrad": _cold_compile(plan), "symengine": _anchor_compile(plan, se)}
        if k % sympy_every == 0:
            cases["sympy"] = _anchor_compile(plan, sympy)
        for name, case in cases.items():
            _cold()
            begin = time.perf_counter()
            try:
                case()
            except Exception:  # an anchor that cannot compile a chain (SymPy: zoo) is counted
                failed[name] += 1
                continue
            times[name][len(chain.steps)].append(time.perf_counter() - begin)
    rows = []
    for length in [None, *sorted(times["crossgrad"])]:
        pick = {name: [t for n, ts in by.items() if length in (None, n) for t in ts]
                for name, by in times.items()}
        ours, engine, alone = (_quantiles(pick[n]) for n in ("crossgrad", "symengine", "sympy"))
        ratio = statistics.median(pick["crossgrad"]) / statistics.median(pick["symengine"])
        rows.append(["all" if length is None else f"{length} ops",
                     f"{len(pick['crossgrad']):,}", *ours, *engine, fmt_ratio(ratio),
                     f"{len(pick['sympy'])}", *alone])
    for name, n in failed.items():
        rows.append([f"{name} failed", f"{n}", *[""] * 8])
    seven = sorted(times["crossgrad"].get(7, [math.inf]))
    return (rows, sum(len(ts) for ts in times["sympy"].values()) + failed["sympy"],
            float(np.quantile(seven, 0.99)))


def overhead_table(chains: list[Chain], side: Symbolic, budget: float) -> list[list[str]]:
    """``differentiate`` with the check off and STRICT on cached structures, median per call."""
    per_chain: list[tuple[float, float]] = []
    for chain in chains:
        values = {"x": np.float32(chain.x)}
        differentiate(chain.text, values, symbolic=side)  # cached already; made sure of here
        stats = measure({mode: functools.partial(differentiate, chain.text, values, check=mode,
                                                 symbolic=side)
                         for mode in ("off", "strict")}, budget=budget)
        per_chain.append((stats["off"].median, stats["strict"].median))
    off = statistics.median(o for o, _ in per_chain)
    strict = statistics.median(s for _, s in per_chain)
    added = sorted(s - o for o, s in per_chain)
    ratios = sorted(s / o for o, s in per_chain)
    return [[f"median of {len(per_chain)} cached chains", fmt_time(off), fmt_time(strict),
             fmt_time(statistics.median(added)), fmt_ratio(statistics.median(ratios)),
             f"{fmt_time(added[0])} – {fmt_time(added[-1])}"]]


def first_calls(chains: list[Chain], outcomes: list[Outcome], side: Symbolic, torch: Any,
                ) -> tuple[list[list[str]], list[Chain], list[str]]:
    """The default route on the first chains: each a new structure whose first call derives,
    compiles and renders its closed form in a worker (deadline included). Its verdicts are set
    beside the op-by-op route's; the chains it agrees on serve the overhead measurement."""
    took: list[float] = []
    seven: list[float] = []  # the case: a new 7-op structure
    same = 0
    changed: list[str] = []
    agreeing: list[Chain] = []
    fallbacks: collections.Counter[str] = collections.Counter()
    # A server starts its workers with itself: their start-up is no first call's cost.
    differentiate("x * 2", {"x": 1.0}, symbolic=side)
    for chain, fast in zip(chains, outcomes, strict=False):
        begin = time.perf_counter()
        outcome = judge(chain, side, torch)
        took.append(time.perf_counter() - begin)
        if len(chain.steps) == 7:
            seven.append(took[-1])
        if (outcome.status, outcome.method) == (fast.status, fast.method):
            same += 1
        else:
            changed.append(f"`{chain.text}` at {chain.x!r}: {fast.method} {fast.status} -> "
                           f"{outcome.method} {outcome.status}")
        if outcome.method == "FINITE_DIFFERENCE":
            fallbacks[_fallback_reason(outcome.reason)] += 1
        if outcome.finite and (outcome.status, outcome.method) == ("AGREE", "SYMBOLIC"):
            agreeing.append(chain)
    p50, p99 = _quantiles(took)
    p50_seven, p99_seven = _quantiles(seven)
    rows = [["chains, each a new structure", f"{len(took)}"],
            ["first differentiate() call, p50", p50], ["p99", p99],
            ["max", fmt_time(max(took))],
            [f"7-op chains ({len(seven)}): p50", p50_seven], ["7-op chains: p99", p99_seven],
            ["same verdict as the op-by-op route", f"{same}"],
            ["FINITE_DIFFERENCE fallbacks", f"{sum(fallbacks.values())}"]]
    rows += [[f"  why: {why}", f"{n}"] for why, n in fallbacks.most_common(3)]
    return rows, agreeing, changed


def chains_section(count: int, seed: int, spread: float, sympy_count: int,
                   default_count: int | None) -> list[tuple[str, bool]]:
    import torch  # only this section needs PyTorch

    torch.set_num_threads(1)
    begin = time.perf_counter()
    chains, discarded = draw_chains(count, seed, spread > 0, spread)
    # Verdicts on every chain through the op-by-op route: the same closed forms (each op's
    # sympy.diff, composed by the chain rule), evaluated in float64, nothing rendered, two
    # chains at a time. The default route (fused, then rendered) is run on them below, one
    # chain at a time, as a user's first call on a new structure meets it.
    op_by_op = Symbolic(dataclasses.replace(DEFAULT_CAPS, fused_max_outputs=0))
    # Every chain is a new structure derived in the engine's worker pool: one caller per worker.
    with concurrent.futures.ThreadPoolExecutor(op_by_op.caps.workers) as pool:
        outcomes = list(pool.map(lambda c: judge(c, op_by_op, torch), chains))
    print(f"\n### (d) {count:,} random scalar chains (seed {seed}, spread {spread:g}), float32, "
          f"the STRICT check's verdict (mode REPORT) against PyTorch {torch.__version__}\n")
    rows, false = verdict_table(outcomes, discarded)
    print(markdown_table(["", "count", "share"], rows))
    examples = examples_table(outcomes)
    if examples:
        print("\nWorst DISAGREEs where PyTorch float32 is as wrong (within 1 ulp of the numeric "
              "gradient, or out of tolerance itself); the last column: closed form vs PyTorch "
              "float64, which side is right:\n")
        print(markdown_table(["formula", "x (float32)", "numeric", "closed form",
                              "rel. error", "ulps to PyTorch", "closed vs float64"], examples))
    known = judge(KNOWN, op_by_op, torch)
    print(f"\nA known case, `{KNOWN.text}` at x = {KNOWN.x}: {known.method} {known.status}, "
          f"numeric {known.numeric!r}, PyTorch {known.torch32!r}, closed form "
          f"{known.closed!r}")
    op_by_op.close()
    print(f"\n(verdicts through the op-by-op route, {time.perf_counter() - begin:.0f} s)")

    default = Symbolic()
    firsts = chains[:default_count]  # all of them by default
    rows, agreeing, changed = first_calls(firsts, outcomes, default, torch)
    print(f"\n### (d) the default route (fused, rendered) on the first {len(firsts)} chains\n")
    print(markdown_table(["", ""], rows, right=[False, True]))
    for line in changed:
        print(f"- {line}")

    sympy_every = max(1, math.ceil(len(chains) / max(sympy_count, 1)))
    rows, sympy_done, p99_seven = compile_table(chains, sympy_every, default)
    print(f"\n### (d) derivation + compile of each chain as a new structure, cold; SymPy "
          f"alone on every {sympy_every}th chain ({sympy_done})\n")
    print(markdown_table(["chain", "chains", "crossgrad p50", "p99", "SymEngine alone p50",
                          "p99", "crossgrad / SymEngine (p50)", "SymPy chains",
                          "SymPy alone p50", "p99"], rows))

    rows = overhead_table(agreeing[:20], default, 0.3)
    default.close()
    print("\n### (d) the check's cost per call on a cached structure: differentiate()\n")
    print(markdown_table(["", "check off", "check strict", "added", "strict / off",
                          "added, range"], rows))
    return [(f"(d) false DISAGREE: {false} of {len(outcomes):,} chains (target 0)", false == 0),
            (f"(d) derivation + compile of a new 7-op structure, p99: {fmt_time(p99_seven)} "
             f"(target < 1 s)", p99_seven < 1.0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="skip the minute-long SymPy "
                        "anchor of (b) and time (c) briefly")
    parser.add_argument("--sections", default="abcdef", help="which sections to run (abcdef)")
    parser.add_argument("--chains", type=int, default=2000, help="random chains in (d)")
    parser.add_argument("--seed", type=int, default=0, help="seed of (d)'s chains")
    parser.add_argument("--spread", type=float, default=3.0,
                        help="how many times the tests' range (-3, 3) the leaf of (d) may "
                        "take where an op is defined on the whole line; 0: only the ops' "
                        "domains, as the tests draw")
    parser.add_argument("--sympy-chains", type=int, default=100,
                        help="chains of (d) that SymPy alone derives (the slow anchor)")
    parser.add_argument("--default-chains", type=int, default=None,
                        help="chains of (d) also run through the default, rendering route "
                        "(default: all)")
    args = parser.parse_args()
    results = []
    if "a" in args.sections:
        valid, plan = _plan(chain_graph(200), {"x": ()})
        results.append(derivation_section("(a) 200-op scalar chain", valid, plan, 0.050, True))
    if "b" in args.sections:
        valid, plan = _plan("mean(sigmoid(w * x + b))", {"w": (1000,), "x": (1000,), "b": ()})
        results.append(derivation_section("(b) mean(sigmoid(w*x + b)), 1000 elements", valid,
                                          plan, 2.0, not args.quick))
    summary: list[str] = []
    ok = True
    if "c" in args.sections:
        summary, ok = evaluation_section(0.5 if args.quick else 3.0)
    if "e" in args.sections:
        results += softmax_section(0.5 if args.quick else 3.0)
    if "f" in args.sections:
        results += dense_section()
    if "d" in args.sections:
        results += chains_section(args.chains, args.seed, args.spread, args.sympy_chains,
                                  args.default_chains)
    print("\n### Targets\n")
    for line, passed in results:
        print(f"- {line}: {'PASS' if passed else 'MISS'}")
    if "c" in args.sections:
        print(f"- (c) cached closed form / engine: {', '.join(summary)}: "
              f"{'PASS' if ok else 'MISS'}")

if __name__ == "__main__":
    main()
