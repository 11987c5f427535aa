"""Benchmark (not a test): crossgrad's engine side by side with PyTorch eager on the CPU, HIPS
autograd and a hand-derived NumPy gradient, forward + backward, in one process.

    PYTHONPATH=<dir holding crossgrad/engine> python bench/bench_engine.py
        [--quick] [--sections abcdef] [--profile]

``--quick`` is a ~30 s run (shorter budgets, one call per 100k-op case); ``--sections`` picks
sections; ``--profile`` adds cProfile hot spots of crossgrad. The full run takes ~2-3 minutes on
2 cores.

Sections (each prints one Markdown table, with a target column and PASS/MISS where a target
applies; ratios are crossgrad / anchor, so below 1 means crossgrad is faster):

(a) the four examples of the PyTorch autograd tutorial, per call (leaves built in the call);
(b) a chain of N scalar elementwise ops (sin, *1.01, +0.1, tanh, -0.1 repeated), per op;
(c) a 2-layer tanh MLP with sigmoid + binary cross-entropy (1024x256 @ 256x256 @ 256x1), float64
    and float32, gradients of both weight matrices; the hand-derived NumPy gradient is the floor.
    torch gets as many threads as NumPy's BLAS; measured at NumPy's default thread count and
    again single-threaded (multi-threaded BLAS is erratic when other processes share the CPUs);
(d) a 100,000-op scalar chain: time, peak memory (fresh subprocess per implementation), and no
    RecursionError;
(e) the tax of Python's cyclic GC on the tape: (b) at N=1000 and (d) with the collector enabled
    and disabled, in this process, which has torch, sympy and numpy imported;
(f) a case per op family of the table (an elementwise unary pair, maximum, softmax, indexing,
    cat) on a scalar, 12 elements and 1,000 elements, against torch.

Timing: ``time.perf_counter``; warm-up calls, then rounds that interleave the implementations in a
rotating order, so that noise hits all of them alike; medians with the 10th-90th percentiles.
Every implementation's gradients are checked against the hand-derived ones before timing. The
collector stays enabled (Python's default) except in (e)'s "gc disabled" cases. OPENBLAS_CORETYPE
and the BLAS kernel are left as the environment set them, and printed.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import importlib.metadata
import json
import os
import platform
import pstats
import re
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import autograd.numpy as anp
import crossgrad.engine as cg
import numpy as np
import sympy
import torch
from autograd import grad as hips_grad

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import (  # the helper module next to this script
    BlasInfo,
    Case,
    PeakRss,
    Stats,
    Target,
    blas_info,
    fmt_ratio,
    fmt_spread,
    fmt_time,
    fmt_us,
    markdown_table,
    measure,
    once,
    set_blas_threads,
    verdict,
)

Grads = tuple[Any, ...]
F32 = np.float32
EPS = 1e-8  # the clamp of the binary cross-entropy: [EPS, 1 - EPS]

CG, TORCH, HIPS, HAND = "crossgrad", "torch", "HIPS autograd", "hand NumPy"
IMPLS = (CG, TORCH, HIPS, HAND)

SCALAR_TARGET = 0.5  # crossgrad / torch, sections (a) and (b)
FLOOR_TARGET = 1.1  # crossgrad / hand-derived NumPy, section (c)
TORCH_MLP_TARGET = 1.0  # crossgrad / torch, section (c)
CHAIN_SIZES = (10, 100, 1000)
LONG_CHAIN = 100_000


@dataclass(frozen=True)
class Plan:
    """How long to spend: ``scale`` multiplies every section's time budget."""

    quick: bool
    scale: float
    min_rounds: int

    def budget(self, full_seconds: float) -> float:
        return full_seconds * self.scale


# --- (a) the PyTorch autograd tutorial -----------------------------------------------------------
# crossgrad and torch run the same code: crossgrad's namespace mirrors torch's (``m`` is either).

def tutorial_square(m: Any) -> Grads:
    x = m.tensor(5.0, requires_grad=True)
    y = x ** 2
    y.backward()
    return (x.grad,)


def tutorial_sin(m: Any) -> Grads:
    x = m.tensor(4.0, requires_grad=True)
    z = m.sin(x ** 2)
    z.backward()
    return (x.grad,)


def tutorial_logistic(m: Any) -> Grads:
    w = m.tensor(1.0, requires_grad=True)
    b = m.tensor(0.0, requires_grad=True)
    x = m.tensor(6.7)
    y = m.tensor(0.0)
    z = w * x + b
    p = m.sigmoid(z)
    loss = -(y * m.log(m.clamp(p, EPS, 1 - EPS)) + (1 - y) * m.log(1 - m.clamp(p, EPS, 1 - EPS)))
    loss.backward()
    return w.grad, b.grad


def tutorial_mean(m: Any) -> Grads:
    x = m.tensor([1.0, 3.0, 4.0], requires_grad=True)
    y = (x ** 2).mean()
    y.backward()
    return (x.grad,)


def _np_sigmoid(z: Any) -> Any:
    return np.exp(-np.logaddexp(0, -z))  # the engine's forward: no overflow for large |z|


