"""Differential tests of the shape ops and indexing: squeeze, unsqueeze, flatten, select, cat,
stack, and basic indexing (``x[0]``, ``x[1:3]``, ``x[:, 0]``, ``x[..., -1]``, ``x[None]``), which
runs as the chain of select/slice/unsqueeze/alias ops PyTorch decomposes it into. Each scenario
runs on PyTorch, the engine and the SDK (see ``test_torch_differential``); PyTorch is the oracle.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import crossgrad.client as sdk
import crossgrad.engine as cg
import numpy as np
import pytest
from crossgrad.engine.ops import TABLE

from .test_torch_differential import (  # noqa: F401 (fixtures)
    RUNNERS,
    Recorder,
    assert_same,
    record,
    sdk_server,
    sdk_session,
)

pytestmark = pytest.mark.torch

VALUES = np.arange(24, dtype=np.float64).reshape(4, 3, 2) / 10 - 1


def chain(t: Any) -> list[str]:
    """The grad_fn names from ``t`` back to its leaf, along each node's first input."""
    names = []
    node = t.grad_fn
    while node is not None and node.name() != "torch::autograd::AccumulateGrad":
        names.append(node.name())
        node = node.next_functions[0][0]
    return names


def _top(t: Any) -> str:
    # The tensor stays alive while its node is named: the SDK asks the server for the name of
    # a live tensor's node.
    return str(t.grad_fn.name())


# Each calling form with PyTorch 2.13's chain of backward nodes, pinned as well as compared.
FORMS: list[tuple[str, Callable[[Any], Any], list[str]]] = [
    ("x.squeeze()", lambda x: x[:, :1].squeeze(), ["SqueezeBackward0", "SliceBackward0"]),
    ("x.squeeze(1)", lambda x: x[:, :1].squeeze(1), ["SqueezeBackward1", "SliceBackward0"]),
    ("x.squeeze((1, 2))", lambda x: x[:, :1, :1].squeeze((1, 2)),
     ["SqueezeBackward2", "SliceBackward0", "SliceBackward0"]),
    ("x.unsqueeze(-1)", lambda x: x.unsqueeze(-1), ["UnsqueezeBackward0"]),
    ("x.flatten()", lambda x: x.flatten(), ["ViewBackward0"]),
    ("x.flatten(1)", lambda x: x.flatten(1), ["ViewBackward0"]),
    # A copy of a non-contiguous input: only the top node is compared (PyTorch has a
    # CloneBackward0 under it, which reshape's row does not model).
    ("x.transpose(0, 2).flatten().grad_fn", lambda x: _top(x.transpose(0, 2).flatten()), []),
    ("x.flatten(1, 1) is x", lambda x: x.flatten(1, 1) is x, []),
    ("x.select(1, -1)", lambda x: x.select(1, -1), ["SelectBackward0"]),
    ("x[0]", lambda x: x[0], ["SelectBackward0"]),
    ("x[-1]", lambda x: x[-1], ["SelectBackward0"]),
    ("x[1:3]", lambda x: x[1:3], ["SliceBackward0"]),
    ("x[:]", lambda x: x[:], ["SliceBackward0"]),
    ("x[:, 0]", lambda x: x[:, 0], ["SelectBackward0"]),
    ("x[..., -1]", lambda x: x[..., -1], ["SelectBackward0"]),
    ("x[::2]", lambda x: x[::2], ["SliceBackward0"]),
    ("x[None]", lambda x: x[None], ["UnsqueezeBackward0"]),
    ("x[1:3, 0]", lambda x: x[1:3, 0], ["SelectBackward0", "SliceBackward0"]),
    ("x[1, 1:3]", lambda x: x[1, 1:3], ["SliceBackward0", "SelectBackward0"]),
    ("x[0:4, 0]", lambda x: x[0:4, 0], ["SelectBackward0"]),  # spans dim 0: no slice
    ("x[-4:, 0]", lambda x: x[-4:, 0], ["SelectBackward0", "SliceBackward0"]),
    ("x[:, :]", lambda x: x[:, :], ["AliasBackward0"]),
    ("x[...]", lambda x: x[...], ["AliasBackward0"]),
    ("x[()]", lambda x: x[()], ["AliasBackward0"]),
    ("x[None, 0, None]", lambda x: x[None, 0, None],
     ["UnsqueezeBackward0", "SelectBackward0", "UnsqueezeBackward0"]),
    ("x[0, ..., None]", lambda x: x[0, ..., None], ["UnsqueezeBackward0", "SelectBackward0"]),
    ("x[:, None, 1]", lambda x: x[:, None, 1], ["SelectBackward0", "UnsqueezeBackward0"]),
    ("x[1:2:3, ::2, 1]", lambda x: x[1:2:3, ::2, 1],
     ["SelectBackward0", "SliceBackward0", "SliceBackward0"]),
    ("x[0, 0, 0]", lambda x: x[0, 0, 0], ["SelectBackward0"] * 3),
    ("x[5:10]", lambda x: x[5:10], ["SliceBackward0"]),
    ("x[3:1]", lambda x: x[3:1], ["SliceBackward0"]),
]


