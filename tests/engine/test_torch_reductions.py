"""Differential scenarios of the reductions beyond sums (prod, amax, amin, max(), min(),
logsumexp, softmax, log_softmax, var, std, norm) against PyTorch, on the engine and the SDK: the
grad_fn names of each calling form, the conventions at ties, zeros, NaN and infinities (the sign
of each zero included), degenerate inputs and their warnings, integer inputs, PyTorch's errors,
and a softmax cross-entropy written by hand.

The harness is ``test_torch_differential``'s: each scenario runs on PyTorch, on crossgrad's engine
and on the SDK, whose session checks every gradient against its closed form (a disagreement
would fail the SDK's backward), and every recording must equal PyTorch's.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

import crossgrad.client as sdk
import crossgrad.engine as cg
import numpy as np
import pytest

from .test_torch_differential import (  # noqa: F401 (fixtures, found by name)
    Recorder,
    assert_same,
    record,
    sdk_server,
    sdk_session,
)

pytestmark = pytest.mark.torch

Scenario = Callable[[ModuleType, Recorder], None]


def _signs(rec: Recorder, label: str, t: Any) -> None:
    """The sign of each element, zeros included (-0.0 is -1): reprs alone print both as 0. A
    NaN's sign bit is the CPU's, not an op's convention: not compared."""
    if t is not None:
        rec.log(label, [None if math.isnan(v) else math.copysign(1.0, v)
                        for v in np.ravel(t.tolist())])


def _grads(lib: ModuleType, rec: Recorder, values: Any, form: Callable[[Any], Any],
           upstream: float = -1.0, dtype: str = "float32") -> None:
    """``form`` of a leaf holding ``values``; backward with ``upstream`` everywhere; the
    gradient and the sign of each of its elements."""
    x = lib.tensor(values, dtype=getattr(lib, dtype), requires_grad=True)
    y = rec.call("y", lambda: form(x))
    if y is None:
        return
    rec.call("backward", lambda: y.backward(lib.ones_like(y) * upstream))
    rec.log("x.grad", x.grad)
    _signs(rec, "signs of x.grad", x.grad)


# --- grad_fn names of each calling form ------------------------------------------------------

NAMED_FORMS: list[tuple[str, Callable[[ModuleType, Any], Any], str]] = [
    ("x.prod()", lambda lib, x: x.prod(), "ProdBackward0"),
    ("x.prod(1)", lambda lib, x: x.prod(1), "ProdBackward1"),
    ("lib.prod(x, -1, keepdim=True)", lambda lib, x: lib.prod(x, -1, keepdim=True),
     "ProdBackward1"),
    ("x.amax()", lambda lib, x: x.amax(), "AmaxBackward0"),
    ("x.amax(1)", lambda lib, x: x.amax(1), "AmaxBackward0"),
    ("x.amax((0, 1))", lambda lib, x: x.amax((0, 1)), "AmaxBackward0"),
    ("lib.amin(x, 0, True)", lambda lib, x: lib.amin(x, 0, True), "AminBackward0"),
    ("x.max()", lambda lib, x: x.max(), "MaxBackward1"),
    ("lib.min(x)", lambda lib, x: lib.min(x), "MinBackward1"),
    ("x.logsumexp(1)", lambda lib, x: x.logsumexp(1), "LogsumexpBackward0"),
    ("lib.logsumexp(x, (0, 1))", lambda lib, x: lib.logsumexp(x, (0, 1)), "LogsumexpBackward0"),
    ("x.softmax(1)", lambda lib, x: x.softmax(1), "SoftmaxBackward0"),
    ("lib.softmax(x, dim=0)", lambda lib, x: lib.softmax(x, dim=0), "SoftmaxBackward0"),
    ("x.log_softmax(-1)", lambda lib, x: x.log_softmax(-1), "LogSoftmaxBackward0"),
    ("x.var()", lambda lib, x: x.var(), "VarBackward0"),
    ("x.var(1, False)", lambda lib, x: x.var(1, False), "VarBackward0"),
    ("lib.var(x, dim=None, correction=0)", lambda lib, x: lib.var(x, dim=None, correction=0),
     "VarBackward0"),
    ("x.std(0, keepdim=True)", lambda lib, x: x.std(0, keepdim=True), "StdBackward0"),
    ("x.norm()", lambda lib, x: x.norm(), "LinalgVectorNormBackward0"),
    ("lib.norm(x)", lambda lib, x: lib.norm(x), "LinalgVectorNormBackward0"),
    ("x.norm(2, 1)", lambda lib, x: x.norm(2, 1), "LinalgVectorNormBackward0"),
    # "fro", PyTorch's default order, is the same 2-norm.
    ("x.norm('fro')", lambda lib, x: x.norm("fro"), "LinalgVectorNormBackward0"),
    ("lib.norm(x, p='fro', dim=1)", lambda lib, x: lib.norm(x, p="fro", dim=1),
     "LinalgVectorNormBackward0"),
    ("x.norm(dim=(0, 1), keepdim=True)", lambda lib, x: x.norm(dim=(0, 1), keepdim=True),
     "LinalgVectorNormBackward0"),
]


