"""The engine's Python surface, generated from the op table by ``scripts/generate_surface.py``.

The committed functions, methods and exports are what the generator writes from the table now
(as ``tests/test_proto.py`` checks the wire stubs), and every row is reachable as PyTorch spells
it: ``crossgrad.engine.<op>``, ``Tensor.<op>``, its operators and in-place method.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from types import ModuleType

import crossgrad.engine as cg
import pytest
from crossgrad.engine import functional, ops
from crossgrad.engine.tensor import Tensor

ROOT = Path(__file__).resolve().parents[2]


def generator() -> ModuleType:
    """``scripts/generate_surface.py`` as a module."""
    spec = importlib.util.spec_from_file_location("generate_surface",
                                                  ROOT / "scripts" / "generate_surface.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_surface_matches_a_fresh_generation() -> None:
    gen = generator()
    stale = [str(path.relative_to(ROOT)) for path in gen.stale(gen.generate())]
    assert not stale, (f"the generated surface is stale in {', '.join(stale)}; run: "
                       "python scripts/generate_surface.py, and commit the result")


@pytest.mark.parametrize("op", [op for op in ops.OPS if op.public], ids=lambda op: op.name)
def test_every_row_has_its_function_and_method(op: ops.Op) -> None:
    function = getattr(cg, op.name)
    assert function is getattr(functional, op.name) and op.name in cg.__all__
    attrs = list(op.attrs)
    assert list(inspect.signature(function).parameters) == [*op.operands, *attrs]
    if op.variadic:  # PyTorch's cat and stack are functions only
        assert not hasattr(Tensor, op.name)
        return
    method = getattr(Tensor, op.name)
    if op.method:
        parameters = list(inspect.signature(method).parameters)
        # The tensor is the ``input`` operand: x.where(condition, other), as in PyTorch.
        others = [name for name in op.operands if name != "input"]
        assert parameters[:op.arity] == ["self", *others]
        assert parameters[op.arity:] in (attrs, [a for a in attrs if op.attrs[a].required])
    if op.in_place:
        assert callable(getattr(Tensor, f"{op.name}_"))


@pytest.mark.parametrize("op", [op for op in ops.OPS if not op.public], ids=lambda op: op.name)
def test_rows_pytorch_has_no_function_for_stay_off_the_surface(op: ops.Op) -> None:
    # slice and alias are written by indexing; torch.slice and Tensor.alias do not exist.
    assert op.name not in cg.__all__ and not hasattr(functional, op.name)
    assert not hasattr(Tensor, op.name)


def _grad_fn(tensor: Tensor) -> str:
    node = tensor.grad_fn
    assert node is not None
    return node.name()


def test_operators_apply_their_ops() -> None:
    x = cg.tensor([1.0, 2.0], requires_grad=True)
    assert _grad_fn(x + 1) == "AddBackward0" and _grad_fn(1 - x) == "RsubBackward1"
    assert _grad_fn(2 ** x) == "PowBackward2" and _grad_fn(x @ x) == "DotBackward0"
    assert _grad_fn(-x) == "NegBackward0"
    y = x * 1
    y /= 2
    assert _grad_fn(y) == "DivBackward0"


def test_a_method_taking_sizes_needs_one() -> None:
    x = cg.ones(2, 3)
    for name in ("reshape", "permute"):
        with pytest.raises(TypeError, match=rf'^{name}\(\) missing 1 required positional'):
            getattr(x, name)()