@pytest.mark.parametrize(("text", "form", "names"), FORMS, ids=[f[0] for f in FORMS])
def test_grad_fn_chains(require_torch: ModuleType, text: str, form: Callable[[Any], Any],
                        names: list[str]) -> None:
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        x = lib.tensor(VALUES, requires_grad=True)
        y = rec.call(text, lambda: form(x))
        if isinstance(y, lib.Tensor):
            rec.log("chain", chain(y))

    for lib in (require_torch, *RUNNERS.values()):
        entries = record(lib, scenario)
        found = entries[1].data if len(entries) > 2 else []
        assert found == names, (lib.__name__, entries)
    assert_same(require_torch, scenario)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gradients_through_indexing_land_in_their_slots(require_torch: ModuleType,
                                                        dtype: str) -> None:
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        x = lib.tensor(VALUES, dtype=getattr(lib, dtype), requires_grad=True)
        # Overlapping views: their gradients add up where they share elements.
        loss = ((x[0] * 2).sum() + (x[:, 1] ** 2).sum() + x[..., -1].exp().sum()
                + x[1:3, ::2].sin().sum() + x[None, -1, 0].sum() * 3
                + x[1].flatten().unsqueeze(0).squeeze().sum())
        rec.log("loss", loss)
        rec.call("backward", loss.backward)
        rec.log("x.grad", x.grad)

    assert_same(require_torch, scenario)


def test_indexing_a_non_leaf_and_backward_twice(require_torch: ModuleType) -> None:
    # The views save no values: a second backward works, as in PyTorch.
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        x = lib.tensor(VALUES, requires_grad=True)
        y = (x * 2)[1:, 0][..., None]
        z = y.sum()
        rec.call("backward", lambda: z.backward(retain_graph=False))
        rec.call("again", z.backward)
        rec.log("x.grad", x.grad)

    assert_same(require_torch, scenario)


ERRORS: list[tuple[str, Callable[[Any], Any]]] = [
    ("x[4]", lambda x: x[4]),
    ("x[-5]", lambda x: x[-5]),
    ("x[:, 3]", lambda x: x[:, 3]),
    ("x[0, 5]", lambda x: x[0, 5]),
    ("x[None, 0, 7]", lambda x: x[None, 0, 7]),
    ("x[..., 9]", lambda x: x[..., 9]),
    # PyTorch takes several ellipses, each standing for the dimensions no index takes; past the
    # last dimension it reads a size of 0 (NumPy refuses a second ellipsis).
    ("x[..., ...]", lambda x: x[..., ...]),
    ("x[..., None, ...]", lambda x: x[..., None, ...]),
    ("x[..., 0, ...]", lambda x: x[..., 0, ...]),
    ("x[0, ..., ..., 1]", lambda x: x[0, ..., ..., 1]),
    ("x[..., ..., 0]", lambda x: x[..., ..., 0]),
    ("x[..., 0, ..., :1]", lambda x: x[..., 0, ..., :1]),
    ("x[..., ..., 1:]", lambda x: x[..., ..., 1:]),
    ("x[None, ..., 1, ..., None]", lambda x: x[None, ..., 1, ..., None]),
    ("x[::0]", lambda x: x[::0]),
    ("x[::-1]", lambda x: x[::-1]),
    ("x[0, ::-2]", lambda x: x[0, ::-2]),
    ("x[0, 0, 0, 0]", lambda x: x[0, 0, 0, 0]),
    ("x[1.5]", lambda x: x[1.5]),
    ("x[0, 1.5]", lambda x: x[0, 1.5]),
    ("x[0:2.0]", lambda x: x[0:2.0]),
    ("0-d[0]", lambda x: x.sum()[0]),
    ("0-d[:]", lambda x: x.sum()[:]),
    ("0-d[0,]", lambda x: x.sum()[0,]),
    ("0-d[None]", lambda x: x.sum()[None]),
    ("0-d[...]", lambda x: x.sum()[...]),
    ("x.select(1, 3)", lambda x: x.select(1, 3)),
    ("x.select(-2, -4)", lambda x: x.select(-2, -4)),
    ("x.select(3, 0)", lambda x: x.select(3, 0)),
    ("0-d.select(0, 0)", lambda x: x.sum().select(0, 0)),
    ("x.squeeze(3)", lambda x: x.squeeze(3)),
    ("x.squeeze((0, 0))", lambda x: x.squeeze((0, 0))),
    ("x.squeeze(())", lambda x: x.squeeze(())),
    ("0-d.squeeze(0)", lambda x: x.sum().squeeze(0)),
    ("0-d.squeeze(1)", lambda x: x.sum().squeeze(1)),
    ("x.unsqueeze(4)", lambda x: x.unsqueeze(4)),
    ("x.unsqueeze(-5)", lambda x: x.unsqueeze(-5)),
    ("0-d.unsqueeze(-1)", lambda x: x.sum().unsqueeze(-1)),
    ("0-d.unsqueeze(1)", lambda x: x.sum().unsqueeze(1)),
    ("x.flatten(2, 0)", lambda x: x.flatten(2, 0)),
    ("x.flatten(0, 3)", lambda x: x.flatten(0, 3)),
    ("0-d.flatten()", lambda x: x.sum().flatten()),
    # Views of views: a column or a strided slice is not contiguous, so view() refuses it and
    # reshape() copies or aliases, as in PyTorch.
    ("x[:, 0].view(-1)", lambda x: x[:, 0].view(-1)),
    ("x[::2].view(-1)", lambda x: x[::2].view(-1)),
    ("x[1:3].view(-1)", lambda x: x[1:3].view(-1)),
    ("x[0].view(-1)", lambda x: x[0].view(-1)),
    ("x[..., 0].reshape(-1)", lambda x: x[..., 0].reshape(-1)),
    ("x[:, 1:].flatten()", lambda x: x[:, 1:].flatten()),
]


