"""The STRICT check on random scalar chains in float32: a gradient PyTorch computes the same is
never refused, however much the chain amplifies float32's rounding.

Chains of 2-8 of the table's elementwise ops, each applied where it is defined and smooth, with
a constant or the leaf as the other operand of a binary op; seeded, so a failure reproduces.
``bench/bench_symbolic.py`` (d) runs 2,000 of them and times them. Few random points are
ill-conditioned enough for float32's rounding to pass the tolerance: ``test_differentiate.py``
holds the check to such points (``sin(exp(x)*2)+2`` at 5) and to a wrong VJP in both dtypes.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import numpy as np
import pytest
from crossgrad.engine import ops
from crossgrad.engine.budget import Caps
from crossgrad.engine.check import Method, Status
from crossgrad.engine.differentiation import differentiate
from crossgrad.engine.solver import Symbolic

pytestmark = pytest.mark.torch

CHAINS = 100
_KINKS = {"relu": 0.0, "abs": 0.0, "sign": 0.0}  # where a step flips branch: kept 0.05 away
_BOUND = 1000.0  # chains whose value leaves [-1000, 1000] are drawn again
# Ops defined and smooth on the whole line take the chain's value anywhere (the table's domains
# are the tests' ranges): that is where float32's rounding gets amplified, as in sin(2*exp(x)).
_WHOLE_LINE = {"add", "sub", "mul", "div", "neg", "exp", "sin", "cos", "tanh", "sigmoid",
               "relu", "abs"}
_POSITIVE = {"log", "sqrt", "pow"}  # defined from their domain's low end up


# Binary ops PyTorch calls on tensors only: the chain's constant is a 0-d tensor there.
_TENSOR_OPERANDS = {"maximum", "minimum", "atan2"}


def _ops() -> list[ops.Op]:
    # Elementwise, with a gradient, no attributes to draw (clamp has its own tests), a torch
    # function of the same name to compare with, and no condition (where selects by a
    # comparison: the chains are smooth).
    return [op for op in ops.OPS if op.elementwise and not op.stops_gradient and not op.attrs
            and op.public and not op.conditioned]


Step = tuple[str, float | None]  # an op's name, and the constant of a binary op


def _chain(rng: np.random.Generator) -> tuple[list[Step], float] | None:
    """The steps of a chain on one leaf and the float32 point to take it at, or None for a draw
    that left every op's domain."""
    table = _ops()
    x = float(np.float32(rng.uniform(-6.0, 6.0)))
    value = np.float64(x)
    steps: list[Step] = []
    for _ in range(int(rng.integers(2, 9))):
        for op in rng.permutation(np.array(table, dtype=object)):
            lo, hi = op.domain[0]
            lo = -_BOUND if op.name in _WHOLE_LINE else lo
            hi = _BOUND if op.name in _WHOLE_LINE | _POSITIVE else hi
            if not lo <= value <= hi or abs(value - _KINKS.get(op.name, np.inf)) < 0.05:
                continue
            other = None if op.arity == 1 else round(float(rng.uniform(*op.domain[1])), 3)
            steps.append((op.name, other))
            value = op.forward(value) if other is None else op.forward(value, np.float64(other))
            break
        else:
            return None
        if not abs(value) <= _BOUND:
            return None
    return steps, x


def chains(count: int, seed: int) -> Iterator[tuple[list[Step], float]]:
    rng = np.random.default_rng(seed)
    made = 0
    while made < count:
        chain = _chain(rng)
        if chain is not None:
            made += 1
            yield chain


def formula(steps: list[Step]) -> str:
    text = "x"
    for name, other in steps:
        text = f"{name}({text})" if other is None else f"{name}({text}, {other!r})"
    return text


@pytest.fixture(scope="module")
def side() -> Iterator[Symbolic]:
    # Renderings get little time: the check is under test here, not the text.
    side = Symbolic(Caps(workers=2, render_seconds=0.05))
    yield side
    side.close()


def _torch_gradient(torch: ModuleType, steps: list[Step], x: float) -> float:
    leaf = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    value = leaf
    for name, other in steps:
        op = getattr(torch, name)
        if other is not None and name in _TENSOR_OPERANDS:
            value = op(value, torch.tensor(other, dtype=torch.float32))
        else:
            value = op(value) if other is None else op(value, other)
    value.backward()
    return float(leaf.grad)


def test_no_correct_float32_gradient_is_refused(require_torch: ModuleType,
                                                side: Symbolic) -> None:
    refused = []
    for steps, x in chains(CHAINS, seed=11):
        text = formula(steps)
        with np.errstate(all="ignore"):
            result = differentiate(text, {"x": np.float32(x)}, check="report", symbolic=side)
        gradient = float(result.gradients["x"])
        if not np.isfinite(gradient):
            continue
        expected = _torch_gradient(require_torch, steps, x)
        # PyTorch's float32 gradient is the reference of correct: ours is the same to a few
        # ulps of float32 (kernels round differently), so the check must take it.
        assert gradient == pytest.approx(expected, rel=1e-4, abs=1e-6), text
        assert result.check.method is Method.SYMBOLIC, (text, result.check.reason)
        if result.check.status is Status.DISAGREE:
            refused.append((text, x, result.check.reason))
    assert not refused


