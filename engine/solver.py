"""The symbolic solver: closed forms derived, compiled and rendered in the worker pool.

The worker's side (``_compile``, ``_render``, ``warm_up``) runs in a worker process (see
``budget.py``); ``Symbolic``, the caller's side, holds the caps, the pool, the caches of compiled
closed forms (by structure) and rendered ones (by structure and constant values), and what each
structure's tasks said about it.
"""

from __future__ import annotations

import concurrent.futures
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import dtypes, formula
from .budget import DEFAULT_CAPS, Budget, Caps
from .cache import Cache
from .closed_form import Fused, Program
from .display import ClosedForms, render
from .errors import DeadlineExceeded, TaskFailed, WorkerFailed
from .graph import validate as validate_graph
from .symbolic import Derivation, Plan, constants_of, derive

Evaluator = Fused | Program

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