@pytest.mark.parametrize(("text", "form", "name"), NAMED_FORMS, ids=[f[0] for f in NAMED_FORMS])
def test_grad_fn_names(require_torch: ModuleType, text: str,
                       form: Callable[[ModuleType, Any], Any], name: str) -> None:
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        x = lib.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], requires_grad=True)
        rec.log(text, form(lib, x))

    entry = record(cg, scenario)[0]
    assert entry.kind == "tensor" and entry.data["grad_fn"] == name, entry
    assert_same(require_torch, scenario)


# --- conventions: ties, zeros, NaN, infinities, and the sign of each zero ---------------------

CONVENTIONS: dict[str, Scenario] = {
    # Ties share the gradient evenly; amax's backward multiplies (-0.0 elsewhere under a
    # negative gradient), max()'s selects (+0.0 elsewhere).
    "amax tie": lambda lib, rec: _grads(lib, rec, [1.0, 3.0, 3.0, 2.0], lambda x: x.amax()),
    "amax tie along dim": lambda lib, rec: _grads(
        lib, rec, [[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], lambda x: x.amax(1, keepdim=True)),
    "amin tie": lambda lib, rec: _grads(lib, rec, [0.0, 0.0, 1.0], lambda x: x.amin(0)),
    "max() tie": lambda lib, rec: _grads(lib, rec, [1.0, 3.0, 3.0, 2.0], lambda x: x.max()),
    "min() tie, positive upstream": lambda lib, rec: _grads(
        lib, rec, [[0.0, 1.0], [0.0, 0.0]], lambda x: x.min(), upstream=2.0),
    # At a NaN: max() gives the gradient to the NaNs; amax's slice gets NaN everywhere.
    "max() at nan": lambda lib, rec: _grads(
        lib, rec, [1.0, math.nan, 3.0, math.nan], lambda x: x.max()),
    "amax at nan": lambda lib, rec: _grads(
        lib, rec, [[1.0, math.nan, 3.0], [1.0, 2.0, 3.0]], lambda x: x.amax(1)),
    "max() at inf": lambda lib, rec: _grads(lib, rec, [math.inf, math.inf, 3.0],
                                            lambda x: x.max()),
    # prod at zeros: the products of the others, exactly; a total with two zeros gives zeros.
    "prod one zero": lambda lib, rec: _grads(lib, rec, [2.0, 0.0, 3.0], lambda x: x.prod()),
    "prod two zeros": lambda lib, rec: _grads(lib, rec, [2.0, 0.0, 0.0], lambda x: x.prod()),
    "prod -0.0": lambda lib, rec: _grads(lib, rec, [2.0, -0.0, 3.0], lambda x: x.prod()),
    "prod no zero": lambda lib, rec: _grads(lib, rec, [2.0, -1.0, 3.0], lambda x: x.prod()),
    "prod along dim with zeros": lambda lib, rec: _grads(
        lib, rec, [[2.0, 0.0, 3.0], [0.0, 0.0, 1.0], [1.0, 2.0, 3.0]], lambda x: x.prod(1)),
    "prod 0-d": lambda lib, rec: _grads(lib, rec, 2.0, lambda x: x.prod(0)),
    # softmax and log_softmax at -inf; logsumexp at -inf, all -inf and +inf.
    "softmax at -inf": lambda lib, rec: _grads(
        lib, rec, [0.0, -math.inf, 1.0],
        lambda x: (x.softmax(0) * lib.tensor([1.0, -5.0, 2.0])).sum()),
    "softmax at -inf, uniform upstream": lambda lib, rec: _grads(
        lib, rec, [0.0, -math.inf, 1.0], lambda x: x.softmax(0)),
    "log_softmax at -inf": lambda lib, rec: _grads(
        lib, rec, [0.0, -math.inf, 1.0], lambda x: x.log_softmax(0)),
    "softmax 0-d": lambda lib, rec: _grads(lib, rec, 2.0, lambda x: x.softmax(0)),
    "logsumexp at -inf": lambda lib, rec: _grads(lib, rec, [0.0, -math.inf, 1.0],
                                                 lambda x: x.logsumexp(0)),
    "logsumexp all -inf": lambda lib, rec: _grads(lib, rec, [-math.inf, -math.inf],
                                                  lambda x: x.logsumexp(0)),
    "logsumexp at +inf": lambda lib, rec: _grads(lib, rec, [math.inf, 1.0],
                                                 lambda x: x.logsumexp(0)),
    # Large inputs: the max-shifted forwards neither overflow float32 nor lose the gradient.
    "logsumexp at ~80": lambda lib, rec: _grads(lib, rec, [[80.0, 81.0, 79.5], [88.0, 90.0, 3.0]],
                                                lambda x: x.logsumexp(1)),
    "softmax at ~80": lambda lib, rec: _grads(
        lib, rec, [80.0, 81.0, 79.5, 95.0],
        lambda x: (x.softmax(0) * lib.tensor([0.0, 1.0, 2.0, 3.0])).sum()),
    "log_softmax at ~80": lambda lib, rec: _grads(
        lib, rec, [[80.0, 81.0], [200.0, -100.0]],
        lambda x: (x.log_softmax(1) * lib.tensor([[1.0, 0.0], [0.0, 1.0]])).sum()),
    # var and std: one element (nan and PyTorch's warning), no degrees of freedom left, a
    # constant slice (std' masked to 0), the corrections.
    "var of one element": lambda lib, rec: _grads(lib, rec, [2.0], lambda x: x.var()),
    "std of one element": lambda lib, rec: _grads(lib, rec, [2.0], lambda x: x.std()),
    "var of a 0-d tensor": lambda lib, rec: _grads(lib, rec, 2.0, lambda x: x.var()),
    "var along a dim of one": lambda lib, rec: _grads(lib, rec, [[2.0, 3.0]],
                                                      lambda x: x.var(0)),
    "var correction past n": lambda lib, rec: _grads(lib, rec, [2.0, 3.0, 5.0],
                                                     lambda x: x.var(correction=3)),
    "var correction past n along dim": lambda lib, rec: _grads(
        lib, rec, [[1.0, 2.0, 4.0]], lambda x: x.var(1, correction=5)),
    "std of a constant": lambda lib, rec: _grads(lib, rec, [[0.1, 0.1], [0.1, 0.1]],
                                                 lambda x: x.std(0), dtype="float64"),
    "var unbiased=False": lambda lib, rec: _grads(lib, rec, [1.0, 2.0, 4.0],
                                                  lambda x: x.var(unbiased=False)),
    "var(0, False, True)": lambda lib, rec: _grads(lib, rec, [[1.0, 2.0], [4.0, 8.0]],
                                                   lambda x: x.var(0, False, True)),
    "std correction=0.5": lambda lib, rec: _grads(lib, rec, [1.0, 2.0, 4.0],
                                                  lambda x: x.std(correction=0.5)),
    # norm at 0: gradient 0 (PyTorch's backward masks it), -0.0 under a negative gradient.
    "norm at 0": lambda lib, rec: _grads(lib, rec, [0.0, -0.0], lambda x: x.norm()),
    "norm at 0 along dim": lambda lib, rec: _grads(lib, rec, [[0.0, 0.0], [3.0, 4.0]],
                                                   lambda x: x.norm(dim=1)),
    "norm of one element": lambda lib, rec: _grads(lib, rec, [[-3e-30], [0.0]],
                                                   lambda x: x.norm(dim=1)),
    "norm squared by hand at 0": lambda lib, rec: _grads(
        lib, rec, [0.0, 0.0], lambda x: lib.sqrt((x * x).sum()) ** 2),
    "norm by hand at 0": lambda lib, rec: _grads(lib, rec, [0.0, 0.0],
                                                 lambda x: lib.sqrt((x * x).sum())),
}


@pytest.mark.parametrize("name", list(CONVENTIONS))
def test_conventions(require_torch: ModuleType, name: str) -> None:
    assert_same(require_torch, CONVENTIONS[name])


# --- integer inputs, PyTorch's errors --------------------------------------------------------

CALLS: dict[str, Callable[[ModuleType], Any]] = {
    "prod of int64": lambda lib: lib.tensor([[1, 2], [3, 4]]).prod(),
    "softmax of int64, last dim": lambda lib: lib.tensor([[1, 2], [3, 4]]).softmax(1),
    "softmax of int64, first dim": lambda lib: lib.tensor([[1, 2], [3, 4]]).softmax(0),
    "log_softmax of int64": lambda lib: lib.tensor([1, 2]).log_softmax(-1),
    # PyTorch's var(unbiased) overload: a bool first is unbiased, not a dim.
    "x.var(False)": lambda lib: lib.tensor([[1.0, 2.0], [3.0, 5.0]]).var(False),
    "torch.std(x, True)": lambda lib: lib.std(lib.tensor([1.0, 2.0, 4.0]), True),
    "prod of bool": lambda lib: lib.tensor([True, False]).prod(),
    "sum of bool": lambda lib: lib.tensor([[True, False], [True, True]]).sum(0),
    "sum of bool, then a float": lambda lib: lib.tensor([True, True]).sum() * 1.5,
    "prod of int64 along dim": lambda lib: lib.tensor([[1, 2], [3, 4]]).prod(0),
    "amax of int64": lambda lib: lib.tensor([[1, 5], [3, 4]]).amax(1),
    "max of bool": lambda lib: lib.tensor([True, False]).max(),
    "min of int64": lambda lib: lib.tensor([3, -2]).min(),
    "logsumexp of int64": lambda lib: lib.tensor([1, 2]).logsumexp(0),
    "var of int64": lambda lib: lib.tensor([1, 2]).var(),
    "std of int64": lambda lib: lib.tensor([1, 2]).std(0),
    "norm of int64": lambda lib: lib.tensor([3, 4]).norm(),
    "amax out of range": lambda lib: lib.ones(2, 3).amax(2),
    "amax repeated dims": lambda lib: lib.ones(2, 3).amax((0, -2)),
    "amax of nothing": lambda lib: lib.ones(0).amax(),
    "max of nothing": lambda lib: lib.ones(0).max(),
    "amax over an empty dim": lambda lib: lib.ones(2, 0).amax(1),
    "amax along the other dim": lambda lib: lib.ones(2, 0).amax(0),
    "prod out of range": lambda lib: lib.ones(2, 3).prod(-3),
    "prod of nothing": lambda lib: lib.ones(0).prod(),
    "softmax out of range": lambda lib: lib.ones(2, 3).softmax(2),
    "softmax of 0-d along 1": lambda lib: lib.ones(()).softmax(1),
    "softmax of nothing": lambda lib: lib.ones(0).softmax(0),
    "logsumexp out of range": lambda lib: lib.ones(2, 3).logsumexp(3),
    "logsumexp repeated dims": lambda lib: lib.ones(2, 3).logsumexp((1, 1)),
    "logsumexp of nothing": lambda lib: lib.ones(0).logsumexp(0),
    "var out of range": lambda lib: lib.ones(2, 3).var(2),
    "std repeated dims": lambda lib: lib.ones(2, 3).std((1, -1)),
    "norm out of range": lambda lib: lib.ones(2, 3).norm(dim=2),
    "norm repeated dims": lambda lib: lib.ones(2, 3).norm(dim=(1, -1)),
    "norm over three dims without p": lambda lib: lib.ones(2, 2, 2).norm(dim=(0, 1, 2)),
    "norm over three dims with p=2": lambda lib: lib.ones(2, 2, 2).norm(2, (0, 1, 2)),
    "norm over three dims with p='fro'": lambda lib: lib.ones(2, 2, 2).norm("fro", (0, 1, 2)),
    "norm of nothing": lambda lib: lib.ones(0).norm(),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_calls(require_torch: ModuleType, name: str) -> None:
    assert_same(require_torch, lambda lib, rec: rec.call(name, lambda: CALLS[name](lib)))


@pytest.mark.parametrize("lib", [cg, pytest.param("sdk", id="sdk")])
def test_what_is_refused_beyond_pytorch(lib: Any) -> None:
    # What crossgrad does not take, refused clearly: a norm other than the 2-norm, max(x, dim)
    # (PyTorch's (values, indices) form).
    import crossgrad.client as sdk

    lib = sdk if lib == "sdk" else lib
    x = lib.ones(2, 3)
    with pytest.raises(RuntimeError, match=r"norm: only the 2-norm is supported .* got p=3"):
        x.norm(3)
    with pytest.raises(RuntimeError, match=r"only the 2-norm is supported .* got p='nuc'"):
        x.norm("nuc")
    with pytest.raises(TypeError):
        x.max(0)
    with pytest.raises(TypeError, match="argument 'dim' must be int, not NoneType"):
        x.prod(dim=None)
    # A bool where a dim goes is refused, not taken as 0 (but var's and std's, see CALLS).
    for call in (lambda: x.sum(True), lambda: x.amax((0, True))):
        with pytest.raises(TypeError, match="argument 'dim' must be tuple of ints, not bool"):
            call()


# --- second backward, in-place changes of saved results --------------------------------------

FORMS: dict[str, Callable[[Any], Any]] = {
    "prod": lambda x: x.prod(), "prod(1)": lambda x: x.prod(1), "amax": lambda x: x.amax(0),
    "amin": lambda x: x.amin(), "max": lambda x: x.max(), "min": lambda x: x.min(),
    "logsumexp": lambda x: x.logsumexp(1), "softmax": lambda x: x.softmax(0),
    "log_softmax": lambda x: x.log_softmax(1), "var": lambda x: x.var(0),
    "std": lambda x: x.std(), "norm": lambda x: x.norm(dim=1),
}


@pytest.mark.parametrize("name", list(FORMS))
def test_second_backward_and_saved_results(require_torch: ModuleType, name: str) -> None:
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        x = lib.tensor([[0.5, 1.0], [1.5, 2.0]], requires_grad=True)
        y = FORMS[name](x).sum()
        rec.call("first backward", lambda: y.backward())
        rec.call("second backward", lambda: y.backward())
        rec.log("x.grad", x.grad)
        z = FORMS[name](x * 1)
        rec.call("change the result in place", lambda: z.mul_(2))
        rec.call("backward through it", lambda: z.sum().backward())

    assert_same(require_torch, scenario)


# --- composites --------------------------------------------------------------------------------

def _cross_entropy(lib: ModuleType, rec: Recorder, dtype: str) -> None:
    """A softmax cross-entropy written by hand: -(log_softmax(z, 1) * onehot).sum() / n, over a
    linear layer, trained three SGD steps."""
    rng = np.random.default_rng(7)
    kind = getattr(lib, dtype)
    inputs = lib.tensor(rng.uniform(-2, 2, (5, 4)), dtype=kind)
    onehot = lib.tensor(np.eye(3)[[0, 2, 1, 2, 0]], dtype=kind)
    w = lib.tensor(rng.uniform(-1, 1, (4, 3)), dtype=kind, requires_grad=True)
    b = lib.tensor(rng.uniform(-1, 1, (3,)), dtype=kind, requires_grad=True)
    for step in range(3):
        z = inputs @ w + b
        loss = -(lib.log_softmax(z, dim=1) * onehot).sum() / 5
        rec.log(f"loss {step}", loss)
        rec.call(f"backward {step}", loss.backward)
        rec.log(f"w.grad {step}", w.grad)
        rec.log(f"b.grad {step}", b.grad)
        with lib.no_grad():
            w -= 0.5 * w.grad
            b -= 0.5 * b.grad
        w.grad = None
        b.grad = None
    probabilities = lib.softmax(inputs @ w + b, dim=-1)
    rec.log("probabilities", probabilities)
    rec.log("their row sums", probabilities.sum(1))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_cross_entropy_by_hand(require_torch: ModuleType, dtype: str) -> None:
    assert_same(require_torch, lambda lib, rec: _cross_entropy(lib, rec, dtype), reprs=False)


def test_a_norm_by_hand_at_0_in_the_sdk(require_torch: ModuleType) -> None:
    # Over the service: the gradient is PyTorch's NaN; the session's check report, read back
    # from the wire, is SINGULAR and gives the closed form's finite value.
    import crossgrad.client as sdk

    def scenario(lib: ModuleType, rec: Recorder) -> None:
        x = lib.tensor([0.0, 0.0, 0.0], requires_grad=True)
        rec.call("backward", lambda: (lib.sqrt((x * x).sum()) ** 2).backward())
        rec.log("x.grad", x.grad)

    assert_same(require_torch, scenario)
    x = sdk.tensor([0.0, 0.0, 0.0], requires_grad=True)
    (sdk.sqrt((x * x).sum()) ** 2).backward()
    report = sdk.last_check()
    assert report is not None and report.status.value == "SINGULAR"
    assert "the numeric gradient gives nan where the closed form gives 0.0" in report.reason
    x.grad = None
    x.norm().backward()  # the table's norm: 0 at 0, in both derivations
    assert x.grad.tolist() == [0.0, 0.0, 0.0]
    report = sdk.last_check()
    assert report is not None and report.status.value == "AGREE", report


@pytest.mark.parametrize("form", ["method", "function"])
@pytest.mark.parametrize("lib", [cg, sdk], ids=["engine", "sdk"])
def test_the_variance_warning_points_at_the_callers_line(lib: ModuleType, form: str) -> None:
    # As PyTorch's does: the user's line, whichever way they called var.
    x = lib.ones(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x.var() if form == "method" else lib.var(x)
    assert [(w.filename, "degrees of freedom" in str(w.message)) for w in caught] == [
        (__file__, True)]


@pytest.mark.parametrize("lib", [cg, sdk], ids=["engine", "sdk"])
def test_variance_of_equal_values(require_torch: ModuleType, lib: ModuleType) -> None:
    # Equal values have no spread: crossgrad's var is exactly 0 and std's gradient PyTorch's 0
    # at 0, in both dtypes, as the closed form has it. PyTorch's two passes often keep the
    # rounding of the mean instead, and a gradient from it: for three 0.2s in float64, for
    # eight equal float32 values (three of them it accumulates exactly).
    for dtype in ("float32", "float64"):
        x = lib.tensor([0.2, 0.2, 0.2], dtype=getattr(lib, dtype), requires_grad=True)
        std = x.std()
        std.backward()
        assert (std.item(), x.var().item(), x.grad.tolist()) == (0.0, 0.0, [0.0] * 3)
    torch = require_torch
    assert torch.tensor([0.2] * 3, dtype=torch.float32).std().item() == 0.0
    assert 0 < torch.tensor([0.2] * 3, dtype=torch.float64).std().item() < 1e-16
    assert 0 < torch.full((8,), 1.5601095, dtype=torch.float32).std().item() < 1e-6
    assert lib.full((8,), 1.5601095).std().item() == 0.0
