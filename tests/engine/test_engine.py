"""Engine behaviour that needs no PyTorch to check: deep graphs, grad mode per thread, freeing."""

from __future__ import annotations

import gc
import sys
import threading
import warnings
import weakref
from typing import Any

import crossgrad.engine as cg
import numpy as np
import pytest


def test_a_100k_op_chain_backpropagates_without_recursion() -> None:
    x = cg.tensor(0.5, dtype=cg.float64, requires_grad=True)
    y = x
    n = 100_000
    for _ in range(n):
        y = y * 1.0001 + 0.0
    assert n > sys.getrecursionlimit()
    y.backward()
    assert x.grad is not None
    assert x.grad.item() == pytest.approx(1.0001**n, rel=1e-9)


def test_a_diamond_sums_gradients_from_every_path() -> None:
    x = cg.tensor(3.0, dtype=cg.float64, requires_grad=True)
    a = x * x          # 2x
    b = cg.sin(x)      # cos x
    (a * b + a).backward()
    # d/dx (x^2 sin x + x^2) = 2x sin x + x^2 cos x + 2x
    expected = 2 * 3 * np.sin(3) + 9 * np.cos(3) + 6
    assert x.grad is not None and x.grad.item() == pytest.approx(expected)


def test_no_grad_is_per_thread() -> None:
    # The server runs requests on many threads: one request's no_grad must not leak to another.
    inside = threading.Event()
    release = threading.Event()
    seen: list[bool] = []

    def holds_no_grad() -> None:
        with cg.no_grad():
            inside.set()
            release.wait(5)

    worker = threading.Thread(target=holds_no_grad)
    worker.start()
    inside.wait(5)
    x = cg.tensor(1.0, requires_grad=True)
    seen.append((x * 2).requires_grad)
    release.set()
    worker.join()
    assert seen == [True]


def test_no_grad_as_decorator_and_enable_grad_inside() -> None:
    x = cg.tensor(1.0, requires_grad=True)

    @cg.no_grad()
    def step() -> tuple[bool, bool]:
        with cg.enable_grad():
            tracked = (x * 2).requires_grad
        return (x * 2).requires_grad, tracked

    assert step() == (False, True)
    assert cg.is_grad_enabled()


def test_backward_frees_the_graph_it_walked() -> None:
    x = cg.tensor([1.0, 2.0], requires_grad=True)
    hidden = cg.sin(x)
    probe = weakref.ref(hidden)
    loss = (hidden * 3).sum()
    del hidden
    gc.collect()
    assert probe() is not None  # the graph holds it until backward frees the saved values
    loss.backward()
    assert probe() is None


def test_failed_backward_changes_no_grad() -> None:
    x = cg.tensor(2.0, requires_grad=True)
    y = x * 3
    y.backward()
    before = x.grad.item() if x.grad is not None else None
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        (y + cg.sin(x)).backward()  # the sin branch is fine, the freed mul is not
    assert x.grad is not None and x.grad.item() == before


def test_in_place_update_of_a_saved_leaf_is_refused_at_backward() -> None:
    w = cg.tensor(3.0, requires_grad=True)
    loss = w * w
    with cg.no_grad():
        w -= 0.1 * w
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_detach_shares_values_with_its_source() -> None:
    x = cg.tensor([1.0, 2.0], requires_grad=True)
    d = x.detach()
    d.add_(1.0)
    assert x.tolist() == [2.0, 3.0]


def test_autograd_grad_returns_without_accumulating() -> None:
    x = cg.tensor(2.0, requires_grad=True)
    (dx,) = cg.autograd.grad(x**3, x)
    assert dx is not None and dx.item() == pytest.approx(12.0)
    assert x.grad is None


@pytest.mark.parametrize("make", [lambda x: x.sqrt(), lambda x: 1 / x, lambda x: x.log()],
                         ids=["sqrt", "reciprocal", "log"])
def test_backward_at_a_kink_warns_nothing(make: Any) -> None:
    # PyTorch's gradient at x = 0 is inf (or nan) without a warning; NumPy's would warn.
    x = cg.tensor(0.0, requires_grad=True)
    with np.errstate(divide="ignore"):  # the forward's log(0): not backward's business
        y = make(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y.backward()
    assert x.grad is not None and not np.isfinite(x.grad.numpy())


def test_accumulating_opposite_infinities_warns_nothing() -> None:
    x = cg.tensor(0.0, requires_grad=True)
    x.sqrt().backward()  # +inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (-x.sqrt()).backward()  # -inf, accumulated: nan, as in PyTorch
    assert x.grad is not None and np.isnan(x.grad.numpy())
