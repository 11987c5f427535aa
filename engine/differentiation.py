"""``differentiate``: a gradient derived twice and checked — the one entry point the server and
the CLI call.

1. The graph (or the formula, parsed by the safe parser) is validated against the values.
2. The numeric engine computes the value and the gradient: that is what is returned, as PyTorch
   would compute it.
3. The closed form is derived in a worker under a deadline (or taken from the cache: derivations
   are keyed by structure, never by values), compiled, and evaluated at the same values in
   float64; past a cap or the deadline, central finite differences check instead. A derivation
   the caller stopped waiting for runs on in its worker (up to ``Caps.deadline``) and fills the
   cache for the next call. What a structure's derivation did is remembered (``Symbolic``): one
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

import concurrent.futures
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from . import dtypes, formula
from .budget import DEFAULT_CAPS, Budget, Caps, DeadlineExceeded, TaskFailed, WorkerFailed
from .check import (
    CheckFailed,
    CheckMode,
    CheckReport,
    Method,
    Status,
    compare,
    finite_difference,
    skipped,
    within_rounding,
)
from .closed_form import Evaluation, Fused, Program
from .display import ClosedForms, render
from .errors import InvalidArgument
from .graph import DEFAULT_LIMITS, Graph, LimitExceeded, Limits, ValidGraph, evaluate
from .graph import validate as validate_graph
from .symbolic import Derivation, Plan, constants_of, derive

Evaluator = Fused | Program
T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hessian:
    """Second derivatives from the closed form: per (row leaf, column leaf) a block of shape
    row.shape + column.shape, its closed form, and a check against finite differences of the
    numeric gradient."""

    values: dict[tuple[str, str], np.ndarray]
    closed_forms: dict[tuple[str, str], str]
    latex: dict[tuple[str, str], str]
    check: CheckReport


@dataclass(frozen=True)
class Result:
    value: np.ndarray
    gradients: dict[str, np.ndarray]
    closed_forms: dict[str, str]
    latex: dict[str, str]
    check: CheckReport
    hessian: Hessian | None = None
    notes: tuple[str, ...] = field(default=())  # why a closed form is not shown, ...
    wrt: tuple[str, ...] = ()  # the leaves differentiated, in order (some may get no gradient)


class Cache:
    """A thread-safe LRU map."""

    def __init__(self, size: int) -> None:
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def pop(self, key: Any) -> None:
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def get_or_put(self, key: Any, make: Callable[[], T]) -> T:
        """The item for ``key``, made and kept first if there is none (two threads may both
        make it: the last one kept wins)."""
        item: T | None = self.get(key)
        if item is None:
            item = make()
            self.put(key, item)
        return item


# --- the worker's side ---------------------------------------------------------------------------

_derivations = Cache(32)  # per worker process


def _compile(plan: Plan, fused: bool) -> Evaluator:
    """Runs in a worker: derive and compile the closed form the check evaluates."""
    return Fused(plan, _derivation(plan)) if fused else Program(plan)


def _render(plan: Plan, constants: list[np.ndarray], seconds: float | None) -> ClosedForms:
    """Runs in a worker, after ``_compile``: the closed forms as text, with these constants."""
    return render(plan, _derivation(plan), constants, seconds)


def warm_up() -> None:
    """Runs in a new worker before it takes tasks: a tiny derivation, fused and op by op, so that
    SymPy's lazy imports and SymEngine's first allocations happen at start-up (off any call's
    path), not in a first task, and not at the edge of the worker's memory limit."""
    valid = validate_graph(formula.parse("sum(a @ b)"), {
        "a": ((1, 1), dtypes.float64), "b": ((1, 1), dtypes.float64)})
    plan = Plan.of(valid, ["a", "b"])
    for fused in (False, True):
        _compile(plan, fused)
    _render(plan, constants_of(valid), None)