def _anp_sigmoid(z: Any) -> Any:
    return anp.exp(-anp.logaddexp(0, -z))


def _anp_logistic(w: Any, b: Any, x: Any, y: Any) -> Any:
    p = _anp_sigmoid(w * x + b)
    return -(y * anp.log(anp.clip(p, EPS, 1 - EPS)) + (1 - y) * anp.log(1 - anp.clip(p, EPS,
                                                                                      1 - EPS)))


_hips_square = hips_grad(lambda x: x ** 2)
_hips_sin = hips_grad(lambda x: anp.sin(x ** 2))
_hips_logistic = hips_grad(_anp_logistic, (0, 1))
_hips_mean = hips_grad(lambda x: anp.mean(x ** 2))


def hand_square() -> Grads:
    x = np.array(5.0, F32)
    _y = x ** 2
    return (2 * x,)


def hand_sin() -> Grads:
    x = np.array(4.0, F32)
    a = x ** 2
    _z = np.sin(a)
    return (np.cos(a) * 2 * x,)


def hand_logistic() -> Grads:
    w, b, x, y = (np.array(v, F32) for v in (1.0, 0.0, 6.7, 0.0))
    p = _np_sigmoid(w * x + b)
    pc = np.clip(p, EPS, 1 - EPS)
    _loss = -(y * np.log(pc) + (1 - y) * np.log(1 - pc))
    g_pc = -(y / pc - (1 - y) / (1 - pc))
    g_z = g_pc * ((p >= EPS) & (p <= 1 - EPS)) * p * (1 - p)
    return g_z * x, g_z


def hand_mean() -> Grads:
    x = np.array([1.0, 3.0, 4.0], F32)
    _y = (x ** 2).mean()
    return (2 * x / x.size,)


TUTORIAL: tuple[tuple[str, dict[str, Callable[[], Grads]]], ...] = (
    ("1. y = x**2, x = 5", {
        CG: lambda: tutorial_square(cg), TORCH: lambda: tutorial_square(torch),
        HIPS: lambda: (_hips_square(np.array(5.0, F32)),), HAND: hand_square}),
    ("2. z = sin(x**2), x = 4", {
        CG: lambda: tutorial_sin(cg), TORCH: lambda: tutorial_sin(torch),
        HIPS: lambda: (_hips_sin(np.array(4.0, F32)),), HAND: hand_sin}),
    ("3. logistic BCE, d/dw, d/db", {
        CG: lambda: tutorial_logistic(cg), TORCH: lambda: tutorial_logistic(torch),
        HIPS: lambda: _hips_logistic(*(np.array(v, F32) for v in (1.0, 0.0, 6.7, 0.0))),
        HAND: hand_logistic}),
    ("4. y = mean(x**2), x = [1,3,4]", {
        CG: lambda: tutorial_mean(cg), TORCH: lambda: tutorial_mean(torch),
        HIPS: lambda: (_hips_mean(np.array([1.0, 3.0, 4.0], F32)),), HAND: hand_mean}),
)


# --- (b), (d) scalar chains ---------------------------------------------------------------------
# One block is five ops: sin, * 1.01, + 0.1, tanh, - 0.1. The map is nearly neutral around 0, so
# the gradient of a 1000-op chain is still ~4e-3 in float32 (a contracting mix such as
# sin, *1.01, +0.1, tanh underflows to 0 within a few hundred ops and checks nothing).

