"""Benchmark of the symbolic side: deriving and compiling closed forms, and evaluating them.

Run: ``python bench/bench_symbolic.py [--quick]``. Sections, each measured against its anchors
in the same run and printed as ratios:

(a) derivation + compile of a 200-op scalar chain (sin, *1.01, +0.1, tanh, -0.1 repeated), cold
    (every cache of derived rules emptied first); anchors: SymPy alone (the whole expression's
    ``diff``) and SymEngine alone (the same). Target: crossgrad <= 50 ms.
(b) the same for ``mean(sigmoid(w*x + b))`` with 1000-element ``w`` and ``x``. Target: <= 2 s.
    SymPy alone takes over a minute here; ``--quick`` skips that anchor.
(c) a cached closed form evaluated at new values, per seed-notebook example, against the numeric
    engine's forward + backward of the same computation. Target: <= 0.5x the engine.
    The whole ``differentiate`` call (validation, numeric engine, closed form, check) is shown
    beside it.
"""

from __future__ import annotations

import argparse
import functools
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
from crossgrad.engine import closed_form, dtypes, formula, graph, symbolic
from crossgrad.engine.closed_form import Fused
from crossgrad.engine.differentiation import Symbolic, _solve, differentiate
from crossgrad.engine.graph import Constant, Graph, Leaf, Operation
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
    symbolic.elementwise_rule.cache_clear()
    symbolic.structural_rule.cache_clear()
    closed_form._compiled_rule.cache_clear()
    closed_form._gathers.cache_clear()


def crossgrad_compile(valid: Any, plan: Plan) -> Callable[[], object]:
    fused = Symbolic().fused(plan)  # the route differentiate takes for this plan
    constants = constants_of(valid)

    def run() -> object:
        _cold()
        return _solve(plan, constants, fused, False)

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
    function = {"sin": se.sin, "tanh": se.tanh,
                "sigmoid": lambda v: 1 / (1 + se.exp(-v))}[node.op]
    return np.frompyfunc(function, 1, 1)(*inputs)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="skip the minute-long SymPy "
                        "anchor of (b) and time (c) briefly")
    args = parser.parse_args()
    results = []
    valid, plan = _plan(chain_graph(200), {"x": ()})
    results.append(derivation_section("(a) 200-op scalar chain", valid, plan, 0.050, True))
    valid, plan = _plan("mean(sigmoid(w * x + b))", {"w": (1000,), "x": (1000,), "b": ()})
    results.append(derivation_section("(b) mean(sigmoid(w*x + b)), 1000 elements", valid, plan,
                                      2.0, not args.quick))
    summary, ok = evaluation_section(0.5 if args.quick else 3.0)
    print("\n### Targets\n")
    for line, passed in results:
        print(f"- {line}: {'PASS' if passed else 'MISS'}")
    print(f"- (c) cached closed form / engine: {', '.join(summary)}: "
          f"{'PASS' if ok else 'MISS'}")


if __name__ == "__main__":
    main()