def _derivation(plan: Plan) -> Derivation:
    """The plan's derivation, kept for its rendering (with these constants or others)."""
    return _derivations.get_or_put(plan, lambda: derive(plan))


# --- the caller's side ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Verdict:
    """Why a structure's derivation is not asked for again: for good (``deadline`` None), or by
    a call that allows it no more than ``deadline`` seconds (the longest it was given and
    passed)."""

    reason: str
    deadline: float | None = None

    def refuse(self, deadline: float) -> None:
        if self.deadline is None:
            raise TaskFailed(self.reason)
        if deadline <= self.deadline:
            raise DeadlineExceeded(self.reason)


class Symbolic:
    """The symbolic side: caps, the worker pool, and caches of compiled closed forms (by
    structure) and rendered ones (by structure and constant values).

    A derivation in flight is shared: callers of the same structure wait on the one task, each
    for its own deadline, and whichever way it ends the task's result lands in the caches.

    What a task's end says about its structure (the plan; for a rendering, the plan and the
    constants) is remembered, in LRU maps as bounded as the caches, so that a formula sent again
    and again does not take a worker each time: a derivation that raised in its worker, or
    killed its worker twice in a row (a crash in native code that it causes), is not asked for
    again; one that passed the pool's deadline is not asked for again by a call that allows it
    no longer. A single death says nothing about the graph (the system may kill any worker),
    nor does a caller that stopped waiting (the task runs on and its result is cached).
    """

    def __init__(self, caps: Caps = DEFAULT_CAPS, cache_size: int = 256) -> None:
        self.caps = caps
        self.budget = Budget(caps)
        self._evaluators = Cache(cache_size)
        self._forms = Cache(cache_size)
        self._verdicts = Cache(cache_size)  # structure -> _Verdict
        self._deaths = Cache(cache_size)  # structure -> its worker's deaths in a row
        self._in_flight: dict[Any, concurrent.futures.Future[Any]] = {}
        self._in_flight_lock = threading.Lock()

    def fused(self, plan: Plan) -> bool:
        outputs = sum(math.prod(s) for n, s in plan.leaves if n in plan.wrt)
        outputs += math.prod(plan.nodes[plan.output].shape)
        return outputs <= self.caps.fused_max_outputs and plan.depth <= self.caps.fused_max_depth

    def over_cap(self, plan: Plan) -> str:
        """Why the plan is past a cap, or ""."""
        if plan.symbol_count > self.caps.max_symbols:
            return (f"{plan.symbol_count} scalar symbols is over the symbolic cap of "
                    f"{self.caps.max_symbols}")
        if plan.element_count > self.caps.max_elements:
            return (f"{plan.element_count} scalar expressions is over the symbolic cap of "
                    f"{self.caps.max_elements}")
        return ""

    def evaluator(self, plan: Plan, deadline: float) -> Evaluator:
        """The plan's compiled closed form, waiting at most ``deadline`` seconds for a worker to
        derive and compile it."""
        found: Evaluator | None = self._evaluators.get(plan)
        if found is None:
            found = self._ask(("compile", plan), "the symbolic derivation",
                              lambda compiled: self._evaluators.put(plan, compiled), deadline,
                              _compile, plan, self.fused(plan))
        return found

    def forms(self, plan: Plan, constants: list[np.ndarray], deadline: float) -> ClosedForms:
        """A fused plan's closed forms with these constants, for reading, waiting at most
        ``deadline`` seconds; making them readable is bounded apart (``Caps.render_seconds``).
        Asked for after ``evaluator``, so that the check never waits on text."""
        key = (plan, _fingerprint(constants))
        found: ClosedForms | None = self._forms.get(key)
        if found is None:
            found = self._ask(("render", key), "the rendering of its closed form",
                              lambda rendered: self._forms.put(key, rendered), deadline,
                              _render, plan, constants, self.caps.render_seconds)
        return found

    def _ask(self, key: Any, what: str, keep: Callable[[Any], None], deadline: float,
             function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)``'s result (``what`` it is, for errors), from the task in flight
        for ``key`` or a new one, unless what is remembered of ``key`` refuses it at once;
        ``keep`` gets the result whether anyone still waits for it or not."""
        verdict: _Verdict | None = self._verdicts.get(key)
        if verdict is not None:
            verdict.refuse(deadline)
        with self._in_flight_lock:
            future = self._in_flight.get(key)
            # Joined under the lock, so that its last waiter cannot drop it in between.
            if future is None or not self.budget.join(future):
                future = self._in_flight[key] = self.budget.submit(
                    function, *args, deadline=deadline, what=what)
                fresh = True
            else:
                fresh = False
        if fresh:
            def finished(done: concurrent.futures.Future[Any]) -> None:
                # Kept before the task leaves the in-flight map: a caller finds one or the other.
                if not done.cancelled() and done.exception() is None:
                    keep(done.result())
                self._judge(key, what, done)
                with self._in_flight_lock:
                    if self._in_flight.get(key) is done:
                        del self._in_flight[key]

            future.add_done_callback(finished)
        return self.budget.wait(future, deadline)

    def _judge(self, structure: Any, what: str, done: concurrent.futures.Future[Any]) -> None:
        """Remember what the end of a task for ``structure`` says about it (see the class)."""
        error = None if done.cancelled() else done.exception()
        if isinstance(error, WorkerFailed) and error.died:
            with self._in_flight_lock:
                deaths = (self._deaths.get(structure) or 0) + 1
                self._deaths.put(structure, deaths)
            if deaths >= 2:
                self._verdicts.put(structure, _Verdict(
                    f"{what} of this graph killed its worker twice in a row "
                    f"(the last time: {error.died}); not tried again"))
            return
        if done.cancelled() or isinstance(error, WorkerFailed):
            return  # dropped, stopped, or the pool's fault: nothing about the graph
        if isinstance(error, DeadlineExceeded) and error.limit is None:
            return  # expired in the queue
        self._deaths.pop(structure)  # it ran to an end without killing its worker
        if isinstance(error, TaskFailed):
            self._verdicts.put(structure, _Verdict(error.message))
        elif isinstance(error, DeadlineExceeded) and error.limit is not None:
            self._verdicts.put(structure, _Verdict(
                f"{what} of this graph passed the deadline of "
                f"{error.limit:g} s before; not tried again within that deadline", error.limit))
        else:
            self._verdicts.pop(structure)

    def close(self) -> None:
        self.budget.close()


def _fingerprint(constants: Sequence[np.ndarray]) -> tuple[Any, ...]:
    return tuple((c.dtype.str, c.shape, c.tobytes()) for c in constants)


_default: Symbolic | None = None
_default_lock = threading.Lock()


def default_symbolic() -> Symbolic:
    """The process-wide symbolic side, created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Symbolic()
        return _default


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
    value, gradients = evaluate(valid, arrays, wrt, seed)  # also checks wrt and the values
    names = list(wrt) if wrt is not None else [
        n for n, (_, d) in valid.leaves.items() if d.is_floating_point]
    return check_gradients(valid, arrays, value, gradients, names, mode=mode, seed=seed,
                           hessian=hessian, symbolic=symbolic, deadline=deadline)


