"""Compiled closed forms: evaluate a derived gradient at values, in float64.

Two evaluators over the same symbolic derivation (``symbolic.py``), chosen by size:

- ``Fused`` compiles the whole closed form (value, gradient, Hessian) into one SymEngine
  ``Lambdify`` with common subexpressions shared: a call costs about a microsecond, but compiling
  grows with outputs times inputs, so it serves small graphs (the seed notebook's examples);
- ``Program`` keeps the derivation's structure: each op's local derivatives (``sympy.diff`` of
  its forward) compiled once per op and attributes and applied to whole arrays, composed by the
  chain rule node by node. Building it costs little more than the graph's size, so it serves long
  chains and wide tensors.

Both are picklable: they are built in a worker process and evaluated in the caller's.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import symengine as se

from .ops import TABLE
from .symbolic import (
    Derivation,
    Plan,
    PlanNode,
    elementwise_rule,
    structural_rule,
)

Arrays = Sequence[np.ndarray]


class Evaluation(NamedTuple):
    """A closed form's values: the output, the gradient per leaf, Hessian blocks per leaf pair."""

    value: np.ndarray
    gradients: dict[str, np.ndarray]
    hessian: dict[tuple[str, str], np.ndarray]


class Fused:
    """The whole closed form as one compiled function of every symbol's value."""

    def __init__(self, plan: Plan, derivation: Derivation) -> None:
        # Held values were constants for differentiation; now they are just their values.
        substitution: dict[Any, Any] = {}
        for symbol, expression, _ in derivation.held:
            substitution[symbol] = expression.subs(substitution) if substitution else expression
        outputs = list(derivation.value)
        shapes = dict(plan.leaves)
        # Where each result sits in the flat output: ([key,] start, stop, shape).
        self._value = (0, len(outputs), plan.nodes[plan.output].shape)
        self._gradients: list[tuple[str, int, int, tuple[int, ...]]] = []
        for name, gradient in derivation.gradients.items():
            self._gradients.append((name, len(outputs), len(outputs) + len(gradient),
                                    shapes[name]))
            outputs += gradient
        self._hessian: list[tuple[tuple[str, str], int, int, tuple[int, ...]]] = []
        for (row, column), block in derivation.hessian.items():
            self._hessian.append(((row, column), len(outputs), len(outputs) + len(block),
                                  shapes[row] + shapes[column]))
            outputs += block
        if substitution:
            outputs = [e.subs(substitution) for e in outputs]
        # SymEngine compiles no function of zero arguments (a form of empty leaves, e.g. the sum
        # of nothing): such a form takes one unused number instead.
        inputs = list(derivation.inputs) or [se.Symbol("unused")]
        self._function = se.Lambdify(inputs, outputs, real=True, cse=True)
        self._inputs = len(derivation.inputs)
        self._outputs = len(outputs)

    def __call__(self, leaves: Arrays, constants: Arrays, seed: np.ndarray | None = None,
                 ) -> Evaluation:
        # Packed through a list of floats: for the few inputs of a fused form, several times
        # cheaper than NumPy's slice assignments.
        numbers: list[float] = []
        for part in (*leaves, *constants, *(() if seed is None else (seed,))):
            if part.ndim:  # arrays, as differentiate passes them
                numbers += part.ravel().tolist()
            else:
                numbers.append(float(part))
        if len(numbers) != self._inputs:  # unsafe_real reads what it is told is there
            raise ValueError(f"the closed form takes {self._inputs} numbers, got {len(numbers)}")
        out = np.empty(self._outputs)
        self._function.unsafe_real(np.array(numbers or [0.0], dtype=np.float64), out)
        start, stop, shape = self._value
        value = out[start:stop].reshape(shape)
        gradients = {name: out[start:stop].reshape(shape)
                     for name, start, stop, shape in self._gradients}
        hessian = {key: out[start:stop].reshape(shape)
                   for key, start, stop, shape in self._hessian}
        return Evaluation(value, gradients, hessian)


# --- Program: the derivation's structure, evaluated array by array -------------------------------