@pytest.mark.parametrize(("text", "form"), ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_and_edges_are_pytorchs(require_torch: ModuleType, text: str,
                                       form: Callable[[Any], Any]) -> None:
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        x = lib.tensor(VALUES, requires_grad=True)
        rec.call(text, lambda: form(x))

    assert_same(require_torch, scenario)


JOINS: list[tuple[str, Callable[[ModuleType, Any], Any]]] = [
    ("cat([x, x[1:]], 0)", lambda lib, x: lib.cat([x, x[1:]], 0)),
    ("cat((x, x, x), dim=-1)", lambda lib, x: lib.cat((x, x, x), dim=-1)),
    ("stack([x[0], x[1]], 1)", lambda lib, x: lib.stack([x[0], x[1]], 1)),
    ("stack 0-d", lambda lib, x: lib.stack([x.sum(), x[0, 0, 0]])),
    ("cat([])", lambda lib, x: lib.cat([])),
    ("stack([])", lambda lib, x: lib.stack([])),
    ("cat([x, 2])", lambda lib, x: lib.cat([x, 2])),
    ("cat(x)", lambda lib, x: lib.cat(x)),
    ("cat 0-d", lambda lib, x: lib.cat([x.sum(), x.sum()])),
    ("cat ranks", lambda lib, x: lib.cat([x, x[0]])),
    ("cat sizes", lambda lib, x: lib.cat([x, x[:, 1:]], -1)),
    ("cat sizes dim 1", lambda lib, x: lib.cat([x, x[:, :, :1]], 1)),
    ("cat dim", lambda lib, x: lib.cat([x, x], 3)),
    ("cat legacy empty", lambda lib, x: lib.cat([x, lib.ones(0), x])),
    ("stack sizes", lambda lib, x: lib.stack([x, x[1:]])),
    ("stack dim", lambda lib, x: lib.stack([x, x], -5)),
    ("cat f32, f64, int64", lambda lib, x: lib.cat([x[0], lib.ones(3, 2, dtype=lib.float64),
                                                    lib.tensor([[1, 2]])])),
]


@pytest.mark.parametrize(("text", "form"), JOINS, ids=[j[0] for j in JOINS])
def test_cat_and_stack_are_pytorchs(require_torch: ModuleType, text: str,
                                    form: Callable[[ModuleType, Any], Any]) -> None:
    # Values, dtype promotion, grad_fn, errors, and each input's stretch of the gradient.
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        x = lib.tensor(VALUES, requires_grad=True)
        out = rec.call(text, lambda: form(lib, x))
        if out is not None:
            rec.call("backward", lambda: (out * out).sum().backward())
            rec.log("x.grad", x.grad)
            rec.call("second backward through the join", lambda: out.sum().backward())
            rec.log("x.grad again", x.grad)

    assert_same(require_torch, scenario)


@pytest.mark.parametrize("lib", [cg, sdk], ids=["engine", "sdk"])
@pytest.mark.parametrize("key", [[0, 1], True, (0, [1]), np.array([0])],
                         ids=["list", "bool", "list-in-tuple", "array"])
def test_advanced_indexing_is_refused(lib: ModuleType, key: Any) -> None:
    x = lib.tensor(VALUES, requires_grad=True)
    with pytest.raises(NotImplementedError, match="advanced indexing"):
        x[key]


@pytest.mark.parametrize("lib", [cg, sdk], ids=["engine", "sdk"])
def test_index_assignment_is_refused(lib: ModuleType) -> None:
    x = lib.tensor(VALUES)
    with pytest.raises(NotImplementedError, match="index assignment"):
        x[0] = 1.0


@pytest.mark.skipif("log_softmax" not in TABLE, reason="needs the log_softmax row")
def test_softmax_cross_entropy_by_hand(require_torch: ModuleType) -> None:
    # -log_softmax(logits)[i, label_i], averaged: indexing picks each row's label.
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        logits = lib.tensor(VALUES.reshape(4, 6), requires_grad=True)
        labels = [2, 0, 5, 3]
        logp = lib.log_softmax(logits, dim=1)
        loss = -sum(logp[i, label] for i, label in enumerate(labels)) / len(labels)
        rec.log("loss", loss)
        rec.call("backward", loss.backward)
        rec.log("logits.grad", logits.grad)

    assert_same(require_torch, scenario)