def check_gradients(valid: ValidGraph, arrays: Mapping[str, np.ndarray], value: np.ndarray,
                    gradients: Mapping[str, np.ndarray], wrt: Sequence[str], *,
                    mode: CheckMode = CheckMode.STRICT, seed: npt.ArrayLike | None = None,
                    hessian: bool = False, symbolic: Symbolic | None = None,
                    deadline: float | None = None) -> Result:
    """The closed form and the check of ``gradients``, which the numeric engine computed for the
    leaves ``wrt`` of ``valid`` at ``arrays`` (with ``seed`` for a non-scalar output).

    Raises ``CheckFailed`` for a disagreement in STRICT mode.
    """
    check = GradientCheck(valid, wrt, symbolic or default_symbolic(), hessian)
    return check(arrays, value, gradients, mode=mode, seed=seed, deadline=deadline)


class GradientCheck:
    """``check_gradients`` for one validated graph and set of leaves, keeping what depends on
    them alone (the plan, the constants, the compiled and rendered closed forms) for the next
    call: the server checks the same graph call after call."""

    def __init__(self, valid: ValidGraph, wrt: Sequence[str], symbolic: Symbolic,
                 hessian: bool = False) -> None:
        self.valid = valid
        self.wrt = tuple(wrt)
        self.symbolic = symbolic
        self.hessian = hessian
        self.plan = Plan.of(valid, list(wrt), hessian)
        if hessian:
            _check_hessian_size(self.plan, symbolic.caps)
        self.constants = constants_of(valid)
        self.over_cap = symbolic.over_cap(self.plan)
        self.shown = symbolic.fused(self.plan)  # small enough for its closed form to be shown
        self._evaluator: Evaluator | None = None
        self._forms: ClosedForms | None = None

    def __call__(self, arrays: Mapping[str, np.ndarray], value: np.ndarray,
                 gradients: Mapping[str, np.ndarray], *, mode: CheckMode = CheckMode.STRICT,
                 seed: npt.ArrayLike | None = None, deadline: float | None = None) -> Result:
        gradients = dict(gradients)
        wrt = self.wrt
        if mode is CheckMode.OFF or not wrt:
            report = skipped("check mode OFF: no closed form was derived" if wrt else
                             "no leaf is differentiated: there is no gradient to check")
            return Result(value, gradients, {}, {}, report,
                          _no_hessian(report) if self.hessian else None, wrt=wrt)
        deadline = deadline or self.symbolic.caps.deadline
        ends = time.monotonic() + deadline
        seed_array = None if seed is None else np.asarray(seed, dtype=np.float64)
        dtype = _precision(gradients)
        why = self.over_cap
        if not why and self._evaluator is None:
            try:
                self._evaluator = self.symbolic.evaluator(self.plan, deadline)
            except (TaskFailed, DeadlineExceeded, WorkerFailed) as error:
                why = error.message
            except Exception:  # a fault of this process, not of the graph: not kept either
                log.exception("the symbolic derivation could not be run")
                why = "the symbolic derivation could not be run (the error is logged)"
        notes: list[str] = []
        hessian_result = None
        forms = None
        evaluation = None
        if self._evaluator is None:
            report = finite_difference(_scalar_forward(self.valid, arrays, seed_array), arrays,
                                       gradients, dtype, f"no closed form: {why}")
            if self.hessian:
                hessian_result = _no_hessian(skipped(f"no closed form: {why}"))
        else:
            leaves = [arrays[name] for name, _ in self.plan.leaves]
            if self.plan.seeded:
                evaluation = self._evaluator(leaves, self.constants, seed_array)
                reference = evaluation.gradients
            else:
                # A one-element output's closed form is d(out)/d(leaf) itself; backward's
                # explicit gradient, if any, scales it.
                evaluation = self._evaluator(leaves, self.constants)
                scale = 1.0 if seed_array is None else float(seed_array.reshape(()))
                reference = (evaluation.gradients if scale == 1.0 else
                             {n: g * scale for n, g in evaluation.gradients.items()})
            report = compare(gradients, reference, dtype)
            if report.status is Status.DISAGREE and dtype == dtypes.float32:
                # Rounding or a wrong derivation? The engine in float64 tells them apart.
                _, wide = evaluate(_in_float64(self.valid), _widened(arrays), list(wrt),
                                   seed_array)
                report = within_rounding(report, gradients, wide, reference)
        if mode is CheckMode.STRICT and report.status is Status.DISAGREE:
            raise CheckFailed(report)
        if evaluation is not None:
            # The text comes last: the check above never waits on it.
            forms, note = self._rendered(ends - time.monotonic())
            if note:
                notes.append(note)
            if self.hessian:
                hessian_result = _hessian(self.valid, arrays, list(wrt), evaluation, forms)
        text = dict(forms.text) if forms else {}
        latex = dict(forms.latex) if forms else {}
        return Result(value, gradients, text, latex, report, hessian_result, tuple(notes), wrt)

    def _rendered(self, deadline: float) -> tuple[ClosedForms | None, str]:
        """The closed forms to show, if any, and a note on how (or why not) they are shown."""
        if not self.shown:
            caps = self.symbolic.caps
            return None, (f"closed forms are shown for graphs of up to {caps.fused_max_outputs} "
                          f"gradient elements and depth {caps.fused_max_depth}; this one is "
                          f"evaluated op by op")
        if self._forms is None:
            try:
                self._forms = self.symbolic.forms(self.plan, self.constants, deadline)
            except (TaskFailed, DeadlineExceeded, WorkerFailed) as error:
                return None, f"no closed form is shown: {error.message}"
            except Exception:
                log.exception("the closed form could not be rendered")
                return None, "no closed form is shown: rendering it failed (the error is logged)"
        return self._forms, self._forms.note


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


