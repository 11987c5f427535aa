"""The check of one validated graph's gradients against its closed form: ``GradientCheck``
keeps what depends on the graph and the leaves alone (the plan, the constants, the compiled and
rendered closed forms) for the next call, and gives a ``Result``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from . import dtypes
from .check import (
    CheckMode,
    CheckReport,
    Status,
    at_non_finite_points,
    compare,
    finite_difference,
    skipped,
    within_rounding,
)
from .display import ClosedForms
from .errors import CheckFailed, DeadlineExceeded, TaskFailed, WorkerFailed
from .evaluation import outputs
from .executor import Executor
from .graph import ValidGraph, check_values
from .hessian import Hessian, check_hessian_size, hessian_of, no_hessian
from .solver import Evaluator, Symbolic
from .symbolic import Plan, constants_of
from .widening import in_float64, widened

log = logging.getLogger(__name__)


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
    retained: dict[str, np.ndarray] = field(default_factory=dict)  # backward's retained grads


class GradientCheck:
    """The check of gradients the numeric engine computed for one validated graph and set of
    leaves (``wrt``), keeping what depends on them alone (the plan, the constants, the compiled
    and rendered closed forms) for the next call: the server checks the same graph call after
    call. A disagreement raises ``CheckFailed`` in STRICT mode."""

    def __init__(self, valid: ValidGraph, wrt: Sequence[str], symbolic: Symbolic,
                 hessian: bool = False) -> None:
        self.valid = valid
        self.wrt = tuple(wrt)
        self.symbolic = symbolic
        self.hessian = hessian
        self.plan = Plan.of(valid, list(wrt), hessian)
        if hessian:
            check_hessian_size(self.plan, symbolic.caps)
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
                          no_hessian(report) if self.hessian else None, wrt=wrt)
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
                hessian_result = no_hessian(skipped(f"no closed form: {why}"))
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
            report = at_non_finite_points(compare(gradients, reference, dtype), gradients,
                                          reference, arrays, (value, evaluation.value), dtype)
            if report.status is Status.DISAGREE and dtype == dtypes.float32:
                # Rounding or a wrong derivation? The engine in float64 tells them apart.
                wide_graph = in_float64(self.valid)
                _, wide, _ = outputs(Executor(wide_graph, wrt), wide_graph, widened(arrays),
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
                hessian_result = hessian_of(self.valid, arrays, list(wrt), evaluation, forms)
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


def _precision(gradients: Mapping[str, np.ndarray]) -> dtypes.DType:
    if any(g.dtype == np.float32 for g in gradients.values()):
        return dtypes.float32
    return dtypes.float64


def _scalar_forward(valid: ValidGraph, arrays: Mapping[str, np.ndarray],
                    seed: np.ndarray | None) -> Callable[[Mapping[str, np.ndarray]], float]:
    """The output (dotted with the seed) as a float64 function of the leaf values: the
    finite-difference check's f (planned once, run at each point)."""
    wide = in_float64(valid)
    executor = Executor(wide)

    def forward(values: Mapping[str, np.ndarray]) -> float:
        out, _, _ = outputs(executor, wide, check_values(wide, values, finite=False))
        out = np.asarray(out, dtype=np.float64)
        return float(np.sum(out * seed) if seed is not None else out.sum())

    return forward
