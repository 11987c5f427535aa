"""The op table is the one place that knows an op.

A row added here, inside the test, is found everywhere: by the formula parser and the graph
checker, in both derivations (which agree), in the module function and the Tensor method the
generator writes for it, and on the wire (a graph round trip and ``ListOps``). The attribute kinds
the table defines are the ones the graph checker and the wire apply, and ``ListOps`` lists each
row's ``tensor_grad_fn``.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import crossgrad.engine as cg
import numpy as np
import pytest
import sympy
from crossgrad.engine import display, evaluation, formula, graph, ops, shapes
from crossgrad.engine.closed_form import Fused, Program
from crossgrad.engine.errors import InvalidArgument
from crossgrad.engine.graph import DEFAULT_LIMITS
from crossgrad.engine.symbolic import Plan, constants_of, derive
from crossgrad.server import serde
from crossgrad.v1 import crossgrad_pb2 as pb
from crossgrad.wire.errors import InvalidField

from tests.engine.test_surface import generator

F64 = cg.float64

# PyTorch's expm1: e^x - 1, whose derivative is the result plus one.
EXPM1 = ops.Op(name="expm1", elementwise=True,
               forward=np.expm1, vjps=(lambda g, out, x: g * (out + 1),),
               sympy=np.frompyfunc(lambda x: sympy.exp(x) - 1, 1, 1), grad_fn="Expm1Backward0",
               shape=shapes.broadcast, domain=((-3.0, 3.0),), floating=True, saves_output=True)


@pytest.fixture
def added(monkeypatch: pytest.MonkeyPatch) -> Iterator[ops.Op]:
    """The table with ``EXPM1`` as its last row."""
    monkeypatch.setitem(ops.TABLE, EXPM1.name, EXPM1)
    monkeypatch.setattr(ops, "OPS", (*ops.OPS, EXPM1))
    serde._ops.cache_clear()  # ListOps' answer, built once from the table
    yield EXPM1
    serde._ops.cache_clear()


def _generated(source: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """``namespace`` with what the generated ``source`` defines in it."""
    exec(compile(source, "<generated>", "exec"), namespace)
    return namespace


def _functions(table: tuple[ops.Op, ...]) -> dict[str, Any]:
    """The module functions the generator writes for ``table``."""
    engine = {"__name__": "crossgrad.engine.functional", "__package__": "crossgrad.engine"}
    return _generated(generator().functional(table), engine)


def _methods(table: tuple[ops.Op, ...]) -> Any:
    """A class with the Tensor methods the generator writes for ``table``."""
    source = "class Methods:\n" + generator().methods(table)
    return _generated(source, dict(vars(importlib.import_module("crossgrad.engine.tensor"))))[
        "Methods"]


def test_an_added_row_is_found_everywhere(added: ops.Op) -> None:
    at = 0.3
    expected_value, expected_gradient = math.expm1(2 * at), 2 * math.exp(2 * at)

    # The formula parser and the graph checker.
    parsed = formula.parse("expm1(x * 2)")
    assert [n.op for n in parsed.nodes if isinstance(n, graph.Operation)] == ["mul", "expm1"]
    with pytest.raises(InvalidArgument, match="expm1"):  # among the functions it names
        formula.parse("expm2(x)")
    valid = graph.validate(parsed, {"x": ((), F64)})
    value, gradients = evaluation.evaluate(valid, {"x": np.float64(at)})
    assert value == pytest.approx(expected_value) and gradients["x"] == pytest.approx(
        expected_gradient)

    # Both derivations: the closed form by computer algebra of the row's SymPy forward, fused and
    # op by op, against the numeric engine's VJP.
    plan = Plan.of(valid, ["x"])
    derivation = derive(plan)
    for evaluator in (Fused(plan, derivation), Program(plan)):
        result = evaluator([np.asarray(at)], constants_of(valid))
        assert result.gradients["x"] == pytest.approx(gradients["x"], rel=1e-12)
    assert display.render(plan, derivation, constants_of(valid)).text["x"] == "2*exp(2*x)"

    # The module function and the method the generator writes for the row.
    gen = generator()
    assert '"expm1"' in gen.init_exports(ops.OPS) and "expm1," in gen.init_imports(ops.OPS)
    for call in (_functions(ops.OPS)["expm1"], _methods(ops.OPS).expm1):
        x = cg.tensor(2 * at, dtype=F64, requires_grad=True)
        y = call(x)
        assert y.grad_fn.name() == "Expm1Backward0" and y.item() == pytest.approx(
            math.expm1(2 * at))
        y.backward()
        assert x.grad is not None and x.grad.item() == pytest.approx(math.exp(2 * at))

    # The wire: a graph's round trip, and ListOps.
    back = graph.validate(serde.graph_from_proto(serde.graph_to_proto(parsed),
                                                   DEFAULT_LIMITS), {"x": ((), F64)})
    assert evaluation.evaluate(back, {"x": np.float64(at)})[1]["x"] == pytest.approx(
        expected_gradient)
    (info,) = [o for o in serde.list_ops_to_proto().ops if o.name == "expm1"]
    assert (info.arity, info.grad_fn, list(info.attrs)) == (1, "Expm1Backward0", [])


def test_the_added_row_is_pytorchs(added: ops.Op, require_torch: ModuleType) -> None:
    torch = require_torch
    ours = _functions(ops.OPS)["expm1"](cg.tensor([0.5, -1.0], requires_grad=True))
    theirs = torch.expm1(torch.tensor([0.5, -1.0], requires_grad=True))
    assert repr(ours) == repr(theirs)


def test_list_ops_lists_each_rows_tensor_grad_fn() -> None:
    listed = {info.name: info.grad_fn for info in serde.list_ops_to_proto().ops}
    assert listed == {op.name: op.tensor_grad_fn for op in ops.OPS}


# --- attribute kinds -----------------------------------------------------------------------------

VALUES: tuple[Any, ...] = (
    None, 0, 3, -1, np.int64(2), 2.5, np.float32(1.5), float("inf"), True, np.bool_(False),
    (1, 2), [0, -1], (), (1.0,), (True,), tuple(range(ops.MAX_NDIM + 1)), "a", {"k": 1})


def _probe(kind: str) -> ops.Op:
    """A row with one attribute ``a`` of ``kind``."""
    return dataclasses.replace(ops.TABLE["clamp"], name="probe", attrs={"a": ops.Attr(kind)},
                               promoting=(), needs_one_of=())


@pytest.mark.parametrize("kind", ops.ATTR_KINDS)
def test_the_graph_checker_applies_the_kinds(kind: str) -> None:
    spec = ops.ATTR_KINDS[kind]
    for value in VALUES:
        try:
            expected = spec.normalize(value)
        except ops.IllTyped:
            with pytest.raises(InvalidArgument, match=spec.text):
                graph.normalize_attrs(_probe(kind), {"a": value})
            continue
        normalized = graph.normalize_attrs(_probe(kind), {"a": value})["a"]
        assert normalized == expected and type(normalized) is type(expected), (kind, value)


@pytest.mark.parametrize("kind", ops.ATTR_KINDS)
def test_the_wire_takes_each_kind_in_its_fields(kind: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ops.TABLE, "probe", _probe(kind))
    sent = {"number": pb.AttrValue(number=1.0), "integer": pb.AttrValue(integer=1),
            "integers": pb.AttrValue(integers=pb.IntList(values=[1])),
            "flag": pb.AttrValue(flag=True)}
    for field, value in sent.items():
        message = pb.Graph(output="p", nodes=[
            pb.Node(id="x", leaf="x"),
            pb.Node(id="p", op=pb.Operation(op="probe", inputs=["x"], attrs={"a": value}))])
        try:
            serde.graph_from_proto(message, DEFAULT_LIMITS)
        except InvalidField:
            assert field not in ops.ATTR_KINDS[kind].wire, (kind, field)
        else:
            assert field in ops.ATTR_KINDS[kind].wire, (kind, field)