@functools.lru_cache(maxsize=256)
def _compiled_rule(op_name: str, attrs: tuple[tuple[str, Any], ...]) -> Any:
    """An elementwise op's forward and partials, compiled once: (..., arity) -> (..., 1 + arity)
    (just the forward for an op that stops the gradient)."""
    rule = elementwise_rule(op_name, attrs)
    return se.Lambdify(list(rule.symbols), [rule.forward, *rule.partials], real=True, cse=True)


@dataclass(frozen=True)
class _Gathers:
    """A structural op's sparse Jacobian as index arrays: entry n adds
    ``adjoint[out[n]] * coefficient[n] * (operand[source[n]] or 1) * (partials[general[n]] or
    1)`` to input ``position[n]``'s adjoint at ``element[n]``, where ``partials`` are the values
    of the partials that are not linear in one operand element (a softmax's, a product's),
    compiled in ``partials`` over the operands' elements, flat and in order."""

    out: np.ndarray
    position: np.ndarray
    element: np.ndarray
    coefficient: np.ndarray
    source_operand: np.ndarray  # -1: the partial is a constant
    source_element: np.ndarray
    general: np.ndarray  # -1: the partial is linear (the columns above say it)
    partials: Any = None  # a Lambdify of the general partials, None if there are none


@functools.lru_cache(maxsize=256)
def _gathers(op_name: str, attrs: tuple[tuple[str, Any], ...],
             shapes_in: tuple[tuple[int, ...], ...], shape_out: tuple[int, ...]) -> _Gathers:
    rule = structural_rule(op_name, attrs, shapes_in, shape_out)
    where = rule.where
    rows: list[tuple[int, int, int, float, int, int, int]] = []
    general: list[Any] = []
    for k, entries in enumerate(rule.jacobian):
        for position, element, partial in entries:
            linear = _linear_partial(partial, where)
            if linear is None:
                rows.append((k, position, element, 1.0, -1, -1, len(general)))
                general.append(partial)
            else:
                rows.append((k, position, element, *linear, -1))
    columns = list(zip(*rows, strict=True)) if rows else [()] * 7
    partials = se.Lambdify(list(where), general, real=True, cse=True) if general else None
    out, at, into, coefficient, operand, source, general_at = (
        np.array(c, dtype=t) for c, t in zip(
            columns, (np.intp, np.intp, np.intp, np.float64, np.intp, np.intp, np.intp),
            strict=True))
    return _Gathers(out, at, into, coefficient, operand, source, general_at, partials)


def _linear_partial(partial: Any, where: dict[Any, tuple[int, int]],
                    ) -> tuple[float, int, int] | None:
    """A partial of a reduction, view or product as a number, or a number times one operand
    element (coefficient, operand, element; operand -1 for a number); None for any other."""
    if partial.is_Number:
        return float(partial), -1, -1
    if partial in where:
        return 1.0, *where[partial]
    if isinstance(partial, se.Mul):
        numbers = [factor for factor in partial.args if factor.is_Number]
        rest = [factor for factor in partial.args if not factor.is_Number]
        if len(rest) == 1 and rest[0] in where:
            return float(math.prod(float(n) for n in numbers)), *where[rest[0]]
    return None