def chain_forward(m: Any, n: int) -> tuple[Any, Any]:
    x = m.tensor(0.5, requires_grad=True)
    y = x
    sin, tanh = m.sin, m.tanh
    for _ in range(n // 5):
        y = sin(y)
        y = y * 1.01
        y = y + 0.1
        y = tanh(y)
        y = y - 0.1
    return x, y


def chain(m: Any, n: int) -> Grads:
    x, y = chain_forward(m, n)
    y.backward()
    return (x.grad,)


def hips_chain(n: int) -> Callable[[Any], Any]:
    def f(x: Any) -> Any:
        y = x
        for _ in range(n // 5):
            y = anp.sin(y)
            y = y * 1.01
            y = y + 0.1
            y = anp.tanh(y)
            y = y - 0.1
        return y

    return hips_grad(f)


def _call_hips_chain(gradient: Callable[[Any], Any]) -> Grads:
    return (gradient(np.array(0.5, F32)),)


def hand_chain(n: int) -> Grads:
    y: Any = np.array(0.5, F32)
    saved: list[tuple[Any, Any]] = []  # per block: the input of sin, the output of tanh
    for _ in range(n // 5):
        s = y
        t = np.tanh(np.sin(s) * 1.01 + 0.1)
        saved.append((s, t))
        y = t - 0.1
    g: Any = np.ones_like(y)
    for s, t in reversed(saved):
        g = g * (1 - t * t) * 1.01 * np.cos(s)
    return (g,)


# --- (c) the MLP --------------------------------------------------------------------------------

@dataclass
class MlpData:
    """The model's inputs in one dtype, as NumPy arrays."""

    X: np.ndarray
    W1: np.ndarray
    W2: np.ndarray
    y: np.ndarray

    @classmethod
    def make(cls, dtype: type[np.floating[Any]]) -> MlpData:
        rng = np.random.default_rng(0)
        return cls(rng.standard_normal((1024, 256)).astype(dtype),
                   (rng.standard_normal((256, 256)) / 16).astype(dtype),
                   (rng.standard_normal((256, 1)) / 16).astype(dtype),
                   (rng.random((1024, 1)) < 0.5).astype(dtype))


def mlp_step(m: Any, X: Any, W1: Any, W2: Any, y: Any) -> Grads:
    """One forward + backward on crossgrad or torch (same code); fresh gradients each call."""
    W1.grad = None
    W2.grad = None
    p = m.sigmoid(m.tanh(X @ W1) @ W2)
    bce = -(y * m.log(m.clamp(p, EPS, 1 - EPS)) + (1 - y) * m.log(1 - m.clamp(p, EPS, 1 - EPS)))
    bce.mean().backward()
    return W1.grad, W2.grad


def _anp_mlp_loss(W1: Any, W2: Any, X: Any, y: Any) -> Any:
    p = _anp_sigmoid(anp.tanh(X @ W1) @ W2)
    return anp.mean(-(y * anp.log(anp.clip(p, EPS, 1 - EPS))
                      + (1 - y) * anp.log(1 - anp.clip(p, EPS, 1 - EPS))))


_hips_mlp = hips_grad(_anp_mlp_loss, (0, 1))


def hand_mlp(X: np.ndarray, W1: np.ndarray, W2: np.ndarray, y: np.ndarray) -> Grads:
    """The same model's gradient derived by hand, with the same NumPy ops: the floor."""
    H = np.tanh(X @ W1)
    P = _np_sigmoid(H @ W2)
    Pc = np.clip(P, EPS, 1 - EPS)
    _loss = np.mean(-(y * np.log(Pc) + (1 - y) * np.log(1 - Pc)))
    g_pc = -(y / Pc - (1 - y) / (1 - Pc)) / P.size
    g_z = g_pc * ((P >= EPS) & (P <= 1 - EPS)) * P * (1 - P)
    g_w2 = H.T @ g_z
    g_a = (g_z @ W2.T) * (1 - H * H)
    return X.T @ g_a, g_w2


def mlp_cases(data: MlpData) -> dict[str, Callable[[], Grads]]:
    cX, cW1, cW2, cy = (cg.from_numpy(data.X), cg.tensor(data.W1, requires_grad=True),
                        cg.tensor(data.W2, requires_grad=True), cg.from_numpy(data.y))
    tX, tW1, tW2, ty = (torch.from_numpy(data.X), torch.tensor(data.W1, requires_grad=True),
                        torch.tensor(data.W2, requires_grad=True), torch.from_numpy(data.y))
    d = data
    return {CG: lambda: mlp_step(cg, cX, cW1, cW2, cy),
            TORCH: lambda: mlp_step(torch, tX, tW1, tW2, ty),
            HIPS: lambda: _hips_mlp(d.W1, d.W2, d.X, d.y),
            HAND: lambda: hand_mlp(d.X, d.W1, d.W2, d.y)}


# --- (f) the op families ----------------------------------------------------------------------
# One case per family of the table, on crossgrad and torch (same code): leaves built in the call
# from the same NumPy arrays, the op, a weighted sum (so every element's gradient differs),
# backward.

@functools.cache
def _family_arrays(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n)
    # The weights cover the largest result, cat's 2n elements.
    return (rng.standard_normal(n).astype(F32), rng.standard_normal(n).astype(F32),
            rng.standard_normal(2 * n).astype(F32))


def _family_step(m: Any, family: str, n: int) -> Grads:
    values_a, values_b, values_weights = _family_arrays(n)
    a = m.tensor(values_a, requires_grad=True)
    b = m.tensor(values_b, requires_grad=True)
    if family == "unary":
        out = m.erf(a) * m.log1p(b * b)
    elif family == "maximum":
        out = m.maximum(a, b)
    elif family == "softmax":
        out = m.softmax(a, dim=0) * b
    elif family == "indexing":  # two slices, and a select of a row
        out = a[1:] * b[:-1] + a.reshape(-1, 2)[:, 0].sum()
    else:  # cat
        out = m.cat([a, b])
    weights = m.tensor(values_weights[:out.numel()])
    (out * weights).sum().backward()
    return a.grad, b.grad


FAMILIES = ("unary", "maximum", "softmax", "indexing", "cat")
FAMILY_SIZES = (1, 12, 1000)


# --- checks ---------------------------------------------------------------------------------------

def as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().numpy()
    if isinstance(value, cg.Tensor):
        return np.asarray(value.detach().numpy())
    return np.asarray(value)


def check_agree(what: str, results: Mapping[str, Grads], rtol: float,
                atol: float | None = None, reference: str = HAND) -> float:
    """Assert every implementation's gradients match the reference's (the hand-derived ones by
    default); the worst difference.

    ``atol`` defaults to ``rtol`` times the largest reference magnitude, so entries near zero are
    compared at the gradient's own scale.
    """
    expected = [as_numpy(v).astype(np.float64) for v in results[reference]]
    worst = 0.0
    for name, grads in results.items():
        assert len(grads) == len(expected), f"{what}: {name} returned {len(grads)} gradients"
        for i, (ref, value) in enumerate(zip(expected, grads, strict=True)):
            got = as_numpy(value).astype(np.float64)
            tol = atol if atol is not None else rtol * float(np.max(np.abs(ref), initial=0.0))
            np.testing.assert_allclose(got.reshape(ref.shape), ref, rtol=rtol, atol=tol,
                                       err_msg=f"{what}: gradient {i} of {name} vs {reference}")
            scale = np.abs(ref) + max(tol, 1e-300)
            worst = max(worst, float(np.max(np.abs(got.reshape(ref.shape) - ref) / scale,
                                            initial=0.0)))
    return worst


def agreement_note(checks: Sequence[tuple[str, float]]) -> str:
    parts = ", ".join(f"{what}: {worst:.1e}" for what, worst in checks)
    return (f"Gradients of all four implementations agree (np.testing.assert_allclose against "
            f"{HAND}; worst |diff| / (|ref| + atol): {parts}).")


# --- sections ------------------------------------------------------------------------------------

def section_a(plan: Plan) -> list[Target]:
    print("\n### (a) PyTorch autograd tutorial examples (float32 scalars, forward + backward, "
          "leaves built in each call)\n")
    rows: list[list[str]] = []
    targets: list[Target] = []
    checks: list[tuple[str, float]] = []
    for label, cases in TUTORIAL:
        checks.append((label.split(".")[0], check_agree(label, {n: f() for n, f in cases.items()},
                                                         rtol=1e-5)))
        gc.collect()
        stats = measure(cases, budget=plan.budget(5.0), min_rounds=plan.min_rounds)
        cg_t = stats[CG].median
        ratio = cg_t / stats[TORCH].median
        targets.append(Target.ratio(f"(a) {label}: crossgrad / torch", ratio, SCALAR_TARGET))
        rows.append([label, *(fmt_spread(stats[n]) for n in IMPLS), fmt_ratio(ratio),
                     f"<= {SCALAR_TARGET:.2f}x", verdict(ratio, SCALAR_TARGET),
                     fmt_ratio(cg_t / stats[HIPS].median), fmt_ratio(cg_t / stats[HAND].median)])
    print(markdown_table(
        ["example", "crossgrad µs", "torch µs", "HIPS autograd µs", "hand NumPy µs",
         "crossgrad / torch", "target", "verdict", "crossgrad / HIPS", "crossgrad / hand"],
        rows))
    print("\nTimes are µs per call, median [p10–p90] over interleaved rounds. "
          + agreement_note(checks))
    return targets


def section_b(plan: Plan) -> list[Target]:
    print("\n### (b) Chain of N scalar elementwise ops (sin, *1.01, +0.1, tanh, -0.1, ...), "
          "float32, forward + backward\n")
    rows: list[list[str]] = []
    targets: list[Target] = []
    checks: list[tuple[str, float]] = []
    for n in CHAIN_SIZES:
        hips = hips_chain(n)
        cases: dict[str, Callable[[], Grads]] = {
            CG: functools.partial(chain, cg, n), TORCH: functools.partial(chain, torch, n),
            HIPS: functools.partial(_call_hips_chain, hips),
            HAND: functools.partial(hand_chain, n)}
        checks.append((f"N={n}", check_agree(f"chain N={n}", {k: f() for k, f in cases.items()},
                                             rtol=1e-3)))
        gc.collect()
        stats = {k: s.scaled(n) for k, s in measure(cases, budget=plan.budget(6.0),
                                                    min_rounds=plan.min_rounds).items()}
        ratio = stats[CG].median / stats[TORCH].median
        targets.append(Target.ratio(f"(b) chain N={n}: crossgrad / torch", ratio, SCALAR_TARGET))
        rows.append([str(n), *(fmt_spread(stats[k]) for k in IMPLS), fmt_ratio(ratio),
                     f"<= {SCALAR_TARGET:.2f}x", verdict(ratio, SCALAR_TARGET),
                     fmt_ratio(stats[CG].median / stats[HIPS].median)])
    print(markdown_table(
        ["N ops", "crossgrad µs/op", "torch µs/op", "HIPS autograd µs/op", "hand NumPy µs/op",
         "crossgrad / torch", "target", "verdict", "crossgrad / HIPS"], rows))
    print("\nµs per op = time per forward+backward call / N (leaf creation included), median "
          "[p10–p90]. " + agreement_note(checks))
    return targets


def section_f(plan: Plan) -> list[Target]:
    print("\n### (f) The op families (float32, leaves built in each call, forward + weighted sum + "
          "backward)\n")
    rows: list[list[str]] = []
    targets: list[Target] = []
    checks: list[tuple[str, float]] = []
    for family in FAMILIES:
        for n in FAMILY_SIZES:
            if family in ("indexing", "cat") and n == 1:
                continue  # a 1-element tensor has no halves
            label = f"{family}, {n} element{'s' if n > 1 else ''}"
            cases: dict[str, Callable[[], Grads]] = {
                CG: functools.partial(_family_step, cg, family, n),
                TORCH: functools.partial(_family_step, torch, family, n)}
            results = {k: f() for k, f in cases.items()}
            checks.append((label, check_agree(label, results, rtol=1e-4, reference=TORCH)))
            gc.collect()
            stats = measure(cases, budget=plan.budget(3.0), min_rounds=plan.min_rounds)
            ratio = stats[CG].median / stats[TORCH].median
            targets.append(Target.ratio(f"(f) {label}: crossgrad / torch", ratio, SCALAR_TARGET))
            rows.append([label, fmt_spread(stats[CG]), fmt_spread(stats[TORCH]),
                         fmt_ratio(ratio), f"<= {SCALAR_TARGET:.2f}x",
                         verdict(ratio, SCALAR_TARGET)])
    print(markdown_table(["case", "crossgrad µs", "torch µs", "crossgrad / torch", "target",
                          "verdict"], rows))
    worst = ", ".join(f"{what}: {value:.1e}" for what, value in checks)
    print("\nTimes are µs per call, median [p10–p90] over interleaved rounds. crossgrad's "
          f"gradients agree with torch's (worst |diff| / (|ref| + atol): {worst}).")
    return targets


def minor_faults_per_call(fn: Callable[[], object], calls: int = 3) -> float:
    """Minor page faults per call: fresh memory the allocator had to map (and the kernel zero)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def section_c(plan: Plan, blas: BlasInfo) -> list[Target]:
    default = blas.threads or torch.get_num_threads()
    configs = [default]
    if default != 1 and set_blas_threads(default):
        configs.append(1)  # also single-threaded: robust when other processes share the CPUs
    print(f"\n### (c) 2-layer tanh MLP + sigmoid + BCE: X 1024x256, W1 256x256, W2 256x1, "
          f"d/dW1 and d/dW2; threads: NumPy BLAS = torch intra-op (NumPy's default: "
          f"{blas.threads})\n")
    rows: list[list[str]] = []
    targets: list[Target] = []
    checks: list[tuple[str, float]] = []
    for dtype, rtol in ((np.float64, 1e-9), (np.float32, 2e-3)):
        name = np.dtype(dtype).name
        cases = mlp_cases(MlpData.make(dtype))
        checks.append((name, check_agree(f"MLP {name}", {k: f() for k, f in cases.items()},
                                         rtol=rtol)))
        for threads in configs:
            if len(configs) > 1:
                set_blas_threads(threads)
            torch.set_num_threads(threads)
            gc.collect()
            stats = measure(cases, budget=plan.budget(8.0), min_sample=0.02,
                            min_rounds=plan.min_rounds)
            faults = {k: minor_faults_per_call(f) for k, f in cases.items()}
            cg_t = stats[CG].median
            for impl in IMPLS:
                label = f"{impl} (floor)" if impl == HAND else f"{impl} eager" if impl == TORCH \
                    else impl
                cells = [name, str(threads), label, fmt_spread(stats[impl], fmt_ms),
                         f"{faults[impl]:.0f}"]
                target = {HAND: FLOOR_TARGET, TORCH: TORCH_MLP_TARGET}.get(impl)
                ratio = cg_t / stats[impl].median
                if impl == CG:
                    cells += ["—", "—", "—"]
                elif target is None:
                    cells += [fmt_ratio(ratio), "—", "—"]
                else:
                    targets.append(Target.ratio(
                        f"(c) MLP {name}, {threads} thread(s): crossgrad / {label}", ratio,
                        target))
                    cells += [fmt_ratio(ratio), f"<= {target:.2f}x", verdict(ratio, target)]
                rows.append(cells)
    set_blas_threads(default)
    torch.set_num_threads(default)
    print(markdown_table(["dtype", "threads", "implementation", "ms per step",
                          "page faults / step", "crossgrad / this", "target", "verdict"], rows,
                         right=[False, True, False, True, True, True, True, True]))
    print("\nOne step = forward, loss, backward, both weight gradients (fresh each step); median "
          "[p10–p90] ms. Page faults: minor faults per step (fresh pages mapped for temporaries; "
          "a sign of a higher memory peak than the allocator keeps cached). "
          + agreement_note(checks))
    return targets


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def fmt_mib(kib_or_bytes: float, unit: str = "KiB") -> str:
    mib = kib_or_bytes / 1024 if unit == "KiB" else kib_or_bytes / 2**20
    return f"{mib:.1f} MiB"


class Guarded:
    """A case that records (instead of raising) a RecursionError, and keeps its last result."""

    def __init__(self, fn: Callable[[], Grads]) -> None:
        self.fn = fn
        self.error: str | None = None
        self.last: Grads | None = None

    def __call__(self) -> object:
        try:
            self.last = self.fn()
        except RecursionError as error:
            self.error = f"RecursionError: {error}"
            self.last = None
        return self.last


@dataclass
class GcMeter:
    """Counts the collections, and the time spent in them, during the calls it wraps."""

    calls: int = 0
    collections: list[int] = field(default_factory=lambda: [0, 0, 0])
    seconds: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    _start: float = 0.0

    def callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            generation = info["generation"]
            self.seconds[generation] += time.perf_counter() - self._start
            self.collections[generation] += 1

    def wrap(self, fn: Case) -> Case:
        def run() -> object:
            gc.callbacks.append(self.callback)
            try:
                return fn()
            finally:
                gc.callbacks.remove(self.callback)
                self.calls += 1
        return run

    def total(self) -> str:
        return fmt_time(sum(self.seconds) / max(self.calls, 1))

    def by_generation(self) -> str:
        calls = max(self.calls, 1)
        return ", ".join(f"gen{g} {self.collections[g] / calls:.3g}× "
                         f"{fmt_time(self.seconds[g] / calls)}" for g in range(3))


def gc_frozen(fn: Case) -> Case:
    """``fn`` with the collector on but every object alive before the call frozen (gc.freeze),
    so that collections traverse only what the call allocates: the remedy a service can apply
    once after its imports."""
    def run() -> object:
        gc.freeze()
        try:
            return fn()
        finally:
            gc.unfreeze()
    return run


def gc_disabled(fn: Case) -> Case:
    def run() -> object:
        gc.disable()
        try:
            return fn()
        finally:
            gc.enable()
    return run


def run_memory_probes(impls: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each implementation's 100k chain in a fresh interpreter: its peak-memory high-water mark."""
    found: dict[str, dict[str, Any]] = {}
    for impl in impls:
        command = [sys.executable, os.path.abspath(__file__), "--memory-probe", impl]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                                  check=False)
        except subprocess.TimeoutExpired:
            found[impl] = {"error": "timed out"}
            continue
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            found[impl] = {"error": f"probe exited with {done.returncode}: "
                                    f"{done.stderr.strip().splitlines()[-1:]}"}
            continue
        found[impl] = json.loads(lines[-1])
    return found


def memory_probe(impl: str) -> None:
    """Run in a fresh subprocess: peak RSS growth (and tracemalloc peak) of one 100k chain."""
    runs: dict[str, Callable[[int], Grads]] = {
        CG: lambda n: chain(cg, n), TORCH: lambda n: chain(torch, n), HAND: hand_chain,
        HIPS: lambda n: (hips_chain(n)(np.array(0.5, F32)),)}
    run = runs[impl]
    run(100)  # warm: lazy imports, first allocations
    gc.collect()
    report: dict[str, Any] = {"impl": impl, "recursion_limit": sys.getrecursionlimit()}
    with PeakRss() as peak:
        start = time.perf_counter()
        try:
            result = run(LONG_CHAIN)
            report["error"] = None
        except RecursionError as error:
            result = ()
            report["error"] = f"RecursionError: {error}"
        report["seconds"] = time.perf_counter() - start
    report["peak_rss_delta_kib"] = peak.delta_kib
    report["peak_rss_how"] = peak.how
    del result
    gc.collect()
    if impl in (CG, HAND) and report["error"] is None:
        tracemalloc.start()
        run(LONG_CHAIN)
        report["tracemalloc_peak_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    if impl == CG:
        # A recorded graph dropped without backward is freed by reference counting, node by
        # node: a crash or RecursionError here would end this probe with an error.
        _, y = chain_forward(cg, LONG_CHAIN)
        start = time.perf_counter()
        del y
        report["drop_seconds"] = time.perf_counter() - start
    print(json.dumps(report))


def sections_d_e(plan: Plan, do_d: bool, do_e: bool) -> list[Target]:
    targets: list[Target] = []
    n = LONG_CHAIN
    long_cases: dict[str, Guarded] = {CG: Guarded(lambda: chain(cg, n)),
                                      TORCH: Guarded(lambda: chain(torch, n))}
    if do_d:
        long_cases[HAND] = Guarded(lambda: hand_chain(n))
    meters = {name: GcMeter() for name in long_cases}
    timed: dict[str, Case] = {name: meters[name].wrap(case) for name, case in long_cases.items()}
    if do_e:
        timed[f"{CG} gc off"] = gc_disabled(long_cases[CG])
        timed[f"{CG} gc frozen"] = gc_frozen(long_cases[CG])
        if not plan.quick:
            timed[f"{TORCH} gc off"] = gc_disabled(long_cases[TORCH])
    gc.collect()
    rounds = 1 if plan.quick else 3
    long_stats = once(timed) if plan.quick else measure(timed, budget=0.0, warmup=1,
                                                        min_rounds=rounds, max_rounds=rounds)
    hips_stats: Stats | None = None
    hips_error: str | None = None
    if do_d and not plan.quick:
        hips = hips_chain(n)
        hips_case = Guarded(lambda: (hips(np.array(0.5, F32)),))
        hips_stats = measure({HIPS: hips_case}, budget=0.0, warmup=1, min_rounds=1,
                             max_rounds=1)[HIPS]
        hips_error = hips_case.error
        if hips_case.last is not None:
            long_cases[HIPS] = hips_case

    if do_d:
        print(f"\n### (d) {n:,}-op scalar chain, float32, forward + backward (gc enabled)\n")
        results = {k: g.last for k, g in long_cases.items() if g.last is not None}
        worst = check_agree("100k chain", results, rtol=1e-3, atol=1e-30) if HAND in results \
            else float("nan")
        probes = run_memory_probes([CG] if plan.quick else [CG, TORCH, HAND, HIPS])
        rows: list[list[str]] = []
        cg_t = long_stats[CG].median
        for impl in (CG, TORCH, HIPS, HAND):
            stats = hips_stats if impl == HIPS else long_stats.get(impl)
            probe = probes.get(impl, {})
            error = hips_error if impl == HIPS else long_cases[impl].error \
                if impl in long_cases else None
            error = error or probe.get("error")
            rss = probe.get("peak_rss_delta_kib")
            traced = probe.get("tracemalloc_peak_bytes")
            cells = [impl,
                     fmt_spread(stats, fmt_time) if stats else "not run",
                     fmt_us(stats.median / n) if stats else "—",
                     fmt_ratio(cg_t / stats.median) if stats and impl != CG else "—",
                     fmt_mib(rss) if rss is not None else "—",
                     fmt_mib(traced, "B") if traced is not None else "—",
                     f"{traced / n:.0f}" if traced is not None else "—",
                     error or ("none" if stats or probe else "—")]
            if impl == CG:
                ok = error is None and "drop_seconds" in probe
                cells += ["no RecursionError, no crash", "PASS" if ok else "MISS"]
                targets.append(Target(f"(d) {n:,}-op chain, crossgrad", error or "no error",
                                      "no RecursionError, no crash", ok))
            else:
                cells += ["—", "—"]
            rows.append(cells)
        print(markdown_table(
            ["implementation", "fwd+bwd [p10–p90]", "µs/op", "crossgrad / this",
             "peak RSS Δ", "tracemalloc peak", "bytes/op", "RecursionError",
             "target", "verdict"], rows, right=[False, *[True] * 6, False, False, False]))
        drop = probes.get(CG, {}).get("drop_seconds")
        how = probes.get(CG, {}).get("peak_rss_how", "?")
        failed = {k: v["error"] for k, v in probes.items() if v.get("error")}
        timing = ("one call each, no warm-up (--quick)" if plan.quick else
                  f"median [p10–p90] of {rounds} interleaved rounds after a warm-up call; "
                  f"{HIPS}: one call after a warm-up call, full mode only")
        print(f"\nTime: {timing}. Memory: one run per implementation in a fresh interpreter "
              f"({CG} only with --quick; peak RSS growth during the run, by {how}; tracemalloc "
              f"counts Python and NumPy allocations, so it is given for {CG} and {HAND} only; "
              f"bytes/op = tracemalloc peak / {n:,}). Recursion limit "
              f"{sys.getrecursionlimit()}. A {n:,}-node {CG} graph dropped without backward was "
              f"freed in {fmt_time(drop) if drop is not None else 'n/a (probe failed)'}. "
              f"Gradients agree (worst {worst:.1e}; by {n:,} ops the chain's float32 gradient "
              f"has underflowed to ~0, so this only checks that no implementation gives NaN or a "
              f"large value)." + (f" Probe failures: {failed}." if failed else ""))
    if do_e:
        targets += section_e(plan, long_stats, meters)
    return targets


def section_e(plan: Plan, long_stats: Mapping[str, Stats],
              long_meters: Mapping[str, GcMeter]) -> list[Target]:
    n = CHAIN_SIZES[-1]
    meters = {CG: GcMeter(), TORCH: GcMeter()}
    cases: dict[str, Case] = {}
    for impl, m in ((CG, cg), (TORCH, torch)):
        case: Case = functools.partial(chain, m, n)
        cases[impl] = meters[impl].wrap(case)
        cases[f"{impl} gc off"] = gc_disabled(case)
        if impl == CG:
            cases[f"{impl} gc frozen"] = gc_frozen(case)
    gc.collect()
    stats = measure(cases, budget=plan.budget(8.0), min_rounds=plan.min_rounds)
    print(f"\n### (e) Cost of Python's cyclic GC (process with torch, sympy, numpy imported: "
          f"{len(gc.get_objects()):,} objects tracked, thresholds {gc.get_threshold()})\n")
    rows: list[list[str]] = []
    for workload, source, meter_map in ((f"(b) chain N={n}", stats, meters),
                                        (f"(d) chain N={LONG_CHAIN:,}", long_stats, long_meters)):
        for impl in (CG, TORCH):
            on, off = source.get(impl), source.get(f"{impl} gc off")
            frozen = source.get(f"{impl} gc frozen")
            meter = meter_map.get(impl)
            rows.append([workload, impl, fmt_spread(on, fmt_time) if on else "—",
                         fmt_spread(off, fmt_time) if off else "not run (--quick)",
                         fmt_ratio(on.median / off.median) if on and off else "—",
                         meter.total() if meter else "—",
                         meter.by_generation() if meter else "—",
                         fmt_ratio(frozen.median / off.median) if frozen and off else "—"])
    print(markdown_table(["workload", "implementation", "gc enabled", "gc disabled",
                          "GC tax: enabled / disabled", "in GC per call",
                          "collections per call: count × time", "gc.freeze()d / disabled"],
                         rows, right=[False, False, True, True, True, True, False, True]))
    print("\nThe collector is disabled only inside the timed calls of the \"gc disabled\" "
          "cases (gc.disable() ... gc.enable()). Time in GC and collections: gc.callbacks "
          "during the enabled calls (warm-up included). Last column: collector enabled, but "
          "the objects alive before each call frozen with gc.freeze() (unfrozen after), so "
          "collections traverse only the tape, not the ~200k objects of torch and sympy.")
    return []


# --- the report -----------------------------------------------------------------------------------

def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _torch_blas() -> str:
    found = re.search(r"BLAS_INFO=([\w.-]+)", torch.__config__.show())
    return found.group(1) if found else "?"


def engine_revision() -> str:
    """The commit the engine was measured at, and whether engine/ had uncommitted changes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "engine"],
                               capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    changed = len(dirty.stdout.splitlines())
    return head.stdout.strip() + (f" + uncommitted changes to {changed} file(s) in engine/"
                                  if changed else "")


def load_note(when: str) -> str:
    """The load average, which says whether other processes competed for the CPUs."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return f"load average {when}: unknown"
    busy = one > 0.5 * (os.cpu_count() or 1)
    return (f"load average {when}: {one:.2f} (1 min), {five:.2f} (5 min)"
            + (" — other processes are using the CPUs; expect noisy numbers" if busy else ""))


def print_environment(plan: Plan, blas: BlasInfo) -> None:
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    print("## crossgrad engine benchmark" + (" (--quick)" if plan.quick else ""))
    print()
    print(markdown_table(["", "environment"], [
        ["crossgrad", f"{os.path.dirname(os.path.realpath(cg.__file__))} at "
                      f"{engine_revision()}"],
        ["Python", f"{platform.python_version()} ({platform.python_implementation()}), "
                   f"{platform.machine()}, {os.cpu_count()} CPUs"],
        ["NumPy", f"{np.__version__}; BLAS {blas.library} {blas.version}, kernel "
                  f"{blas.core}, {blas.threads} threads (via {blas.how})"],
        ["OPENBLAS_CORETYPE", coretype if coretype is not None else "unset"],
        ["PyTorch", f"{torch.__version__}; BLAS {_torch_blas()}, intra-op threads "
                    f"{torch.get_num_threads()} (set to NumPy's BLAS threads), "
                    f"capability {torch.backends.cpu.get_cpu_capability()}"],
        ["HIPS autograd", _version("autograd")],
        ["SymPy", sympy.__version__],
        ["gc", f"enabled={gc.isenabled()}, thresholds {gc.get_threshold()}, "
               f"{len(gc.get_objects()):,} tracked objects at start"],
        ["machine", load_note("at start")],
    ], right=[False, False]))


def print_summary(targets: Sequence[Target]) -> None:
    print("\n### Summary of targets\n")
    rows = [[t.what, t.measured, t.target, "PASS" if t.ok else "MISS"] for t in targets]
    print(markdown_table(["target", "measured", "target", "verdict"], rows,
                         right=[False, True, True, False]))


def profile_hotspots() -> None:
    """cProfile of crossgrad on the scalar chain and the float64 MLP (``--profile``)."""
    data_cases = mlp_cases(MlpData.make(np.float64))
    for label, fn, repeat in ((f"chain N={CHAIN_SIZES[-1]}", lambda: chain(cg, CHAIN_SIZES[-1]),
                               20), ("MLP float64", data_cases[CG], 20)):
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(repeat):
            fn()
        profiler.disable()
        print(f"\n#### profile: crossgrad, {label}, {repeat} calls (top 12 by own time)\n")
        print("```")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(12)
        print("```")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a ~30 s run with shorter budgets")
    parser.add_argument("--sections", default="abcdef", help="which sections to run (abcdef)")
    parser.add_argument("--profile", action="store_true",
                        help="also print cProfile hot spots of crossgrad")
    parser.add_argument("--memory-probe", choices=IMPLS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    blas = blas_info()
    torch.set_num_threads(blas.threads or os.cpu_count() or 1)
    if args.memory_probe:
        memory_probe(args.memory_probe)
        return
    plan = Plan(quick=True, scale=0.1, min_rounds=3) if args.quick else Plan(
        quick=False, scale=1.0, min_rounds=7)
    started = time.perf_counter()
    print_environment(plan, blas)
    targets: list[Target] = []
    if "a" in args.sections:
        targets += section_a(plan)
    if "b" in args.sections:
        targets += section_b(plan)
    if "c" in args.sections:
        targets += section_c(plan, blas)
    if "d" in args.sections or "e" in args.sections:
        targets += sections_d_e(plan, "d" in args.sections, "e" in args.sections)
    if "f" in args.sections:
        targets += section_f(plan)
    if targets:
        print_summary(targets)
    if args.profile:
        profile_hotspots()
    print(f"\nTotal benchmark time: {time.perf_counter() - started:.0f} s; "
          f"{load_note('at end')}.")


if __name__ == "__main__":
    main()