def _precision(gradients: Mapping[str, np.ndarray]) -> dtypes.DType:
    if any(g.dtype == np.float32 for g in gradients.values()):
        return dtypes.float32
    return dtypes.float64


def _scalar_forward(valid: ValidGraph, arrays: Mapping[str, np.ndarray],
                    seed: np.ndarray | None) -> Callable[[Mapping[str, np.ndarray]], float]:
    """The output (dotted with the seed) as a float64 function of the leaf values: the
    finite-difference check's f."""
    wide = _in_float64(valid)

    def forward(values: Mapping[str, np.ndarray]) -> float:
        out, _ = evaluate(wide, values, wrt=[])
        out = np.asarray(out, dtype=np.float64)
        return float(np.sum(out * seed) if seed is not None else out.sum())

    return forward


def _widened(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The leaf values with floating ones in float64 (the same numbers: float32 widens
    exactly)."""
    return {n: a.astype(np.float64) if a.dtype.kind == "f" else a for n, a in arrays.items()}


def _in_float64(valid: ValidGraph) -> ValidGraph:
    """The graph with its floating leaves declared float64: finite differences need the
    precision."""
    return validate_graph(valid.graph, {
        n: (shape, dtypes.float64 if d.is_floating_point else d)
        for n, (shape, d) in valid.leaves.items()})


def _check_hessian_size(plan: Plan, caps: Caps) -> None:
    if plan.seeded:
        raise InvalidArgument("a Hessian needs a scalar output")
    count = sum(math.prod(s) for n, s in plan.leaves if n in plan.wrt)
    if count > caps.max_hessian_variables:
        raise LimitExceeded(f"a Hessian over {count} variables is over the limit of "
                            f"{caps.max_hessian_variables}")


def _no_hessian(report: CheckReport) -> Hessian:
    return Hessian({}, {}, {}, report)


def _hessian(valid: ValidGraph, arrays: Mapping[str, np.ndarray], names: Sequence[str],
             evaluation: Evaluation, forms: ClosedForms | None) -> Hessian:
    """The closed form's Hessian, checked column by column against central differences of the
    numeric gradient in float64 (a SYMBOLIC check: the closed form is what is compared)."""
    wide = _in_float64(valid)
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
            _, g_plus = evaluate(wide, plus, names)
            _, g_minus = evaluate(wide, minus, names)
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
                     numeric_label="central differences of the numeric gradient")
    return Hessian(values, dict(forms.hessian_text) if forms else {},
                   dict(forms.hessian_latex) if forms else {}, report)