class Program:
    """The chain rule over whole arrays, with each op's local derivatives compiled from CAS."""

    def __init__(self, plan: Plan) -> None:
        self._plan = plan
        self._live = plan.live()
        self._rules: list[Any] = []
        for node in plan.nodes:
            rule: Any = None
            if node.kind == "op":
                op = TABLE[node.op]
                if op.elementwise:
                    rule = _compiled_rule(node.op, node.attrs)
                elif not op.stops_gradient:  # one that does needs its value only
                    rule = _gathers(node.op, node.attrs,
                                    tuple(plan.nodes[i].shape for i in node.inputs), node.shape)
            self._rules.append(rule)

    def __call__(self, leaves: Arrays, constants: Arrays, seed: np.ndarray | None = None,
                 ) -> Evaluation:
        plan = self._plan
        by_name = {name: np.asarray(v, dtype=np.float64)
                   for (name, _), v in zip(plan.leaves, leaves, strict=True)}
        next_constant = iter(constants)
        values: list[np.ndarray] = []
        partials: dict[int, np.ndarray] = {}
        with np.errstate(all="ignore"):
            for k, node in enumerate(plan.nodes):
                if node.kind == "leaf":
                    values.append(by_name[node.name])
                elif node.kind == "const":
                    values.append(np.asarray(next(next_constant), dtype=np.float64))
                else:
                    values.append(self._forward(k, node, values, partials))
            gradients = self._backward(values, partials, seed)
        return Evaluation(values[plan.output], gradients, {})

    def _forward(self, k: int, node: PlanNode, values: list[np.ndarray],
                 partials: dict[int, np.ndarray]) -> np.ndarray:
        rule = self._rules[k]
        inputs = [values[i] for i in node.inputs]
        if rule is None or isinstance(rule, _Gathers):
            return np.asarray(TABLE[node.op].sympy(*inputs, **dict(node.attrs)),
                              dtype=np.float64)
        stacked = np.stack(np.broadcast_arrays(*inputs), axis=-1).reshape(-1, len(inputs))
        # (elements, 1 + arity): the value, then each partial
        out = rule(stacked).reshape(stacked.shape[0], -1)
        if self._live[k]:
            partials[k] = out[:, 1:]
        return out[:, 0].reshape(node.shape)

    def _backward(self, values: list[np.ndarray], partials: dict[int, np.ndarray],
                  seed: np.ndarray | None) -> dict[str, np.ndarray]:
        plan = self._plan
        if not self._live[plan.output]:
            return {}
        adjoints: dict[int, np.ndarray] = {
            plan.output: np.ones(1) if seed is None else np.asarray(seed, np.float64).ravel()}
        gradients: dict[str, np.ndarray] = {}
        for k in range(len(plan.nodes) - 1, -1, -1):
            adjoint = adjoints.pop(k, None)
            if adjoint is None:
                continue
            node = plan.nodes[k]
            if node.kind == "leaf":
                previous = gradients.get(node.name)
                gradients[node.name] = adjoint if previous is None else previous + adjoint
                continue
            rule = self._rules[k]
            for position, i in enumerate(node.inputs):
                if not self._live[i]:
                    continue
                size = math.prod(plan.nodes[i].shape)
                if isinstance(rule, _Gathers):
                    contribution = self._gathered(rule, position, adjoint, values, node, size)
                else:
                    local = adjoint * partials[k][:, position]
                    contribution = _unbroadcast(local, plan.nodes[i].shape, node.shape, size)
                previous = adjoints.get(i)
                adjoints[i] = contribution if previous is None else previous + contribution
        return {name: g.reshape(dict(plan.leaves)[name]) for name, g in gradients.items()}

    @staticmethod
    def _gathered(rule: _Gathers, position: int, adjoint: np.ndarray, values: list[np.ndarray],
                  node: PlanNode, size: int) -> np.ndarray:
        mine = rule.position == position
        terms = adjoint[rule.out[mine]] * rule.coefficient[mine]
        operand = rule.source_operand[mine]
        if (operand >= 0).any():
            flat = [values[i].ravel() for i in node.inputs]
            factor = np.ones(terms.size)
            for o, operand_values in enumerate(flat):
                pick = operand == o
                factor[pick] = operand_values[rule.source_element[mine][pick]]
            terms = terms * factor
        general = rule.general[mine]
        if rule.partials is not None and (general >= 0).any():
            # The operands' elements, flat and in order, as the placeholders were numbered.
            elements = np.concatenate([values[i].ravel() for i in node.inputs])
            partials = np.asarray(rule.partials(elements), dtype=np.float64).ravel()
            pick = general >= 0
            terms = terms.copy()
            terms[pick] = terms[pick] * partials[general[pick]]
        return np.bincount(rule.element[mine], weights=terms, minlength=size)


def _unbroadcast(local: np.ndarray, shape: tuple[int, ...], result_shape: tuple[int, ...],
                 size: int) -> np.ndarray:
    """Sum a result-shaped contribution into the elements of an input it was broadcast from."""
    if shape == result_shape:
        return local
    source = np.broadcast_to(np.arange(size).reshape(shape), result_shape).ravel()
    return np.bincount(source, weights=local, minlength=size)
